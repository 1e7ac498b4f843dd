"""``source_probe_error``: how much source knowledge the current encoder still carries.

Held-out labelled source images go through the frozen source embedder and the current encoder;
the mean-pooled features feed a linear probe (standardised features, multinomial logistic
regression, fixed seed) fitted on the first half and scored on the second. The error is
1 − accuracy on that second half (the paper's Figure 3 measure, on CIFAR-10 there).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from mona_tune.models.assemble import pool


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


def linear_probe_error(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Fit on the first half, return the error on the second half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n_fit = len(labels) // 2
    scaler = StandardScaler().fit(features[:n_fit])
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(features[:n_fit]), labels[:n_fit])
    acc = clf.score(scaler.transform(features[n_fit:]), labels[n_fit:])
    return float(1.0 - acc)


def source_probe_error(encoder: nn.Module, embed_source: Callable[[Tensor], Tensor],
                       images: Tensor, labels: Tensor, seed: int = 0) -> float:
    feats = probe_features(encoder, embed_source, images)
    if not np.isfinite(feats).all():
        return float("nan")
    return linear_probe_error(feats, labels.cpu().numpy(), seed)
