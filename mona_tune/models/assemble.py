"""The target model ``h(f(e(x)))``: a new embedder, the pretrained encoder body, a new predictor."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mona_tune.models.embedders import Embedder1D, Embedder2D
from mona_tune.models.encoder import SwinBody
from mona_tune.errors import MonaError
from mona_tune.models.predictors import ClassificationHead, DenseHead, SequenceHead
from mona_tune.models.source import SourceModel


class TargetModel(nn.Module):
    """``predictor(encoder(embedder(x)))``; the three parts are the parameter groups of MoNA."""

    def __init__(self, embedder: nn.Module, encoder: SwinBody, predictor: nn.Module):
        super().__init__()
        self.embedder = embedder
        self.encoder = encoder
        self.predictor = predictor

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(self.encoder(self.embedder(x)))


def pool(tokens: Tensor) -> Tensor:
    """Mean over the token grid, ``(N, h, w, D) -> (N, D)``: features of L_outer and the probe."""
    return tokens.mean(dim=(1, 2))


def build_target_model(source: SourceModel, in_channels: int, in_shape: tuple[int, ...],
                       output: str, out_channels: int, out_shape: tuple[int, ...] = (),
                       random_encoder: bool = False) -> TargetModel:
    """Assemble the target model around a copy of ``source``'s encoder body.

    ``in_shape`` of length 2 gets the 2D embedder, of length 1 the 1D embedder on the source's
    token grid for that length (the Swin's patch grid, or a row of tokens for a language model);
    ``output`` is ``"dense"`` (a field of ``out_channels`` channels and spatial ``out_shape``) or
    ``"classes"`` (``out_channels`` logits). ``random_encoder`` (method ``scratch``) gives the same
    architecture randomly initialised; its embedder then takes nothing from the source model
    either. Otherwise the embedder starts from the source embedder (``source.init_embedder``).
    Parameters are initialised from torch's global RNG.
    """
    encoder = source.random_body() if random_encoder else source.body()
    dim = source.embed_dim
    if len(in_shape) == 2 and source.modality == "image":
        embedder = Embedder2D(in_channels, source.img_size, source.patch_size, dim)
    elif len(in_shape) == 1:
        embedder = Embedder1D(in_channels, in_shape[0], source.token_grid(in_shape[0]), dim)
    else:
        raise MonaError(f"the {source.modality} source model cannot take inputs of shape "
                        f"{tuple(in_shape)} (a language model takes 1D inputs only)")
    if not random_encoder:  # the same start for mona, emb, orca and ft (no random draws)
        source.init_embedder(embedder)

    with torch.no_grad():  # the encoder's output grid and width, whatever the variant
        out = encoder(torch.zeros(1, *embedder.grid, dim))
    token_grid, out_dim = (int(out.shape[1]), int(out.shape[2])), int(out.shape[3])
    if output == "dense" and source.modality == "text":
        predictor = SequenceHead(out_dim, embedder.piece, out_channels, out_shape)
    elif output == "dense":
        predictor = DenseHead(out_dim, token_grid, source.img_size, out_channels, out_shape)
    elif output == "classes":
        predictor = ClassificationHead(out_dim, out_channels)
    else:
        raise ValueError(f"unknown output kind {output!r}")
    return TargetModel(embedder, encoder, predictor)


def embedder_spec(model: TargetModel) -> dict:
    """What is needed to rebuild the embedder (and to check that saved weights fit one)."""
    e = model.embedder
    spec = {"kind": e.kind, "in_channels": e.in_channels, "embed_dim": e.embed_dim}
    if e.kind == "2d":
        spec.update(img_size=e.img_size, patch_size=e.patch_size, grid=list(e.grid))
    else:
        spec.update(length=e.length, grid=list(e.grid))
    return spec


def build_embedder(spec: dict) -> nn.Module:
    """An embedder from :func:`embedder_spec` (weights left at their initialisation)."""
    if spec["kind"] == "2d":
        return Embedder2D(spec["in_channels"], spec["img_size"], spec["patch_size"],
                          spec["embed_dim"])
    return Embedder1D(spec["in_channels"], spec["length"], tuple(spec["grid"]), spec["embed_dim"])


# ---------------------------------------------------------------- exported embedders
EMBEDDER_WEIGHTS = "embedder.safetensors"
EMBEDDER_META = "embedder.json"
_SPEC_KEYS = ("kind", "in_channels", "embed_dim", "img_size", "patch_size", "length", "grid")


def write_embedder(directory, model: TargetModel, meta: dict) -> None:
    """``embedder.safetensors`` + ``embedder.json`` (the spec and ``meta``), written atomically."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from mona_tune.cache import atomic_dir

    sd = {k: v.detach().cpu().contiguous() for k, v in model.embedder.state_dict().items()}
    with atomic_dir(Path(directory)) as tmp:
        save_file(sd, str(tmp / EMBEDDER_WEIGHTS))
        (tmp / EMBEDDER_META).write_text(
            json.dumps({**embedder_spec(model), **meta}, indent=1, sort_keys=True) + "\n")


def embedder_files(directory):
    """The metadata and weights files of an exported embedder ``directory``; :class:`MonaError`
    when either is missing."""
    from pathlib import Path

    from mona_tune.errors import MonaError

    d = Path(directory).expanduser()
    meta_path, weights_path = d / EMBEDDER_META, d / EMBEDDER_WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise MonaError(f"{d} is not an exported embedder (needs {EMBEDDER_META} and "
                        f"{EMBEDDER_WEIGHTS})")
    return meta_path, weights_path


def read_embedder(directory, model: TargetModel, source_model_id: str) -> dict:
    """Load an exported embedder into ``model.embedder`` after checking that it fits.

    It must have been built for the same embedder shape and learned against the same source
    model (an embedder is aligned to one encoder); otherwise :class:`MonaError`.
    """
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from mona_tune.errors import MonaError
    from mona_tune.models.encoder import check_fit

    d = Path(directory).expanduser()
    meta_path, weights_path = embedder_files(d)
    try:
        meta = json.loads(meta_path.read_text())
        sd = load_file(str(weights_path))
    except Exception as e:  # noqa: BLE001
        raise MonaError(f"cannot read the embedder in {d}: {type(e).__name__}: {e}") from None
    want = embedder_spec(model)
    diffs = [f"{k} {meta.get(k)!r} vs {want[k]!r}" for k in _SPEC_KEYS
             if k in want and meta.get(k) != want[k]]
    if diffs:
        raise MonaError(f"embedder in {d} does not fit this run (saved vs needed): "
                        + ", ".join(diffs))
    if meta.get("source_model") != source_model_id:
        raise MonaError(f"embedder in {d} was learned for source model "
                        f"{meta.get('source_model')!r}, this run uses {source_model_id!r}")
    check_fit(sd, model.embedder.state_dict(), f"embedder weights in {d} do not fit")
    model.embedder.load_state_dict(sd)  # copies onto the parameters' device
    return meta
