"""``waveforms``: an embedded classification task, waveforms by shape (generated, no download).

Each sample is one channel of 128 values: a sine, square, sawtooth or triangle wave (the class,
K = 4) of random frequency (2–8 periods in the window), phase (uniform) and amplitude (0.5–1.5),
plus Gaussian noise (σ 0.3). The random phase makes every class's mean signal zero, so a linear
classifier on the raw values stays near chance (``compare`` shows it beside the methods): the
shape must be recognised wherever the wave starts. Metric: the error rate; loss: cross-entropy.

The data are written in the ``arrays`` task's layout (``train.npz``, ``test.npz``) into the
cache and read by that task's loader, so ``mona-tune data make waveforms --out DIR`` writes files
that ``--task arrays --data-dir DIR`` reads as well.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mona_tune.tasks.arrays import METRICS, load_arrays
from mona_tune.tasks.embedded import embedded_dir
from mona_tune.tasks.registry import Task, TaskData, register

CLASSES = ("sine", "square", "sawtooth", "triangle")
LENGTH = 128
EMBEDDED = {"n_train": 800, "n_test": 200}
DATA_VERSION = 1
NOISE = 0.3


def waveforms(n: int, seed: int, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """``(x (n, 1, length) float32, y (n,) int64)``: classes in turn, then shuffled."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(CLASSES))
    periods = rng.uniform(2.0, 8.0, n)[:, None]
    phase = rng.uniform(0.0, 1.0, n)[:, None]
    amp = rng.uniform(0.5, 1.5, n)[:, None]
    t = (np.arange(length)[None, :] / length) * periods + phase  # in periods
    frac = t % 1.0
    shapes = np.stack([np.sin(2 * np.pi * t), np.where(frac < 0.5, 1.0, -1.0), 2 * frac - 1,
                       1 - 4 * np.abs(frac - 0.5)])  # (K, n, length)
    x = amp * shapes[y, np.arange(n)] + NOISE * rng.standard_normal((n, length))
    return x[:, None].astype(np.float32), y.astype(np.int64)


def write_waveforms(out: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """``train.npz`` and ``test.npz`` in the arrays layout (each written whole, then renamed)."""
    from mona_tune.cache import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x, y = waveforms(n, s)
        with atomic_path(out / f"{name}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, x=x, y=y)
    return out


def load_waveforms(cfg) -> TaskData:
    """The user's files in the arrays layout, or the generated default."""
    if cfg.data_dir is None:
        n_train = max(cfg.n_train or 0, EMBEDDED["n_train"])
        n_test = max(cfg.n_test or 0, EMBEDDED["n_test"])
        folder = embedded_dir({"task": "waveforms", "n_train": n_train, "n_test": n_test},
                              ["train.npz", "test.npz"],
                              lambda d: write_waveforms(d, n_train, n_test), DATA_VERSION)
        cfg = cfg.model_copy(update={"data_dir": str(folder)})
    data = load_arrays(cfg.model_copy(update={"target_kind": "classes"}))
    return dataclasses.replace(data, info={**data.info, "task": "waveforms"})


_kind, _direction, _per_sample, _loss = METRICS["error_rate"]
register(Task(
    name="waveforms",
    description="waveform shapes (sine, square, sawtooth, triangle) at random phase: "
                "4 classes, error rate",
    in_channels=1, in_shape=(LENGTH,), output="classes", out_channels=len(CLASSES),
    metric="error_rate", direction=_direction, loss=_loss, metric_per_sample=_per_sample,
    load=load_waveforms, fields=frozenset(),
))
