"""The search's figures: every trial's validation curve, and the searched values against the
metric."""

from __future__ import annotations

from pathlib import Path

from mona_tune.report.values import num


def plot_curves(rows: list[dict], metric: str, outcomes: dict, best_trial: str | None,
                path: Path, title: str) -> Path:
    """All trials' validation curves; stage-1 epochs at x <= 0, early-stopped trials end in ×,
    failed and diverged ones in a red ×, the best trial drawn thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    any_positive = False
    for row in rows:
        df = row["df"]
        if df is None or metric not in getattr(df, "columns", []) or df.empty:
            continue
        df = df.dropna(subset=[metric])
        if df.empty:
            continue
        if "global_epoch" in df.columns and "stage" in df.columns:
            is2 = df["stage"] == 2
            s1 = int(df.loc[is2, "global_epoch"].min() - 1) if is2.any() \
                else int(df["global_epoch"].max())
            x = df["global_epoch"].astype(float) - s1
        else:
            x = df["stage2_epoch"].astype(float)
        y = df[metric].astype(float)
        any_positive = any_positive or bool((y > 0).all())
        outcome = outcomes.get(row["trial_id"], ("?",))[0]
        best = row["trial_id"] == best_trial
        label = row["trial_id"] + (" (best)" if best else "")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# long: one matplotlib figure drawn top to bottom; split, its steps would share a dozen locals
def plot_trials(table: list[dict], path: Path, *, metric: str, searched: list[str],
                best_trial: str | None, title: str) -> Path:
    """One panel per searched hyperparameter: its value against the trial's last validation
    metric; completed ●, early-stopped ×, failed red × (above the others where it has no
    metric), the best trial ★."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(searched) or ["trial"]
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), dpi=110,
                             squeeze=False)
    ys = [r["last"] for r in table if r["last"] is not None]
    log_y = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20
    top = (max(ys) * (1.5 if log_y else 1.0) + (0.0 if log_y else 0.1 * (max(ys) - min(ys))
                                                 or 0.1 * abs(max(ys)) or 1.0)) if ys else 1.0
    styles = {"completed": dict(marker="o", color="tab:blue", label="completed"),
              "stopped_early": dict(marker="x", color="0.45", label="stopped early"),
              "failed": dict(marker="x", color="red", label="failed"),
              "diverged": dict(marker="x", color="darkorange", label="diverged")}
    for i, key in enumerate(keys):
        ax = axes[i // ncols][i % ncols]
        raw = [r["config"].get(key) if key != "trial" else n for n, r in enumerate(table)]
        nums = [num(v) for v in raw]
        categorical = any(x is None and v is not None for x, v in zip(nums, raw))
        if categorical:
            cats = sorted({str(v) for v in raw}, key=str)
            xs = [cats.index(str(v)) for v in raw]
            ax.set_xticks(range(len(cats)), cats, fontsize=7)
        else:
            xs = nums
            pos = [x for x in xs if x is not None]
            if pos and min(pos) > 0 and max(pos) / min(pos) >= 20:
                ax.set_xscale("log")
        seen = set()
        for r, x in zip(table, xs):
            if x is None:
                continue
            st = dict(styles.get(r["outcome"], dict(marker=".", color="k", label="other")))
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
