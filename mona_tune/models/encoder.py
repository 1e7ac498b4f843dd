"""The pretrained encoder: a timm Swin transformer, by name or from a local weights file (in
any layout :mod:`mona_tune.models.checkpoints` maps).

The source model is a whole timm Swin. Its ``patch_embed`` is the frozen *source embedder* e_s;
its ``layers`` + final ``norm`` form the encoder body f that the target model fine-tunes (a copy:
the source model itself is never changed, so one loaded copy serves every trial of a process).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from mona_tune.errors import MonaError
from mona_tune.models.checkpoints import onto_timm, read_swin_checkpoint

# Stochastic depth is switched off in every encoder: stage 1 differentiates through a simulated
# fine-tuning step, which must be a gradient of one deterministic function (timm's default for
# Swin is drop_path_rate=0.1 during fine-tuning; ORCA's Darcy runs keep the model's default).
DROP_PATH_RATE = 0.0


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
            "on an offline machine pass --weights PATH (a timm, Microsoft or Hugging Face "
            "Swin checkpoint)"
        ) from None
    if not is_swin(net):
        raise MonaError(f"source model {name!r} is not a timm Swin transformer "
                        "(SwinTransformer or SwinTransformerV2); its body cannot take patch tokens")
    if weights is not None:
        load_weights(net, weights, name)
    return net


def load_weights(net: nn.Module, weights: str | Path, name: str) -> None:
    """Load a local Swin checkpoint (timm, Microsoft or Hugging Face layout, see
    :mod:`mona_tune.models.checkpoints`) into ``net`` after a strict key and shape check."""
    path = Path(weights).expanduser()
    sd, layout = read_swin_checkpoint(path)
    sd = onto_timm(sd, layout, net, path)
    check_fit(sd, net.state_dict(), f"--weights {path} does not fit {name} ({layout} layout)",
              unexpected=("key does not map", "keys do not map"))
    net.load_state_dict(sd, strict=True)


def check_fit(found: dict, expected: dict, what: str,
              unexpected: tuple[str, str] = ("unexpected", "unexpected")) -> None:
    """Raise ``MonaError(what: ...)`` unless ``found`` has exactly the keys and shapes expected
    (``unexpected``: what one, and several, keys the model lacks are called)."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    mismatched = [
        f"{k}: file {tuple(getattr(found[k], 'shape', ()))} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and (not isinstance(found[k], Tensor) or found[k].shape != v.shape)
    ]
    problems = []
    for label, items in ((unexpected, extra), (("missing", "missing"), missing),
                         (("shape mismatch", "shape mismatches"), mismatched)):
        if items:
            shown = ", ".join(str(i) for i in items[:3]) + (", ..." if len(items) > 3 else "")
            problems.append(f"{len(items)} {label[len(items) > 1]} ({shown})")
    if problems:
        raise MonaError(f"{what}: " + "; ".join(problems))
