"""Swin checkpoints in the three layouts they ship in, mapped onto a timm Swin.

``timm``
    timm's own keys (``layers.N.downsample`` at the start of stage N, ``head.fc``).
``Microsoft``
    the original release (microsoft/Swin-Transformer): ``{"model": state_dict}`` with
    ``relative_position_index`` and ``attn_mask`` buffers, ``layers.N.downsample`` at the end of
    stage N and ``head``; timm's own ``checkpoint_filter_fn`` maps it.
``Hugging Face``
    ``transformers``' ``SwinModel`` / ``SwinForImageClassification`` as ``save_pretrained``
    writes it (``model.safetensors`` or ``pytorch_model.bin``, keys under ``swin.``), the
    directory or the file itself; mapped here (:func:`hf_to_timm`).

The classifier (``head.*``) is no part of the encoder: a checkpoint's head that does not fit the
model (other classes, or none) is dropped and the model keeps its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from mona_tune.errors import MonaError

TIMM, MICROSOFT, HUGGING_FACE = "timm", "Microsoft", "Hugging Face"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what save_pretrained writes


def random_weights_file(name: str, directory: Path | None = None) -> str:
    """timm's ``name`` with random weights as a ``.safetensors`` file, written once into
    ``directory`` (default: the cache): a paper-size model's time and memory without a hub."""
    import timm
    from safetensors.torch import save_file

    from mona_tune.cache import atomic_path, cache_dir

    if not timm.is_model(name):
        raise MonaError(f"--random-weights: {name!r} is not a timm model")
    path = (directory or cache_dir("random-weights")) / f"{name.replace('/', '_')}.safetensors"
    if not path.is_file():
        net = timm.create_model(name, pretrained=False)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    return str(path)


def read_state_dict(path: Path) -> dict:
    """A state dict from a ``.safetensors`` file or a torch checkpoint (``weights_only=True``).

    Common wrappers are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``) and a
    ``module.`` prefix (DataParallel) is removed.
    """
    if not path.is_file():
        raise MonaError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise MonaError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise MonaError(f"weights file {path} holds a {type(sd).__name__}, not a state dict")
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def read_swin_checkpoint(path: Path) -> tuple[dict, str]:
    """The state dict of a Swin checkpoint file, or of a ``save_pretrained`` directory, and its
    layout (:data:`TIMM`, :data:`MICROSOFT` or :data:`HUGGING_FACE`)."""
    if path.is_dir():
        path = _hf_weights_file(path)
    sd = read_state_dict(path)
    layout = swin_layout(sd)
    if layout is None:
        first = ", ".join(str(k) for k in list(sd)[:3]) + (", ..." if len(sd) > 3 else "")
        raise MonaError(f"--weights {path} is no Swin checkpoint in the timm, Microsoft or "
                        f"Hugging Face layout (its keys: {first or 'none'})")
    return sd, layout


def swin_layout(sd: dict) -> str | None:
    """Which layout the keys of ``sd`` are in (None: no Swin checkpoint).

    A downsample in stage 0 is the Microsoft layout: timm's filter tells the two apart the same
    way."""
    keys = {str(k).removeprefix("swin.") for k in sd}
    if "embeddings.patch_embeddings.projection.weight" in keys or any(
            k.startswith("encoder.layers.") for k in keys):
        return HUGGING_FACE
    if "layers.0.downsample.reduction.weight" in keys:
        return MICROSOFT
    if "patch_embed.proj.weight" in keys or any(k.startswith("layers.") for k in keys):
        return TIMM
    return None


def _hf_weights_file(folder: Path) -> Path:
    config = folder / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (ValueError, AttributeError):
            model_type = None
        if model_type not in (None, "swin"):
            raise MonaError(f"--weights {folder} holds a Hugging Face {model_type} model, not a "
                            "Swin (model_type swin)")
    for name in HF_FILES:
        if (folder / name).is_file():
            return folder / name
    raise MonaError(f"--weights {folder} is a directory without {' or '.join(HF_FILES)} "
                    "(a Swin directory is one written by save_pretrained)")


def onto_timm(sd: dict, layout: str, net: nn.Module, path: Path) -> dict:
    """``sd`` (read from ``path``) with timm's keys for ``net`` (a key that does not map keeps
    its name); the buffers timm rebuilds are dropped, and so is a head that does not fit."""
    if layout == HUGGING_FACE:
        sd = hf_to_timm(sd)
    sd = _timm_filter(sd, net, path)
    own = net.state_dict()
    head = [k for k in sd if k.startswith("head.")]
    if any(k not in own or getattr(sd[k], "shape", None) != own[k].shape for k in head):
        for k in head:
            del sd[k]
    sd.update({k: v for k, v in own.items() if k.startswith("head.") and k not in sd})
    return sd


def _timm_filter(sd: dict, net: nn.Module, path: Path) -> dict:
    """timm's ``checkpoint_filter_fn`` for ``net`` (it maps the Microsoft layout, drops the
    buffers and resizes patch embeddings and bias tables of another size). A bias table of a
    block ``net`` lacks would stop it: such keys pass around it, unmapped."""
    from timm.models import swin_transformer, swin_transformer_v2

    v2 = isinstance(net, swin_transformer_v2.SwinTransformerV2)
    filter_fn = (swin_transformer_v2 if v2 else swin_transformer).checkpoint_filter_fn
    modules = dict(net.named_modules())
    table = ".relative_position_bias_table"
    stray = {k: v for k, v in sd.items()
             if k.endswith(table) and k.removesuffix(table) not in modules}
    try:
        out = filter_fn({k: v for k, v in sd.items() if k not in stray}, net)
    except Exception as e:  # noqa: BLE001 - a tensor timm cannot resize: one line
        raise MonaError(f"--weights {path}: timm cannot map it onto the model: "
                        f"{type(e).__name__}: {e}") from None
    return {**out, **stray}


# Hugging Face's names (after ``swin.``) -> timm's; \1 \2 are stage and block. Both the names
# save_pretrained writes and those of transformers 5's modules (q_proj, o_proj, ...) map.
_BLOCK = r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_HF_NAMES = [(re.compile(p), r) for p, r in [
    (r"embeddings\.patch_embeddings\.projection\.(\w+)", r"patch_embed.proj.\1"),
    (r"embeddings\.norm\.(\w+)", r"patch_embed.norm.\1"),
    (_BLOCK + r"layernorm_before\.(\w+)", r"layers.\1.blocks.\2.norm1.\3"),
    (_BLOCK + r"layernorm_after\.(\w+)", r"layers.\1.blocks.\2.norm2.\3"),
    (_BLOCK + r"attention\.self\.(relative_position_\w+)", r"layers.\1.blocks.\2.attn.\3"),
    (_BLOCK + r"attention\.relative_position_bias\.(relative_position_\w+)",
     r"layers.\1.blocks.\2.attn.\3"),
    (_BLOCK + r"attention\.(?:output\.dense|o_proj)\.(\w+)", r"layers.\1.blocks.\2.attn.proj.\3"),
    (_BLOCK + r"(?:intermediate\.dense|mlp\.fc1)\.(\w+)", r"layers.\1.blocks.\2.mlp.fc1.\3"),
    (_BLOCK + r"(?:output\.dense|mlp\.fc2)\.(\w+)", r"layers.\1.blocks.\2.mlp.fc2.\3"),
    (r"layernorm\.(\w+)", r"norm.\1"),
    (r"classifier\.(\w+)", r"head.fc.\1"),
]]
_HF_QKV = re.compile(_BLOCK + r"attention\.(?:self\.)?(query|key|value|q_proj|k_proj|v_proj)"
                              r"\.(\w+)")
_HF_DOWNSAMPLE = re.compile(r"encoder\.layers\.(\d+)\.downsample\.(\w+\.\w+)")


def hf_to_timm(sd: dict) -> dict:
    """Hugging Face Swin keys -> timm's: query, key and value concatenate into ``qkv``; the
    downsample at the end of stage N is timm's at the start of stage N+1. A key that does not
    map keeps its name, and so does a query, key or value whose other two are missing."""
    out, qkv = {}, {}
    for key, v in sd.items():
        k = key.removeprefix("swin.")
        m = _HF_QKV.fullmatch(k)
        if m:
            part = "qkv".index(m[3][0])
            qkv.setdefault(f"layers.{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}", {})[part] = (key, v)
            continue
        m = _HF_DOWNSAMPLE.fullmatch(k)
        if m:
            out[f"layers.{int(m[1]) + 1}.downsample.{m[2]}"] = v
            continue
        for pattern, name in _HF_NAMES:
            m = pattern.fullmatch(k)
            if m:
                out[m.expand(name)] = v
                break
        else:
            out[key] = v
    for name, parts in qkv.items():
        if len(parts) == 3:
            out[name] = torch.cat([parts[i][1] for i in range(3)])
        else:
            out.update(parts.values())
    return out
