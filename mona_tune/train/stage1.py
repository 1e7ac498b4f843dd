"""Stage 1: the embedder-only objectives of ``mona``, ``emb`` and ``orca``, as gradients, and
the registry the trainer finds them in (:data:`STAGE1_METHODS`; a new method is a function
registered with :func:`register_stage1`, and its name in ``config.Method``).

Each function returns ``(grads, logs)``: the gradient for every parameter of ``model.embedder``
(in ``parameters()`` order) and a dict of scalar tensors to log (``loss`` = the objective
minimised). Nothing outside the embedder receives a gradient, so nothing else can move.

Notation (method.md): φe the target embedder's parameters, θf the encoder's, L_inner the task loss
of the whole model on a target batch, α = ``inner_lr``, λ = ``lam``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from mona_tune.models.assemble import TargetModel, pool
from mona_tune.train.losses import align_uniform, gaussian_mmd
from mona_tune.train.otdd import otdd, pseudo_labels

LossFn = Callable[[Tensor, Tensor], Tensor]  # (normalised prediction, physical target) -> scalar


def _encoder_params(model: TargetModel) -> dict[str, Tensor]:
    return {n: p for n, p in model.encoder.named_parameters() if p.requires_grad}


def outer_loss(model: TargetModel, theta: dict[str, Tensor], source_tokens: Tensor,
               source_labels: Tensor, t: float) -> tuple[Tensor, Tensor, Tensor]:
    """``L_outer = L_align + L_uniform`` of source features through the encoder with ``theta``.

    ``source_tokens`` come from the frozen source embedder; the features are the encoder's tokens
    mean-pooled (then L2-normalised inside :func:`align_uniform`).
    """
    feats = pool(functional_call(model.encoder, theta, (source_tokens,)))
    align, uniform = align_uniform(feats, source_labels, t)
    return align + uniform, align, uniform


def mona_gradient(model: TargetModel, x: Tensor, y: Tensor, loss_fn: LossFn,
                  source_tokens: Tensor, source_labels: Tensor, *, inner_lr: float, lam: float,
                  t: float = 2.0, first_order: bool = False,
                  loss_scale: float = 1.0) -> tuple[list[Tensor], dict]:
    """∇φe [L_inner(φe, θ) + λ · L_outer(θ'f)], with θ'f = θf − α ∇θf L_inner(φe, θ).

    Second order (default): the inner step is kept in the autograd graph (``create_graph=True``)
    and the encoder is evaluated functionally at θ'f, so the gradient flows through ∇θf L_inner
    into φe: ∇φe L_outer(θ'f) = −α (∂²L_inner / ∂φe ∂θf) v, with v = ∇θ' L_outer(θ'f).

    First order (``first_order=True``): with the inner gradient detached, θ'f would not depend on
    φe and the outer term would vanish. Instead the mixed second derivative is replaced by a
    central finite difference of gradients (DARTS, Liu et al. 2019), which needs no double
    backward:

        ∇φe L_outer ≈ −α [∇φe L_inner(φe, θf + ε v) − ∇φe L_inner(φe, θf − ε v)] / (2ε),
        v = ∇θ' L_outer(θ'f),  ε = 0.01 / ‖v‖   (the term is 0 when v = 0),

    with θh and everything else at their current values. The embedder's forward pass is shared
    by the three evaluations of L_inner and its backward pass is taken once, on the combined
    token gradient (the same value, by linearity of the vector-Jacobian product).

    In both forms the outer term is proportional to α (φe reaches L_outer only through the inner
    step): with α much smaller than 1 it is a small fraction of ∇φe L_inner, and ``mona``
    approaches ``emb``.

    ``loss_scale`` S (fp16's gradient scaler): every backward pass differentiates S times its
    loss, so that small float16 gradients do not underflow; the inner step uses α / S on the scaled
    gradient (θ'f is unchanged) and the returned gradient is S times the gradient above, for the
    scaler to unscale and check. The logged losses are unscaled.
    """
    phi = list(model.embedder.parameters())
    theta = _encoder_params(model)
    names = list(theta)
    if not first_order:
        inner = loss_fn(model(x), y)
        g_theta = torch.autograd.grad(inner * loss_scale, list(theta.values()), create_graph=True)
        theta_prime = {n: theta[n] - (inner_lr / loss_scale) * g for n, g in zip(names, g_theta)}
        outer, align, uniform = outer_loss(model, theta_prime, source_tokens, source_labels, t)
        grads = torch.autograd.grad(loss_scale * (inner + lam * outer), phi)
    else:
        z = model.embedder(x)
        zd = z.detach().requires_grad_(True)  # tokens as a leaf: one embedder backward at the end
        inner = loss_fn(model.predictor(model.encoder(zd)), y)
        g = torch.autograd.grad(inner * loss_scale, [zd, *theta.values()])
        g_z, g_theta = g[0], g[1:]  # both S times the gradient
        theta_prime = {n: (theta[n] - (inner_lr / loss_scale) * gt).detach().requires_grad_(True)
                       for n, gt in zip(names, g_theta)}
        outer, align, uniform = outer_loss(model, theta_prime, source_tokens, source_labels, t)
        v = [vi / loss_scale for vi in
             torch.autograd.grad(outer * loss_scale, list(theta_prime.values()))]
        v_norm = torch.sqrt(sum((vi.float() ** 2).sum() for vi in v))
        if lam != 0 and v_norm > 0:
            eps = 0.01 / v_norm
            g_pm = []
            for sign in (1.0, -1.0):
                shifted = {n: (theta[n] + sign * eps * vi).detach() for n, vi in zip(names, v)}
                loss = loss_fn(model.predictor(functional_call(model.encoder, shifted, (zd,))), y)
                g_pm.append(torch.autograd.grad(loss * loss_scale, zd)[0])
            g_z = g_z + lam * (-inner_lr) * (g_pm[0] - g_pm[1]) / (2 * eps)
        grads = torch.autograd.grad(z, phi, grad_outputs=g_z)
    logs = {"loss": (inner + lam * outer).detach(), "inner_loss": inner.detach(),
            "outer_loss": outer.detach(), "align_loss": align.detach(),
            "uniform_loss": uniform.detach()}
    return list(grads), logs


def emb_gradient(model: TargetModel, x: Tensor, y: Tensor, loss_fn: LossFn,
                 loss_scale: float = 1.0) -> tuple[list, dict]:
    """Embedder warm-up: ∇φe L_inner (times ``loss_scale``), the rest of the model frozen."""
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss * loss_scale, list(model.embedder.parameters()))
    return list(grads), {"loss": loss.detach()}


def orca_gradient(model: TargetModel, x: Tensor, source_tokens: Tensor, *,
                  distance: str = "otdd", target_labels: Tensor | None = None,
                  source_labels: Tensor | None = None,
                  loss_scale: float = 1.0) -> tuple[list, dict]:
    """ORCA's stage 1: ∇φe of a distance between embedded target and embedded source data.

    The mean-pooled token of each embedded sample is its point in the shared input space.
    ``otdd`` (ORCA as published): the squared optimal-transport dataset distance between the
    target points labelled ``target_labels`` (k-means pseudo-labels for a dense target) and the
    source points labelled ``source_labels`` (:mod:`mona_tune.train.otdd`). ``mmd``: the squared
    Gaussian-kernel MMD between the two point sets, a cheaper stand-in that ignores labels.
    """
    target, source = pool(model.embedder(x)), pool(source_tokens)
    if distance == "otdd":
        if target_labels is None or source_labels is None:
            raise ValueError("the OTDD needs target and source labels")
        value = otdd(target, target_labels, source, source_labels).to(target.dtype)
    elif distance == "mmd":
        value = gaussian_mmd(target, source)
    else:
        raise ValueError(f"unknown orca distance {distance!r} (otdd, mmd)")
    grads = torch.autograd.grad(value * loss_scale, list(model.embedder.parameters()))
    return list(grads), {"loss": value.detach(), distance: value.detach()}


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Stage1Batch:
    """What one stage-1 step sees: the model, a target batch, the task loss, a labelled source
    batch (for methods that use one), the run's config, orca's pseudo-label centres and the
    factor the gradient is scaled by (fp16's gradient scaler; 1 otherwise)."""

    model: TargetModel
    x: Tensor
    y: Tensor
    loss_fn: LossFn
    xs: Tensor | None
    ys: Tensor | None
    cfg: Any  # TrainConfig
    orca_centres: Tensor | None = None
    loss_scale: float = 1.0


@dataclass(frozen=True)
class Stage1Method:
    name: str
    uses_source: bool  # draws a labelled source batch every step
    gradient: Callable[[Stage1Batch], tuple[list, dict]]


STAGE1_METHODS: dict[str, Stage1Method] = {}


def register_stage1(name: str, *, uses_source: bool):
    """Register ``fn(batch: Stage1Batch) -> (grads, logs)`` as the stage 1 of method ``name``."""
    def add(fn):
        if name in STAGE1_METHODS:
            raise ValueError(f"stage-1 method {name!r} registered twice")
        STAGE1_METHODS[name] = Stage1Method(name, uses_source, fn)
        return fn
    return add


@register_stage1("mona", uses_source=True)
def _mona(b: Stage1Batch) -> tuple[list, dict]:
    c = b.cfg
    return mona_gradient(b.model, b.x, b.y, b.loss_fn, b.xs, b.ys, inner_lr=c.inner_lr,
                         lam=c.lam, t=c.uniformity_t, first_order=c.first_order,
                         loss_scale=b.loss_scale)


@register_stage1("emb", uses_source=False)
def _emb(b: Stage1Batch) -> tuple[list, dict]:
    return emb_gradient(b.model, b.x, b.y, b.loss_fn, b.loss_scale)


@register_stage1("orca", uses_source=True)
def _orca(b: Stage1Batch) -> tuple[list, dict]:
    labels = b.y if b.orca_centres is None else pseudo_labels(b.y, b.orca_centres)
    return orca_gradient(b.model, b.x, b.xs, distance=b.cfg.orca_distance,
                         target_labels=labels, source_labels=b.ys, loss_scale=b.loss_scale)
