"""The search's figures: every trial's validation curve, and the searched values against the
metric. ``curves_figure`` and ``trials_figure`` draw them; ``plot_curves`` and ``plot_trials``
save them as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mona_tune.report.values import num

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _curve_xy(df, metric: str):
    """A trial's epochs (stage-2 epochs from 1, stage-1 ones at x <= 0) and its metric; None
    where it has no value of the metric."""
    if df is None or metric not in getattr(df, "columns", []) or df.empty:
        return None
    df = df.dropna(subset=[metric])
    if df.empty:
        return None
    if "global_epoch" in df.columns and "stage" in df.columns:
        is2 = df["stage"] == 2
        s1 = int(df.loc[is2, "global_epoch"].min() - 1) if is2.any() \
            else int(df["global_epoch"].max())
        x = df["global_epoch"].astype(float) - s1
    else:
        x = df["stage2_epoch"].astype(float)
    return x, df[metric].astype(float)


def _draw_curve(ax, x, y, label: str, best: bool, outcome: str) -> None:
    lw, alpha, z = (2.6, 1.0, 3) if best else (1.1, 0.75, 2)
    s2 = (x > 0).to_numpy()
    line, = ax.plot(x[s2], y[s2], "-o", ms=2.5, lw=lw, alpha=alpha, label=label, zorder=z)
    if (~s2).any():  # stage 1, dashed, joined to the first stage-2 epoch
        k = int(s2.argmax()) + 1 if s2.any() else len(x)
        ax.plot(x.iloc[:k], y.iloc[:k], "--o", ms=2.0, lw=lw * 0.8, alpha=alpha * 0.8,
                color=line.get_color(), zorder=z)
    if outcome == "stopped_early":
        ax.plot(x.iloc[-1], y.iloc[-1], "x", ms=9, mew=2, color=line.get_color(), zorder=4)
    elif outcome in ("failed", "diverged"):
        ax.plot(x.iloc[-1], y.iloc[-1], "x", ms=10, mew=2.5, color="red", zorder=4)


def curves_figure(rows: list[dict], metric: str, outcomes: dict, best_trial: str | None,
                  title: str) -> Figure:
    """All trials' validation curves; stage-1 epochs at x <= 0, early-stopped trials end in ×,
    failed and diverged ones in a red ×, the best trial drawn thick."""
    fig, ax = _pyplot().subplots(figsize=(8, 5), dpi=110)
    any_positive = False
    for row in rows:
        xy = _curve_xy(row["df"], metric)
        if xy is None:
            continue
        x, y = xy
        any_positive = any_positive or bool((y > 0).all())
        best = row["trial_id"] == best_trial
        _draw_curve(ax, x, y, row["trial_id"] + (" (best)" if best else ""), best,
                    outcomes.get(row["trial_id"], ("?",))[0])
    ax.axvline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("stage-2 epoch (stage-1 epochs at ≤ 0)")
    ax.set_ylabel(metric)
    if any_positive:
        ax.set_yscale("log")
    ax.set_title(title + "   (dashed: stage 1; × early-stopped; red ×: failed or diverged)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles and len(handles) <= 16:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def plot_curves(rows: list[dict], metric: str, outcomes: dict, best_trial: str | None,
                path: Path, title: str) -> Path:
    """:func:`curves_figure` saved at ``path``."""
    return _save(curves_figure(rows, metric, outcomes, best_trial, title), path)


_STYLES = {"completed": dict(marker="o", color="tab:blue", label="completed"),
           "stopped_early": dict(marker="x", color="0.45", label="stopped early"),
           "failed": dict(marker="x", color="red", label="failed"),
           "diverged": dict(marker="x", color="darkorange", label="diverged")}


def _y_range(table: list[dict]) -> tuple[bool, float]:
    """Whether the metric axis is logarithmic, and the height at which trials without a metric
    are drawn (above the others)."""
    ys = [r["last"] for r in table if r["last"] is not None]
    log_y = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20
    top = (max(ys) * (1.5 if log_y else 1.0) + (0.0 if log_y else 0.1 * (max(ys) - min(ys))
                                                 or 0.1 * abs(max(ys)) or 1.0)) if ys else 1.0
    return log_y, top


def _panel_xs(ax, key: str, table: list[dict]) -> list:
    """The x of each trial in the panel of ``key`` (None: not drawn); categories are placed at
    0, 1, ... in sorted order, a wide positive range on a log axis."""
    raw = [r["config"].get(key) if key != "trial" else n for n, r in enumerate(table)]
    nums = [num(v) for v in raw]
    if any(x is None and v is not None for x, v in zip(nums, raw)):
        cats = sorted({str(v) for v in raw}, key=str)
        ax.set_xticks(range(len(cats)), cats, fontsize=7)
        return [cats.index(str(v)) for v in raw]
    pos = [x for x in nums if x is not None]
    if pos and min(pos) > 0 and max(pos) / min(pos) >= 20:
        ax.set_xscale("log")
    return nums


def _draw_panel(ax, key: str, table: list[dict], best_trial: str | None, top: float) -> None:
    seen = set()
    for r, x in zip(table, _panel_xs(ax, key, table)):
        if x is None:
            continue
        st = dict(_STYLES.get(r["outcome"], dict(marker=".", color="k", label="other")))
        label = st.pop("label")
        y = r["last"]
        if y is None:  # no metric (failed early): drawn above the others
            y = top
        ax.scatter([x], [y], s=36, label=None if label in seen else label, **st)
        seen.add(label)
        if r["trial_id"] == best_trial and r["last"] is not None:
            ax.scatter([x], [y], s=220, marker="*", facecolors="none",
                       edgecolors="goldenrod", linewidths=1.5,
                       label=None if "best" in seen else "best")
            seen.add("best")


def trials_figure(table: list[dict], *, metric: str, searched: list[str],
                  best_trial: str | None, title: str) -> Figure:
    """One panel per searched hyperparameter: its value against the trial's last validation
    metric; completed ●, early-stopped ×, failed red × (above the others where it has no
    metric), the best trial ★."""
    import math

    keys = list(searched) or ["trial"]
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = _pyplot().subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), dpi=110,
                                   squeeze=False)
    log_y, top = _y_range(table)
    for i, key in enumerate(keys):
        ax = axes[i // ncols][i % ncols]
        _draw_panel(ax, key, table, best_trial, top)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"last {metric}")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    for j in range(len(keys), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.suptitle(f"{title}: searched values vs {metric}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_trials(table: list[dict], path: Path, *, metric: str, searched: list[str],
                best_trial: str | None, title: str) -> Path:
    """:func:`trials_figure` saved at ``path``."""
    return _save(trials_figure(table, metric=metric, searched=searched, best_trial=best_trial,
                               title=title), path)
