"""The optimal-transport dataset distance (OTDD) of ORCA's first stage, on POT.

Alvarez-Melis & Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020: a
labelled dataset is a distribution over pairs ``z = (x, y)``; the distance between two pairs is

    d_Z((x, y), (x', y'))^p = ‖x − x'‖^p + W_p^p(α_y, α'_y'),

where ``α_y`` is the distribution of the features of class ``y`` (a label is represented by its
class-conditional feature distribution, so labels of two datasets compare although their label
sets differ), and OTDD is the p-Wasserstein distance between the two datasets under ``d_Z``.
Here p = 2 and both transports are exact (POT's network simplex, ``ot.emd``), on the empirical
distributions with uniform weights; :func:`otdd` returns the squared distance (the OT cost),
differentiable wherever the optimal plans are unique (the square root is not, at 0).

Gradient: by the envelope theorem the derivative of the optimal cost with respect to the cost
matrix is the optimal plan (POT's exact solver gives it), and the cost matrices are torch
functions of the features, so autograd carries ∂OTDD/∂features through both the feature
term and the label term. ORCA (Shen et al., ICML 2023) minimises this between the embedded target
and the embedded source with respect to the target embedder.

Labels of a dense target (Darcy): ORCA has no classes there and clusters the targets with k-means;
:func:`fit_pseudo_label_centres` does that once on the training outputs and
:func:`pseudo_labels` assigns each sample to its nearest centre.

Differences from ORCA's code, for cost: ORCA computes OTDD between up to 5000 source and all target
samples once per epoch (class-wise loops of up to 128 samples); the trainer here takes one distance
per stage-1 step between the target batch and a class-balanced source batch (a minibatch OTDD).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mona_tune.extras import missing
from mona_tune.train.losses import sq_dists

# k of the target's k-means (our choice): as many pseudo-classes as CIFAR-10, ORCA's source, has
PSEUDO_LABEL_CLUSTERS = 10


def _plan(cost: np.ndarray) -> np.ndarray:
    """The optimal coupling of two uniform distributions under ``cost`` (POT's ``ot.emd``)."""
    n, m = cost.shape
    if n == 1 or m == 1:  # a single point on one side: the only coupling
        return np.full((n, m), 1.0 / (n * m))
    try:
        import ot  # POT: imported where orca needs it, not by every trainer
    except ImportError:
        raise missing("ot") from None

    return ot.emd(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost)


def _exact_ot(cost: Tensor) -> Tensor:
    """``min_π <π, cost>`` over couplings of two uniform distributions.

    The optimal plan π* comes from POT's exact solver on a detached copy; the value is
    ``<π*, cost>`` in torch, whose gradient with respect to ``cost`` is π*, the derivative of the
    optimal cost (what ``ot.emd2`` returns too, at a third of its overhead per call).
    """
    plan = _plan(cost.detach().cpu().double().numpy())
    return (torch.from_numpy(plan).to(cost) * cost).sum()


def label_distances(cost: Tensor, labels_x: Tensor, labels_y: Tensor) -> Tensor:
    """``W_2²(α_a, β_b)`` for every class ``a`` of x and ``b`` of y, ``(k_x, k_y)``.

    ``cost`` is the squared feature distance ``(n, m)`` between the two samples; each class pair
    is the exact transport between the rows of class ``a`` and the columns of class ``b``, i.e.
    a block of ``cost``. The blocks' plans are put side by side in one ``(n, m)`` matrix, so the
    values of all pairs are one product and two sums. ``labels_*``: class indices ``0..k−1``.
    """
    c = cost.detach().cpu().double().numpy()
    lx, ly = labels_x.cpu().numpy(), labels_y.cpu().numpy()
    kx, ky = int(lx.max()) + 1, int(ly.max()) + 1
    plans = np.zeros_like(c)
    cols = [np.flatnonzero(ly == b) for b in range(ky)]
    for a in range(kx):
        rows = np.flatnonzero(lx == a)
        for col in cols:
            block = np.ix_(rows, col)
            plans[block] = _plan(c[block])
    ox = torch.nn.functional.one_hot(labels_x, kx).to(cost)
    oy = torch.nn.functional.one_hot(labels_y, ky).to(cost)
    return ox.T @ (torch.from_numpy(plans).to(cost) * cost) @ oy


def otdd(x: Tensor, labels_x: Tensor, y: Tensor, labels_y: Tensor) -> Tensor:
    """Squared OTDD (p = 2) between the labelled samples ``(x (n, d), labels_x (n,))`` and
    ``(y (m, d), labels_y (m,))``; any integer labels. Computed in float64."""
    _, ix = torch.unique(labels_x, return_inverse=True)
    _, iy = torch.unique(labels_y, return_inverse=True)
    feature_cost = sq_dists(x.double(), y.double())
    label_cost = label_distances(feature_cost, ix, iy)
    return _exact_ot(feature_cost + label_cost[ix][:, iy])


def fit_pseudo_label_centres(targets: Tensor, seed: int,
                             k: int = PSEUDO_LABEL_CLUSTERS) -> Tensor:
    """k-means centres ``(k', P)`` of the flattened targets (k' = min(k, samples))."""
    from sklearn.cluster import KMeans

    flat = targets.detach().reshape(len(targets), -1).double().cpu().numpy()
    k = max(1, min(k, len(flat)))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed % 2**32).fit(flat)
    return torch.from_numpy(np.asarray(km.cluster_centers_))


def pseudo_labels(targets: Tensor, centres: Tensor) -> Tensor:
    """The index of the nearest k-means centre of each flattened target, ``(N,)``."""
    flat = targets.detach().reshape(len(targets), -1).double()
    return sq_dists(flat, centres.to(flat.device)).argmin(dim=1)
