"""``mona-tune compare``: the methods side by side, as in the paper's tables and Figure 3.

Every method runs with every seed on the same budget (the same stage-2 epochs; the methods with a
stage 1 add the same ``warmup_epochs`` before it) and the same data; ``source_probe_error`` is
measured after every stage-2 epoch. Written to ``--out``:

- ``table.md`` and ``table.json``: mean ± std over seeds of the test metric and
  ``source_probe_error`` per method (and the pretrained reference);
- ``runs.json``: every run's final metrics and per-epoch history;
- ``curves.png``: left, the validation metric per epoch (stage-1 epochs at x ≤ 0); right,
  ``source_probe_error`` against fine-tuning epochs with the pretrained encoder's as a dashed
  line (the paper's Figure 3).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from mona_tune.config import METHODS, TrainConfig
from mona_tune.errors import MonaError


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="darcy")
    parser.add_argument("--methods", default=",".join(("ft", "emb", "orca", "mona", "scratch")),
                        help="comma-separated methods (default: all five)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method")
    parser.add_argument("--epochs", type=int, default=None, help="stage-2 epochs of every run")
    parser.add_argument("--warmup-epochs", type=int, default=None,
                        help="stage-1 epochs of emb, orca and mona")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of TrainConfig fields shared by every run")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda")
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: runs/compare-<task>)")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=run_compare)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise MonaError(f"--methods: unknown {', '.join(unknown) or '(none given)'} "
                        f"(choose from {', '.join(METHODS)})")
    return methods


def compare(base: TrainConfig, methods: list[str], seeds: int, log=None) -> dict:
    """Run ``methods × seeds`` from ``base``; return the runs and their summary."""
    from mona_tune.train.trainer import Trainer

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
                    f"source_probe_error {final['source_probe_error']:.3f}  "
                    f"({final['seconds']:.0f} s)")
    metric = runs[0]["final"] if runs else {}
    key = next((k for k in metric if k.startswith("test_")), "test_metric")
    return {"task": base.task, "metric": key.removeprefix("test_"), "methods": methods,
            "seeds": seeds, "epochs": base.epochs, "warmup_epochs": base.warmup_epochs,
            "summary": summarise(runs, methods, key), "runs": runs}


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict], methods: list[str], key: str) -> dict:
    out = {}
    for method in methods:
        finals = [r["final"] for r in runs if r["method"] == method]
        out[method] = {
            key: _mean_std([f[key] for f in finals]),
            "source_probe_error": _mean_std([f["source_probe_error"] for f in finals]),
            "seconds": _mean_std([f["seconds"] for f in finals]),
            "n": len(finals),
        }
    pre = [r["final"]["source_probe_error_pretrained"] for r in runs]
    out["pretrained"] = {"source_probe_error": _mean_std(pre)}
    return out


def markdown_table(result: dict) -> str:
    metric, s = result["metric"], result["summary"]
    lines = [f"{result['task']}: {result['seeds']} seeds, {result['warmup_epochs']} stage-1 + "
             f"{result['epochs']} stage-2 epochs (mean ± std over seeds)", "",
             f"| method | test {metric} | source_probe_error | seconds |",
             "| --- | --- | --- | --- |"]
    for method in result["methods"]:
        row = s[method]
        t, p, sec = row[f"test_{metric}"], row["source_probe_error"], row["seconds"]
        lines.append(f"| {method} | {t[0]:.4f} ± {t[1]:.4f} | {p[0]:.3f} ± {p[1]:.3f} | "
                     f"{sec[0]:.0f} |")
    pre = s["pretrained"]["source_probe_error"][0]
    lines.append(f"| (pretrained encoder) | | {pre:.3f} | |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metric, warmup = result["metric"], result["warmup_epochs"]

    def _x(h: dict) -> int:  # stage-1 epochs at 1 - warmup .. 0, fine-tuning epochs at 1, 2, ...
        return h["stage2_epoch"] if h["stage"] == 2 else h["epoch"] - warmup

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in result["methods"]:
        hists = [r["history"] for r in result["runs"] if r["method"] == method]
        # validation metric per epoch (mean over seeds)
        xs = sorted({_x(h) for hist in hists for h in hist})
        ys = np.array([[next((h[f"val_{metric}"] for h in hist if _x(h) == x), np.nan)
                        for x in xs] for hist in hists])
        (line,) = left.plot(xs, np.nanmean(ys, 0), marker="o", ms=3, label=method)
        # source probe error per fine-tuning epoch
        px = sorted({h["stage2_epoch"] for hist in hists for h in hist
                     if "source_probe_error" in h})
        py = np.array([[next((h["source_probe_error"] for h in hist
                              if h["stage2_epoch"] == x and "source_probe_error" in h), np.nan)
                        for x in px] for hist in hists])
        mean, std = np.nanmean(py, 0), np.nanstd(py, 0)
        right.plot(px, mean, marker="o", ms=3, color=line.get_color(), label=method)
        right.fill_between(px, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    pre = result["summary"]["pretrained"]["source_probe_error"][0]
    right.axhline(pre, ls="--", color="k", lw=1, label="pretrained")
    left.axvline(0.5, color="grey", lw=0.8, ls=":")
    left.set(xlabel="epoch (stage 1 at x ≤ 0, fine-tuning at x ≥ 1)", ylabel=f"val {metric}",
             title=f"{result['task']}: validation {metric}", yscale="log")
    right.set(xlabel="fine-tuning epoch", ylabel="source probe error",
              title="source knowledge retained (lower = more)")
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(fontsize=8)
    right.legend(fontsize=8)
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


def base_config(args: argparse.Namespace) -> TrainConfig:
    from mona_tune.train.cli_args import _read_yaml

    values = _read_yaml(args.config) if args.config else {}
    values["task"] = args.task
    for field in ("epochs", "warmup_epochs", "device", "num_threads"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    return TrainConfig(**values)


def run_compare(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    if args.seeds < 1:
        raise MonaError("--seeds must be at least 1")
    base = base_config(args)
    out = args.out or Path("runs") / f"compare-{args.task}"

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = compare(base, methods, args.seeds, log)
    write_outputs(result, out)
    print(markdown_table(result))
    print(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'runs.json'}, "
          f"{out / 'curves.png'}", file=sys.stderr)
    return 0
