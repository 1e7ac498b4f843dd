"""Stage-1 objectives on features: alignment and uniformity (MoNA), Gaussian MMD (orca's cheap
option; its published distance, the OTDD, is in :mod:`mona_tune.train.otdd`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``(n, m)``, clamped at 0.

    Written with inner products rather than ``torch.cdist`` so that it stays twice
    differentiable at zero distance (the diagonal), which MoNA's second-order gradient needs.
    """
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min(0.0)


def align_uniform(features: Tensor, labels: Tensor, t: float = 2.0) -> tuple[Tensor, Tensor]:
    """Wang & Isola (2020) alignment and uniformity of L2-normalised features, by class.

    With ``z_i = f_i / ‖f_i‖`` and the unordered pairs ``i < j`` of the batch:

    - alignment = mean of ``‖z_i − z_j‖²`` over pairs of the SAME class (α = 2);
    - uniformity = ``log mean exp(−t ‖z_i − z_j‖²)`` over pairs of DIFFERENT classes.

    A term whose pair set is empty is 0 (kept in the graph).
    """
    z = F.normalize(features, dim=1)
    d2 = sq_dists(z, z)
    n = len(labels)
    upper = torch.ones(n, n, dtype=torch.bool, device=z.device).triu(1)
    same = labels[:, None] == labels[None, :]
    pos, neg = d2[upper & same], d2[upper & ~same]
    zero = z.sum() * 0.0
    align = pos.mean() if pos.numel() else zero
    uniform = (torch.logsumexp(-t * neg, dim=0) - math.log(neg.numel())) if neg.numel() else zero
    return align, uniform


def median_bandwidth(z: Tensor) -> Tensor:
    """σ² by the median heuristic: median squared distance between distinct points (detached)."""
    d2 = sq_dists(z, z).detach()
    n = len(z)
    off = d2[~torch.eye(n, dtype=torch.bool, device=z.device)]
    return off.median().clamp_min(1e-12)


def gaussian_mmd(x: Tensor, y: Tensor, sigma2: Tensor | float | None = None) -> Tensor:
    """Squared MMD between samples ``x (n, d)`` and ``y (m, d)`` with a Gaussian kernel.

    ``k(a, b) = exp(−‖a − b‖² / (2σ²))``; ``σ²`` defaults to the median heuristic over the pooled
    sample. The biased (V-statistic) estimate, ``mean k(x, x') + mean k(y, y') − 2 mean k(x, y)``,
    which is never negative.

    The ``orca`` baseline's cheaper option (``orca_distance="mmd"``) instead of ORCA's
    optimal-transport dataset distance: both make the embedded target distribution close to the
    embedded source one; the OTDD also matches classes (k-means pseudo-classes of the target).
    """
    z = torch.cat([x, y])
    if sigma2 is None:
        sigma2 = median_bandwidth(z)
    k = torch.exp(-sq_dists(z, z) / (2.0 * sigma2))
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()
