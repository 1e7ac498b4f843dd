"""``mona-tune compare``: the methods side by side, as evidence for or against the paper's claims.

Every method runs with every seed on the same budget (the same stage-2 epochs; the methods with a
stage 1 add the same ``warmup_epochs`` before it) and the same data; ``source_probe_error`` is
measured after every stage-2 epoch. Seed ``s`` of every method sees the same data, so the methods
are compared seed by seed: MoNA's claims (lower target error and lower source probe error than
``ft`` and ``emb``) are tested on the paired differences ``mona − other`` with a 95 % t-interval
over seeds, and stated in words: *holds* (the interval lies on the claimed side of 0), *does not
hold* (it lies on the other side), *within noise* (it contains 0). ``scratch`` (no source model)
and ``ridge`` (a linear map, :mod:`mona_tune.train.ridge`) are the reference rows. Written to
``--out``:

- ``table.md`` and ``table.json``: mean ± standard error over seeds (and the standard deviation)
  of the test metric and ``source_probe_error`` per method, the references, the paired differences
  and their verdicts;
- ``runs.json``: every run's final metrics and per-epoch history;
- ``curves.png``: the validation metric per epoch (stage-1 epochs at x ≤ 0; ridge as a line),
  ``source_probe_error`` per fine-tuning epoch (± standard error; the pretrained encoder's as a
  line: the paper's Figure 3), and the paired differences with their intervals.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from mona_tune.config import METHODS, TrainConfig
from mona_tune.errors import MonaError

PROBE = "source_probe_error"
CLAIMS = (("mona", "ft"), ("mona", "emb"))  # (method, the one it is claimed to beat)
REFERENCES = ("scratch",)  # method rows shown as references (plus ridge)
LEVEL = 0.95
HOLDS, FAILS, NOISE, FEW = "holds", "does not hold", "within noise", "too few seeds"


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise MonaError(f"--methods: unknown {', '.join(unknown) or '(none given)'} "
                        f"(choose from {', '.join(METHODS)})")
    return methods


# ---------------------------------------------------------------- statistics
def describe(values: list[float]) -> dict:
    """``{"mean", "sd", "se", "n"}`` of the finite ``values`` (``se = sd / √n``)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if not n:
        return {"mean": math.nan, "sd": math.nan, "se": math.nan, "n": 0}
    sd = statistics.stdev(values) if n > 1 else math.nan
    return {"mean": statistics.fmean(values), "sd": sd, "se": sd / math.sqrt(n), "n": n}


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of ``values`` (NaN below 2 values)."""
    from scipy import stats

    d = describe(values)
    if d["n"] < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, d["n"] - 1) * d["se"]
    return d["mean"] - half, d["mean"] + half


def verdict(low: float, high: float, direction: str) -> str:
    """The claim "the difference is below 0" (``min``; above 0 for ``max``) in words."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return FEW
    if direction == "max":
        low, high = -high, -low
    if high < 0:
        return HOLDS
    if low > 0:
        return FAILS
    return NOISE


def paired(runs: list[dict], method: str, other: str, key: str, direction: str) -> dict:
    """``method − other`` on ``key``, paired by seed (seeds both ran), with its interval."""
    by_seed = {(r["method"], r["seed"]): r["final"].get(key) for r in runs}
    diffs = [by_seed[(method, s)] - by_seed[(other, s)]
             for s in sorted({r["seed"] for r in runs})
             if by_seed.get((method, s)) is not None and by_seed.get((other, s)) is not None]
    d = describe(diffs)
    low, high = t_interval(diffs)
    return {"method": method, "other": other, "quantity": key, "mean": d["mean"], "se": d["se"],
            "low": low, "high": high, "n": d["n"], "verdict": verdict(low, high, direction)}


def summarise(runs: list[dict], methods: list[str], key: str) -> dict:
    out = {}
    for method in methods:
        finals = [r["final"] for r in runs if r["method"] == method]
        out[method] = {key: describe([f[key] for f in finals]),
                       PROBE: describe([f[PROBE] for f in finals]),
                       "seconds": describe([f["seconds"] for f in finals]), "n": len(finals)}
    out["pretrained"] = {PROBE: describe([r["final"][f"{PROBE}_pretrained"] for r in runs])}
    return out


def claims(runs: list[dict], methods: list[str], key: str, direction: str) -> list[dict]:
    """The paired differences of every claim whose two methods both ran."""
    return [paired(runs, m, o, q, d) for m, o in CLAIMS if m in methods and o in methods
            for q, d in ((key, direction), (PROBE, "min"))]


# ---------------------------------------------------------------- the runs
def compare(base: TrainConfig, methods: list[str], seeds: int, log=None) -> dict:
    """Run ``methods × seeds`` from ``base`` and the ridge reference; return runs and summary."""
    from mona_tune.tasks import resolve_task
    from mona_tune.train import loaded
    from mona_tune.train.ridge import ridge_baseline
    from mona_tune.train.trainer import Trainer

    task = resolve_task(base)
    runs = []
    for seed in range(seeds):
        for method in methods:
            cfg = TrainConfig(**{**base.model_dump(), "method": method, "seed": seed,
                                 "probe_every": 1, "first_order": False})
            trainer = Trainer(cfg)
            final = trainer.fit()
            runs.append({"method": method, "seed": seed, "final": final,
                         "history": trainer.history})
            if log:
                m = trainer.metric
                log(f"[compare] {method} seed {seed}: test_{m} {final[f'test_{m}']:.4g}  "
                    f"{PROBE} {final[PROBE]:.3f} ± {final[f'{PROBE}_se']:.3f}  "
                    f"({final['seconds']:.0f} s)")
    ridge = ridge_baseline(loaded.task_data(base), task)
    if log and ridge:
        log(f"[compare] {ridge['name']}: test_{task.metric} {ridge[f'test_{task.metric}']:.4g} "
            f"(alpha {ridge['alpha']:g} on validation, {ridge['seconds']:.0f} s)")
    key = f"test_{task.metric}"
    return {"task": base.task, "metric": task.metric, "direction": task.direction,
            "methods": methods, "seeds": seeds, "epochs": base.epochs,
            "warmup_epochs": base.warmup_epochs, "summary": summarise(runs, methods, key),
            "ridge": ridge, "paired": claims(runs, methods, key, task.direction), "runs": runs}


# ---------------------------------------------------------------- the table and the figure
def _cell(d: dict, digits: int) -> str:
    if d["n"] < 2:
        return f"{d['mean']:.{digits}f} (one seed)" if d["n"] else "n/a"
    return f"{d['mean']:.{digits}f} ± {d['se']:.{digits}f} (sd {d['sd']:.{digits}f})"


def markdown_table(result: dict) -> str:
    metric, s = result["metric"], result["summary"]
    key = f"test_{metric}"
    lines = [f"{result['task']}: {result['seeds']} seeds, {result['warmup_epochs']} stage-1 + "
             f"{result['epochs']} stage-2 epochs; mean ± standard error over seeds "
             f"(sd: standard deviation)", "",
             f"| method | test {metric} | {PROBE} | seconds |", "| --- | --- | --- | --- |"]
    for method in result["methods"]:
        row = s[method]
        name = f"{method} (reference)" if method in REFERENCES else method
        lines.append(f"| {name} | {_cell(row[key], 4)} | {_cell(row[PROBE], 3)} | "
                     f"{row['seconds']['mean']:.0f} |")
    ridge = result.get("ridge") or {}
    if ridge:
        lines.append(f"| {ridge.get('name', 'ridge')} (reference; α = {ridge['alpha']:g} chosen "
                     "on validation) | "
                     f"{ridge[key]:.4f} | | {ridge['seconds']:.0f} |")
    lines.append(f"| (pretrained encoder) | | {s['pretrained'][PROBE]['mean']:.3f} | |")
    if result.get("paired"):
        lines += ["", f"Paired differences (same seed, same data): mean and {LEVEL:.0%} "
                  f"t-interval over seeds; each claim is that the first method's value is "
                  f"{'lower' if result['direction'] == 'min' else 'higher'} for test {metric} "
                  f"and lower for {PROBE}.", "",
                  f"| claim | quantity | difference | {LEVEL:.0%} interval | seeds | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for p in result["paired"]:
            digits = 4 if p["quantity"] == key else 3
            quantity = f"test {metric}" if p["quantity"] == key else PROBE
            interval = (f"[{p['low']:+.{digits}f}, {p['high']:+.{digits}f}]"
                        if math.isfinite(p["low"]) else "n/a")
            lines.append(f"| {p['method']} − {p['other']} | {quantity} | "
                         f"{p['mean']:+.{digits}f} | {interval} | {p['n']} | {p['verdict']} |")
    return "\n".join(lines)


def headline(result: dict) -> str:
    """One line: the verdicts, then the test metric of every method and the references."""
    metric, s = result["metric"], result["summary"]
    key = f"test_{metric}"
    verdicts = "; ".join(f"{p['method']} vs {p['other']} "
                         f"{'test' if p['quantity'] == key else 'probe'}: {p['verdict']}"
                         for p in result["paired"])
    tests = ", ".join(f"{m} {s[m][key]['mean']:.4f}" for m in result["methods"])
    ridge = result.get("ridge") or {}
    ref = f", {ridge.get('name', 'ridge')} {ridge[key]:.4f}" if ridge else ""
    return (f"{verdicts or 'no paired claim'} | test {metric}: {tests}{ref} "
            f"({result['seeds']} seeds)")


# long: one matplotlib figure of three panels, drawn top to bottom
def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    metric, warmup = result["metric"], result["warmup_epochs"]

    def _x(h: dict) -> int:  # stage-1 epochs at 1 - warmup .. 0, fine-tuning epochs at 1, 2, ...
        return h["stage2_epoch"] if h["stage"] == 2 else h["epoch"] - warmup

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.4))
    (curves, probes), (diff_test, diff_probe) = axes
    for method in result["methods"]:
        hists = [r["history"] for r in result["runs"] if r["method"] == method]
        # validation metric per epoch (mean over seeds)
        xs = sorted({_x(h) for hist in hists for h in hist})
        ys = np.array([[next((h[f"val_{metric}"] for h in hist if _x(h) == x), np.nan)
                        for x in xs] for hist in hists])
        (line,) = curves.plot(xs, np.nanmean(ys, 0), marker="o", ms=3, label=method)
        # source probe error per fine-tuning epoch: mean ± standard error over seeds
        px = sorted({h["stage2_epoch"] for hist in hists for h in hist if PROBE in h})
        py = np.array([[next((h[PROBE] for h in hist if h["stage2_epoch"] == x and PROBE in h),
                             np.nan) for x in px] for hist in hists])
        mean = np.nanmean(py, 0)
        se = np.nanstd(py, 0, ddof=1) / np.sqrt(len(py)) if len(py) > 1 else np.zeros_like(mean)
        probes.plot(px, mean, marker="o", ms=3, color=line.get_color(), label=method)
        probes.fill_between(px, mean - se, mean + se, color=line.get_color(), alpha=0.15)
    ridge = result.get("ridge") or {}
    if ridge:
        curves.axhline(ridge[f"val_{metric}"], ls="--", color="grey", lw=1,
                       label=ridge.get("name", "ridge"))
    pre = result["summary"]["pretrained"][PROBE]["mean"]
    probes.axhline(pre, ls="--", color="k", lw=1, label="pretrained")
    curves.axvline(0.5, color="grey", lw=0.8, ls=":")
    curves.set(xlabel="epoch (stage 1 at x ≤ 0, fine-tuning at x ≥ 1)", ylabel=f"val {metric}",
               title=f"{result['task']}: validation {metric}", yscale="log")
    probes.set(xlabel="fine-tuning epoch", ylabel="source probe error (± s.e.)",
               title="source knowledge retained (lower = more)")
    for ax, key, label in ((diff_test, f"test_{metric}", f"test {metric}"),
                           (diff_probe, PROBE, "source probe error")):
        rows = [p for p in result.get("paired", []) if p["quantity"] == key]
        for i, p in enumerate(rows):
            err = [[p["mean"] - p["low"]], [p["high"] - p["mean"]]]
            ax.errorbar([i], [p["mean"]], yerr=err, fmt="o", capsize=6, color="C0")
            ax.annotate(p["verdict"], (i, p["high"] if math.isfinite(p["high"]) else p["mean"]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(rows)), [f"{p['method']} − {p['other']}" for p in rows])
        ax.set_xlim(-0.6, max(len(rows), 1) - 0.4)
        side = "above" if key != PROBE and result["direction"] == "max" else "below"
        ax.margins(y=0.15)
        ax.set(ylabel=f"paired difference, {LEVEL:.0%} interval",
               title=f"{label}: interval {side} 0 = the claim holds")
    for ax in (curves, probes):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> None:
    from mona_tune.cache import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(result)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(table + "\n")
    with atomic_path(out / "table.json") as tmp:
        tmp.write_text(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    with atomic_path(out / "runs.json") as tmp:
        tmp.write_text(json.dumps(result["runs"], indent=1))
    with atomic_path(out / "curves.png") as tmp:
        plot(result, tmp)


