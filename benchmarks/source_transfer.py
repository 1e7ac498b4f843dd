"""Does the embedded source help? Fine-tuning each embedded source model against training from scratch.

For every source (``digits``, ``fractals``): ``ft`` (fine-tune the pretrained Swin) over seeds,
at the default search's fixed settings (``mona_tune/search_spaces/darcy.yaml``: data size,
epochs, batch); ``scratch`` (the same architecture randomly initialised) on the same seeds; the
paired difference ft − scratch with its 95 % t-interval and the verdict in words; ridge
regression as a reference. Prints a markdown table and, as its last line, the verdicts.

    python benchmarks/source_transfer.py [--seeds 5] [--sources digits,fractals] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import sys
import time

from mona_tune.config import TrainConfig
from mona_tune.search.space import load_space, resolve_space_path
from mona_tune.tasks import get_task
from mona_tune.train import loaded
from mona_tune.train.ridge import ridge_baseline
from mona_tune.train.compare import describe, paired
from mona_tune.train.trainer import Trainer


def run(cfg: TrainConfig) -> float:
    final = Trainer(cfg).fit()
    return final[f"test_{get_task(cfg.task).metric}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sources", default="digits,fractals")
    ap.add_argument("--lr", type=float, default=None, help="stage-2 learning rate (default: "
                    "TrainConfig's)")
    args = ap.parse_args()
    space = load_space(resolve_space_path(None, "darcy"), "darcy")
    fixed = {k: v for k, v in space.fixed.items() if k != "method"}
    if args.lr is not None:
        fixed["lr"] = args.lr
    base = TrainConfig(task="darcy", **fixed)
    key = f"test_{get_task(base.task).metric}"
    runs: list[dict] = []

    def record(label: str, seed: int, **extra) -> None:
        t0 = time.perf_counter()
        value = run(TrainConfig(**{**base.model_dump(), "seed": seed, **extra}))
        runs.append({"method": label, "seed": seed, "final": {key: value}})
        print(f"[source] {label} seed {seed}: {key} {value:.4f} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)

    sources = [s for s in args.sources.split(",") if s]
    for seed in range(args.seeds):
        record("scratch", seed, method="scratch")
        for source in sources:
            record(f"ft[{source}]", seed, method="ft", source_data=source)
    ridge = ridge_baseline(loaded.task_data(base), get_task(base.task))

    print(f"darcy, {base.n_train} samples, {base.epochs} stage-2 epochs, batch {base.batch_size}, "
          f"lr {base.lr:g}, {args.seeds} seeds (mean ± standard error)\n")
    print(f"| run | {key} | ft − scratch (95 % CI) | verdict: the source helps |")
    print("| --- | --- | --- | --- |")
    verdicts = []
    for label in ["scratch"] + [f"ft[{s}]" for s in sources]:
        d = describe([r["final"][key] for r in runs if r["method"] == label])
        cells = ["", ""]
        if label != "scratch":
            p = paired(runs, label, "scratch", key, "min")
            cells = [f"{p['mean']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]", p["verdict"]]
            verdicts.append(f"{label} − scratch {p['mean']:+.4f}: {p['verdict']}")
        print(f"| {label} | {d['mean']:.4f} ± {d['se']:.4f} | {cells[0]} | {cells[1]} |")
    if ridge:
        print(f"| ridge (alpha {ridge['alpha']:g}) | {ridge[key]:.4f} | | |")
    print()
    print("; ".join(verdicts) + (f"; ridge {ridge[key]:.4f}" if ridge else ""))


if __name__ == "__main__":
    main()
