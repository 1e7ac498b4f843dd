"""The incumbent figure: best validation metric so far against wall time and against stage-2
epochs spent, one search (``incumbent.png`` beside ``curves.png``) or several overlaid
(``mona-tune best --task T --curves A B ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

from mona_tune.errors import MonaError
from mona_tune.tracking import mlflow_runs as mr
from mona_tune.tracking.incumbent import IncumbentCurve, incumbent_curve, search_reports

INCUMBENT_FILE = "incumbent.png"


def _steps(curve: IncumbentCurve, xs: list[float], total: float) -> tuple[list, list]:
    """The step function's corners, held to the end of the search."""
    return [*xs, total], [*curve.values, curve.values[-1]]


def plot_incumbents(curves: list[IncumbentCurve], metric: str, path: Path, title: str) -> Path:
    """Two panels, every curve a step line: the incumbent against seconds since the search's
    first report, and against stage-2 epochs spent; a dot where it improved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    positive = True
    for curve in curves:
        if not curve.values:
            continue
        positive = positive and min(curve.values) > 0
        for ax, xs, total in ((axes[0], curve.seconds, curve.total_seconds),
                              (axes[1], curve.epochs, curve.total_epochs)):
            x, y = _steps(curve, list(xs), total)
            line, = ax.step(x, y, where="post", lw=1.8, label=f"{curve.search} ({y[-1]:.4g})")
            ax.plot(xs, curve.values, "o", ms=3.5, color=line.get_color())
    for ax, label in zip(axes, ("seconds since the first report", "stage-2 epochs spent")):
        ax.set_xlabel(label)
        ax.set_ylabel(f"best {metric} so far")
        ax.grid(alpha=0.3)
        if positive and any(c.values for c in curves):
            ax.set_yscale("log")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def stored_curve(tracking_uri: str, name: str, task: str | None) -> tuple[IncumbentCurve, str]:
    """The incumbent curve of the search ``name`` as its trials' runs hold it, and its metric."""
    from mona_tune.tracking.best import find_search

    parent = find_search(tracking_uri, name, task, flag="--curves")
    metric = parent.data.params.get("metric", "val_rel_l2")
    mode = parent.data.params.get("mode", "min")
    reports = search_reports(tracking_uri, parent.info.experiment_id, parent.info.run_id, metric)
    return incumbent_curve(reports, mode, search=name), metric


def compare_command(names: list[str], *, task: str | None, out_path: Path,
                    tracking_uri: str | None, out=None) -> int:
    """``mona-tune best --curves A B ...``: each search's incumbent in one line, all of them
    overlaid in ``out_path``."""
    out = out or sys.stdout
    uri = mr.tracking_uri_or_default(tracking_uri)
    if mr.sqlite_path(uri) is not None and not mr.sqlite_path(uri).exists():
        raise MonaError(f"--tracking-uri {uri}: no MLflow store at {mr.sqlite_path(uri)}")
    curves, metrics = [], set()
    for name in names:
        curve, metric = stored_curve(uri, name, task)
        curves.append(curve)
        metrics.add(metric)
        print(f"{name}: {curve.describe()}", file=out)
    if len(metrics) > 1:
        raise MonaError("--curves: the searches report different metrics ("
                        + ", ".join(sorted(metrics)) + ")")
    title = "incumbent of " + ", ".join(names)
    plot_incumbents(curves, metrics.pop(), Path(out_path), title)
    print(f"incumbent curves: {out_path}", file=out)
    return 0
