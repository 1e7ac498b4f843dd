"""Real files in their published layouts, written small for the tests."""

from __future__ import annotations

import pickle

import numpy as np


def write_cifar_dir(root, per_batch=12, seed=0):
    """A CIFAR-10 python-pickle directory in the exact layout (tiny batches)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root
