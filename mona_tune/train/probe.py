"""``source_probe_error``: how much source knowledge the current encoder still carries.

Held-out labelled source images go through the frozen source embedder and the current encoder;
the mean-pooled features feed a linear probe (standardised features, multinomial logistic
regression). The error is 1 − accuracy on images the probe was not fitted on (the paper's
Figure 3 measure, on CIFAR-10 there).

One fit/score split of a few hundred images is noisy: the pretrained embedded encoders' errors
moved by 0.015 (digits) and 0.028 (fractals) from one random 200/200 split of their 400 probe
images to another (standard deviation over 20 splits), as much as the gaps between methods. So
the error is averaged over repeated stratified k-fold splits (``FOLDS`` folds × ``REPEATS``
repetitions, fixed seed) rather than over repeated random halves: within a repetition every image
is scored exactly once, so each repetition already uses all the images instead of half of them;
stratification removes the class-mix noise; and each fit sees (k − 1)/k of the images. On the
same encoders the estimate moves by 0.004 and 0.005 from one seed of the splits to another
(one repetition: 0.005 and 0.006; four: 0.003, at twice the fits; two keep a probe under a
second): ``python benchmarks/probe_noise.py``. The same seed gives every encoder the same splits,
so differences between encoders are not differences of splits.

Its standard error (``source_probe_error_se``) is the corrected resampled one of Nadeau & Bengio
(2003), as applied to repeated k-fold by Bouckaert & Frank (2004):
``sqrt((1/J + n_score/n_fit) · s²)`` with ``s`` the standard deviation of the ``J`` fold errors.
The plain ``s/√J`` would pretend the folds are independent, but they share training images and
come from one finite set of probe images, which no number of re-splits can enlarge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mona_tune.models.assemble import pool

FOLDS = 5
REPEATS = 2


@dataclass(frozen=True)
class ProbeEstimate:
    """The probe error averaged over ``splits`` fit/score splits, and its standard error."""

    error: float
    se: float
    splits: int


@torch.no_grad()
def probe_features(encoder: nn.Module, embed_source: Callable[[Tensor], Tensor], images: Tensor,
                   batch_size: int = 128) -> np.ndarray:
    """Mean-pooled encoder features ``(N, D)`` (float64) of source ``images``."""
    was_training = encoder.training
    encoder.eval()
    try:
        feats = [pool(encoder(embed_source(chunk))).float().cpu()
                 for chunk in images.split(batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(feats).double().numpy()


def probe_splits(labels: np.ndarray, folds: int = FOLDS, repeats: int = REPEATS,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit, score)`` index pairs of repeated stratified k-fold, disjoint within each pair.

    ``k`` is lowered to the smallest class count (at least 2) so that every class can be in every
    fold; with a class of a single image the folds are plain shuffled ones.
    """
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    labels = np.asarray(labels)
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    k = max(2, min(folds, smallest, len(labels)))
    if smallest >= k:
        splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    else:
        splitter = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


def linear_probe_error(features: np.ndarray, labels: np.ndarray, fit: np.ndarray,
                       score: np.ndarray, seed: int = 0) -> float:
    """Fit the probe on rows ``fit``, return its error on rows ``score``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[fit])
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(features[fit]), labels[fit])
    return float(1.0 - clf.score(scaler.transform(features[score]), labels[score]))


def probe_estimate(features: np.ndarray, labels: np.ndarray, folds: int = FOLDS,
                   repeats: int = REPEATS, seed: int = 0) -> ProbeEstimate:
    """Mean error over the repeated k-fold splits and its corrected standard error."""
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels)
    splits = probe_splits(labels, folds, repeats, seed)
    # Many small fits: a multi-threaded BLAS only waits on busy cores here (10x slower when shared).
    with threadpool_limits(1):
        errors = np.array([linear_probe_error(features, labels, fit, score, seed)
                           for fit, score in splits])
    n_fit, n_score = len(splits[0][0]), len(splits[0][1])
    spread = float(errors.std(ddof=1)) if len(errors) > 1 else float("nan")
    se = math.sqrt((1.0 / len(errors) + n_score / n_fit) * spread**2)
    return ProbeEstimate(float(errors.mean()), se, len(errors))


def source_probe(encoder: nn.Module, embed_source: Callable[[Tensor], Tensor], images: Tensor,
                 labels: Tensor, seed: int = 0) -> ProbeEstimate:
    """The probe of ``encoder`` on source ``images``; NaN when its features are not finite."""
    feats = probe_features(encoder, embed_source, images)
    if not np.isfinite(feats).all():
        return ProbeEstimate(float("nan"), float("nan"), 0)
    return probe_estimate(feats, labels.cpu().numpy(), seed=seed)


def source_probe_error(encoder: nn.Module, embed_source: Callable[[Tensor], Tensor],
                       images: Tensor, labels: Tensor, seed: int = 0) -> float:
    """:func:`source_probe`'s error alone (the pretrained reference line)."""
    return source_probe(encoder, embed_source, images, labels, seed).error
