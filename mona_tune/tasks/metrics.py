"""Metrics of dense tasks as their benchmarks define them, per sample; the losses are their means.

``rel_l2``: FNO / NAS-Bench-360's relative L2 error. ``nrmse``: PDEBench's normalised RMSE.
"""

from __future__ import annotations

from torch import Tensor


def rel_l2_per_sample(pred: Tensor, target: Tensor) -> Tensor:
    """‖pred − u‖₂ / ‖u‖₂ per sample (FNO's LpLoss without the batch mean)."""
    diff = (pred - target).flatten(1).norm(dim=1)
    return diff / target.flatten(1).norm(dim=1)


def rel_l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    return rel_l2_per_sample(pred, target).mean()


def nrmse_per_sample(pred: Tensor, target: Tensor) -> Tensor:
    """PDEBench's nRMSE: per channel RMS(pred − u) / RMS(u) over space, averaged over channels."""
    err = (pred - target).flatten(2).pow(2).mean(2).sqrt()
    nrm = target.flatten(2).pow(2).mean(2).sqrt()
    return (err / nrm).mean(1)


def nrmse_loss(pred: Tensor, target: Tensor) -> Tensor:
    return nrmse_per_sample(pred, target).mean()
