"""The linear reference row of ``mona-tune compare`` (no source model involved).

Dense tasks: scikit-learn's ``Ridge`` from the flattened normalised input to the flattened output
field; classification tasks: multinomial ``LogisticRegression`` on the same input. Each is fitted
on the training split, its regularisation ``alpha`` chosen on the validation split from
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
    """``{"name", "alpha", "val_<metric>", "test_<metric>", "seconds"}`` of the validated linear
    reference: ridge for a dense task (its output is a field), multinomial logistic regression
    (``C = 1/alpha``) for a classification task."""
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(1):  # small products: more BLAS threads only wait on busy cores
        alpha, val, test = _validated(data, task, alphas)
    m = task.metric
    name = "ridge" if task.output == "dense" else "logistic regression"
    return {"name": name, "alpha": alpha, f"val_{m}": val, f"test_{m}": test,
            "seconds": time.perf_counter() - t0}


def _fit(task: Task, alpha: float, x: np.ndarray, y: torch.Tensor):
    """The fitted linear model and a function giving its output as the task scores it."""
    if task.output == "dense":
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=alpha).fit(x, _flat(y))
        return lambda z, like: torch.from_numpy(model.predict(z)).to(like.dtype).view(
            len(z), *like.shape[1:])
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / alpha, max_iter=1000).fit(x, y.cpu().numpy())
    k = int(y.max()) + 1

    def scores(z, like):  # class probabilities, a column per class (absent ones never chosen)
        out = torch.zeros(len(z), k, dtype=torch.float64)
        out[:, torch.from_numpy(model.classes_)] = torch.from_numpy(model.predict_proba(z))
        return out
    return scores


def _validated(data: TaskData, task: Task, alphas: tuple[float, ...]
               ) -> tuple[float, float, float]:
    """``(alpha, val, test)``: the alpha with the best validation metric, and its metrics."""
    x_train = _flat(data.x_train)
    mean = x_train.mean(axis=0)
    basis = np.linalg.qr((x_train - mean).T)[0]  # (inputs, n_train), orthonormal columns

    def coords(x: torch.Tensor) -> np.ndarray:
        return (_flat(x) - mean) @ basis

    x_train, x_val, x_test = coords(data.x_train), coords(data.x_val), coords(data.x_test)

    def score(predict, x: np.ndarray, y: torch.Tensor) -> float:
        return float(task.metric_per_sample(predict(x, y), y.cpu()).mean())

    def better(a: float, b: float) -> bool:
        return a < b if task.direction == "min" else a > b

    best = None  # (val, alpha, predict)
    for alpha in alphas:
        predict = _fit(task, alpha, x_train, data.y_train)
        val = score(predict, x_val, data.y_val)
        if best is None or better(val, best[0]):
            best = (val, alpha, predict)
    val, alpha, predict = best
    return alpha, val, score(predict, x_test, data.y_test)
