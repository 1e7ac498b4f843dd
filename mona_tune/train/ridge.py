"""The ridge reference row of ``mona-tune compare`` (no source model involved).

``ridge``: scikit-learn's ``Ridge`` from the flattened normalised input to the flattened output
field, fitted on the training split, its ``alpha`` chosen on the validation split from
``RIDGE_ALPHAS`` by the task's metric, then scored on the test split. A deep model that does not
beat it has learnt nothing a linear map could not.

The inputs are first expressed in an orthonormal basis of the (centred) training inputs' span.
Ridge's predictions depend on the inputs only through their inner products with the training
inputs, which this basis keeps, so no prediction changes; but the coefficient matrix shrinks from
``outputs × inputs`` (7225 × 21675 at 85×85) to ``outputs × n_train``, and one fit from seconds
to milliseconds.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mona_tune.tasks import Task, TaskData

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.flatten(1).double().cpu().numpy()


def ridge_baseline(data: TaskData, task: Task, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> dict:
    """``{"alpha", "val_<metric>", "test_<metric>", "seconds"}`` of the validated ridge map.

    Only dense tasks have one (their output is a field); a classification task returns ``{}``.
    """
    from threadpoolctl import threadpool_limits

    if task.output != "dense":
        return {}
    t0 = time.perf_counter()
    with threadpool_limits(1):  # small products: more BLAS threads only wait on busy cores
        alpha, val, test = _validated_ridge(data, task, alphas)
    m = task.metric
    return {"alpha": alpha, f"val_{m}": val, f"test_{m}": test,
            "seconds": time.perf_counter() - t0}


def _validated_ridge(data: TaskData, task: Task, alphas: tuple[float, ...]
                     ) -> tuple[float, float, float]:
    """``(alpha, val, test)``: the alpha with the best validation metric, and its metrics."""
    from sklearn.linear_model import Ridge

    x_train = _flat(data.x_train)
    mean = x_train.mean(axis=0)
    basis = np.linalg.qr((x_train - mean).T)[0]  # (inputs, n_train), orthonormal columns

    def coords(x: torch.Tensor) -> np.ndarray:
        return (_flat(x) - mean) @ basis

    x_train, x_val, x_test = coords(data.x_train), coords(data.x_val), coords(data.x_test)
    y_train = _flat(data.y_train)

    def score(model: Ridge, x: np.ndarray, y: torch.Tensor) -> float:
        pred = torch.from_numpy(model.predict(x)).to(y.dtype).view_as(y)
        return float(task.metric_per_sample(pred, y.cpu()).mean())

    def better(a: float, b: float) -> bool:
        return a < b if task.direction == "min" else a > b

    best = None  # (val, alpha, model)
    for alpha in alphas:
        model = Ridge(alpha=alpha).fit(x_train, y_train)
        val = score(model, x_val, data.y_val)
        if best is None or better(val, best[0]):
            best = (val, alpha, model)
    val, alpha, model = best
    return alpha, val, score(model, x_test, data.y_test)
