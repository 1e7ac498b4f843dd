"""The end of a search: every trial's validation curve (a PNG) and the printed summary."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mona_tune.tracking import mlflow_runs as mr

if TYPE_CHECKING:
    from mona_tune.config import SearchConfig
    from mona_tune.search.driver import SearchOutcome


def plot_curves(rows: list[dict], metric: str, outcomes: dict, best_trial: str | None,
                path: Path, title: str) -> Path:
    """All trials' validation curves; stage-1 epochs at x <= 0, early-stopped trials end in ×,
    failed ones in a red ×, the best trial drawn thick."""
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
        elif outcome == "failed":
            ax.plot(x.iloc[-1], y.iloc[-1], "x", ms=10, mew=2.5, color="red", zorder=4)
    ax.axvline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("stage-2 epoch (stage-1 epochs at ≤ 0)")
    ax.set_ylabel(metric)
    if any_positive:
        ax.set_yscale("log")
    ax.set_title(title + "   (dashed: stage 1; × early-stopped; red ×: failed)", fontsize=9)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles and len(handles) <= 16:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def ui_command(tracking_uri: str) -> str:
    if mr.is_sqlite(tracking_uri):
        return f"mona-tune ui --tracking-uri {shlex.quote(tracking_uri)}"
    return f"open {mr.redact(tracking_uri)} (the tracking server's own UI)"


def print_summary(o: SearchOutcome, scfg: SearchConfig, metric_name: str, counts: dict,
                  say) -> None:
    say("")
    say(f"== search {o.name} done: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                  for k, v in counts.items()))
    if o.best_trial_id is None:
        say("no trial reported a validation metric; see the errors above and "
            f"{o.experiment_path}")
    else:
        m = o.best_metrics
        say(f"best trial {o.best_trial_id}: {o.metric} = {_fmt(m.get(o.metric))}"
            + (f", test_{metric_name} = {_fmt(m[f'test_{metric_name}'])}"
               if f"test_{metric_name}" in m else "")
            + f", source_probe_error = {_fmt(m.get('source_probe_error', 'n/a'))}")
        say("  hyperparameters: " + ", ".join(f"{k}={_fmt(v)}" for k, v in o.best_config.items()))
        say(f"  MLflow run: {o.best_run_id} (parent {o.parent_run_id})")
        if o.best_run_id:
            say(f"  embedder: runs:/{o.best_run_id}/{mr.EMBEDDER_ARTIFACT}"
                + (f"  = models:/{mr.registered_model_name(scfg.task)}@best (version "
                   f"{o.model_version})" if o.model_version else ""))
            if o.embedder_location:
                say(f"    stored in {o.embedder_location}")
            say(f"  export it: mona-tune best --name {o.name} --tracking-uri "
                f"{shlex.quote(mr.redact(scfg.tracking_uri))} --export DIR")
    if o.nodes:
        say(f"trials ran on {len(o.nodes)} node{'s' if len(o.nodes) > 1 else ''}: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(o.nodes.items())))
    say(f"validation curves: {o.curves_png}")
    say(f"MLflow UI: {ui_command(scfg.tracking_uri)}")
    t = o.timings
    parts = [f"{k.removesuffix('_s')} {v:.1f}s" for k, v in t.items() if isinstance(v, float)]
    say("time: " + ", ".join(parts))
