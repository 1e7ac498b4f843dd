"""Formula-driven source images: FractalDB-style fractal categories (Kataoka et al., ACCV 2020).

A category is an iterated function system (IFS): 2–4 random affine maps ``x -> A_k x + b_k`` with
entries drawn from U(-1, 1), kept when every map is contractive (largest singular value < 1) and
its rendering fills at least ``MIN_FILL`` of the image (FractalDB's filling-rate filter). An
instance of a category scales one map's linear part by U(0.8, 1.2) (FractalDB's intra-category
weighting) and may be mirrored. Images are rendered by the chaos game: many short chains, each
map picked with probability proportional to ``|det A_k|``, points histogrammed on a ``SIZE``²
grid fitted to the points' bounding box.

No file is read or downloaded: the set is a pure function of ``SEED``, generated in a few seconds
with numpy. Pretraining a vision transformer to classify such images gives it local-to-global
shape features without any natural image; here it is the embedded source model's data.
"""

from __future__ import annotations

import numpy as np

SEED = 0
SIZE = 32
CATEGORIES = 32
FRACTAL_SPLIT = (40, 10, 14)  # instances per category: pretraining, alignment, probe
MIN_FILL = 0.12
MAX_MAPS = 4
CHAINS, ITERS, BURN_IN = 96, 40, 8


def _maps(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random IFS as ``(count, MAX_MAPS, 6)`` rows ``a b c d e f``; unused maps are 0."""
    params = rng.uniform(-1.0, 1.0, size=(count, MAX_MAPS, 6))
    n_maps = rng.integers(2, MAX_MAPS + 1, size=count)
    params[np.arange(MAX_MAPS)[None, :] >= n_maps[:, None]] = 0.0
    return params


def _contractive(params: np.ndarray) -> np.ndarray:
    linear = params[..., :4].reshape(*params.shape[:-1], 2, 2)
    return np.linalg.svd(linear, compute_uv=False).max(axis=(-1, -2)) < 1.0


def render(params: np.ndarray, rng: np.random.Generator, flip: np.ndarray | None = None,
           size: int = SIZE) -> np.ndarray:
    """Chaos-game renderings of IFS ``params`` ``(B, MAX_MAPS, 6)``: point counts ``(B, size, size)``."""
    b = len(params)
    linear = params[..., :4].reshape(b, MAX_MAPS, 2, 2)
    shift = params[..., 4:]
    weight = np.abs(np.linalg.det(linear)) + 1e-3
    weight[np.all(params == 0, axis=-1)] = 0.0  # unused maps are never picked
    cdf = np.cumsum(weight / weight.sum(1, keepdims=True), axis=1)
    rows = np.arange(b)[:, None]
    x = rng.uniform(-1.0, 1.0, size=(b, CHAINS, 2))
    points = np.empty((ITERS - BURN_IN, b, CHAINS, 2))
    for t in range(ITERS):
        k = (rng.random((b, CHAINS, 1)) > cdf[:, None, :]).sum(-1).clip(max=MAX_MAPS - 1)
        x = np.einsum("bcij,bcj->bci", linear[rows, k], x) + shift[rows, k]
        if t >= BURN_IN:
            points[t - BURN_IN] = x
    points = points.transpose(1, 0, 2, 3).reshape(b, -1, 2)
    lo, hi = points.min(1, keepdims=True), points.max(1, keepdims=True)
    span = (hi - lo).max(-1, keepdims=True) + 1e-9
    q = np.clip(((points - lo) / span * (size - 1)).round().astype(np.int64), 0, size - 1)
    col = q[..., 0]
    if flip is not None:
        col = np.where(flip[:, None], size - 1 - col, col)
    flat = (np.arange(b)[:, None] * size + q[..., 1]) * size + col
    return np.bincount(flat.ravel(), minlength=b * size * size).reshape(b, size, size)


def categories(rng: np.random.Generator, count: int = CATEGORIES) -> np.ndarray:
    """``count`` IFS that are contractive and fill at least ``MIN_FILL`` of their rendering."""
    kept: list[np.ndarray] = []
    while len(kept) < count:
        cand = _maps(rng, 256)
        cand = cand[_contractive(cand)]
        fill = (render(cand, rng) > 0).mean(axis=(1, 2))
        kept.extend(cand[fill >= MIN_FILL])
    return np.stack(kept[:count])


def fractal_images(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images ``(N, SIZE, SIZE)``, labels ``(N,)`` and part ``(N,)`` (0 pretraining,
    1 alignment, 2 probe): every category has the same number of instances in each part, and
    no image is in two parts."""
    rng = np.random.default_rng(seed)
    cats = categories(rng)
    per = sum(FRACTAL_SPLIT)
    labels = np.repeat(np.arange(len(cats)), per)
    params = cats[labels].copy()
    which = rng.integers(0, (params != 0).any(-1).sum(-1))  # one used map per instance
    scale = rng.uniform(0.8, 1.2, size=len(params))
    params[np.arange(len(params)), which, :4] *= scale[:, None]
    linear = params[..., :4].reshape(len(params), MAX_MAPS, 2, 2)
    sv = np.linalg.svd(linear, compute_uv=False).max(-1)  # keep every map contractive
    params[..., :4] /= np.maximum(sv / 0.99, 1.0)[..., None]
    flip = rng.random(len(params)) < 0.5
    counts = render(params, rng, flip)
    images = (np.minimum(counts, 2) * 127.5).astype(np.uint8)
    part = np.tile(np.repeat(np.arange(3), FRACTAL_SPLIT), len(cats))
    return images, labels.astype(np.int64), part
