"""The pretrained encoder: a timm Swin transformer, by name or from a local weights file.

The source model is a whole timm Swin. Its ``patch_embed`` is the frozen *source embedder* e_s;
its ``layers`` + final ``norm`` form the encoder body f that the target model fine-tunes (a copy:
the source model itself is never changed, so one loaded copy serves every trial of a process).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from mona_tune.errors import MonaError

# Stochastic depth is switched off in every encoder: stage 1 differentiates through a simulated
# fine-tuning step, which must be a gradient of one deterministic function (timm's default for
# Swin is drop_path_rate=0.1 during fine-tuning; ORCA's Darcy runs keep the model's default).
DROP_PATH_RATE = 0.0

_NON_PERSISTENT = ("relative_position_index", "attn_mask")  # buffers timm rebuilds, never loads


def checkpointed(module: nn.Module, *inputs: Tensor) -> Tensor:
    """``module(*inputs)`` without keeping its activations: they are recomputed in the backward
    pass (activation checkpointing, non-reentrant, so ``torch.autograd.grad`` and the double
    backward of MoNA's second-order step work through it).

    The module's parameters enter as explicit inputs of the recomputed function. Inside
    ``torch.func.functional_call`` (stage 1 evaluates the encoder at θ'f = θf − α∇L) the module
    holds the substituted tensors only while the forward pass runs; a recomputation that read the
    module's attributes in the backward pass would use θf instead.
    """
    from torch.func import functional_call
    from torch.utils.checkpoint import checkpoint

    named = list(module.named_parameters())
    names, tensors = [n for n, _ in named], [t for _, t in named]

    def run(*args: Tensor) -> Tensor:
        params = dict(zip(names, args[len(inputs):]))
        return functional_call(module, params, args[:len(inputs)])

    return checkpoint(run, *inputs, *tensors, use_reentrant=False)


class SwinBody(nn.Module):
    """The encoder f: a Swin's stages and final norm, on channels-last patch tokens.

    ``(N, H', W', D) -> (N, h, w, D_out)``, exactly ``SwinTransformer.forward_features`` without
    the patch embedding. With ``grad_checkpointing`` each transformer block's activations are
    recomputed in the backward pass (:func:`checkpointed`), in both stages.
    """

    def __init__(self, layers: nn.Module, norm: nn.Module):
        super().__init__()
        self.layers = layers
        self.norm = norm
        self.grad_checkpointing = False

    def forward(self, tokens: Tensor) -> Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return self.norm(self.layers(tokens))
        x = tokens
        for stage in self.layers:  # timm's SwinTransformerStage.forward, block by block
            x = stage.downsample(x)
            for block in stage.blocks:
                x = checkpointed(block, x)
        return self.norm(x)


def is_swin(net: nn.Module) -> bool:
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    return isinstance(net, (SwinTransformer, SwinTransformerV2))


def create_timm_swin(name: str, weights: str | None = None) -> nn.Module:
    """``timm.create_model(name)``: hub weights when ``weights`` is None, else the local file."""
    import timm

    if not timm.is_model(name):
        raise MonaError(f"unknown timm model {name!r} (see timm.list_models('swin*'))")
    try:
        net = timm.create_model(name, pretrained=weights is None, drop_path_rate=DROP_PATH_RATE)
    except RuntimeError as e:  # e.g. an unknown pretrained tag
        raise MonaError(f"cannot create timm model {name!r}: {e}") from None
    except OSError as e:  # hub unreachable and nothing in the local hub cache
        raise MonaError(
            f"cannot get the pretrained weights of {name!r} ({type(e).__name__}); "
            "on an offline machine pass --weights PATH (a checkpoint or .safetensors file)"
        ) from None
    if not is_swin(net):
        raise MonaError(f"source model {name!r} is not a timm Swin transformer "
                        "(SwinTransformer or SwinTransformerV2); its body cannot take patch tokens")
    if weights is not None:
        load_weights(net, weights, name)
    return net


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


def load_weights(net: nn.Module, weights: str | Path, name: str) -> None:
    """Load a local weights file into ``net`` after a strict key and shape check."""
    path = Path(weights)
    sd = {k: v for k, v in read_state_dict(path).items()
          if not any(b in str(k) for b in _NON_PERSISTENT)}
    check_fit(sd, net.state_dict(), f"weights file {path} does not fit model {name}")
    net.load_state_dict(sd, strict=True)


def check_fit(found: dict, expected: dict, what: str) -> None:
    """Raise ``MonaError(what: ...)`` unless ``found`` has exactly the keys and shapes expected."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k}: file {tuple(getattr(found[k], 'shape', ()))} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and (not isinstance(found[k], Tensor) or found[k].shape != v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(str(i) for i in items[:3]) + (", ..." if len(items) > 3 else "")
            problems.append(f"{len(items)} {label} ({shown})")
    if problems:
        raise MonaError(f"{what}: " + "; ".join(problems))
