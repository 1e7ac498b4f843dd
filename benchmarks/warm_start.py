"""Warm start vs cold: does a search that learns from the last one reach its best sooner?

Per seed, on the embedded Darcy default (its packaged space, with fewer training samples and
stage-2 epochs to keep it small): a first search at ``n_train`` = --first-n-train, then a second
search at --second-n-train (one fixed setting changed), run cold and warm-started from the first
(``--warm-start <first>``), with the same sampler seed and trial budget. From each search's
incumbent curve (best validation metric so far, from its trials' runs in MLflow):

- the target is the cold search's final best;
- for the cold and the warm search: the trial and the stage-2 epochs spent when the incumbent
  first reached the target ("-" where the warm search never did), and the final best;
- savings = cold epochs to the target / warm epochs to the target (0 where not reached).

    python benchmarks/warm_start.py [--seeds 0 1 2] [--num-samples 8]

Writes ``warm_start_epoch_savings`` (one value per seed) into benchmarks/results.json (merged).
The last line is the headline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # results_json
OUT = ROOT / "benchmarks" / "out" / "warm_start"


def run_one(name: str, n_train: int, seed: int, args, warm_from: str | None = None):
    """One search; returns its incumbent curve (tracking.incumbent.IncumbentCurve)."""
    from mona_tune.report.incumbent import stored_curve
    from mona_tune.search.driver import run_search
    from mona_tune.search.plan import SearchRequest, plan_search

    uri = f"sqlite:///{OUT / 'mlflow.db'}"
    plan = plan_search(SearchRequest(
        task="darcy", name=name, storage=str(OUT / "runs"), tracking_uri=uri, seed=seed,
        num_samples=args.num_samples, max_concurrent=args.max_concurrent,
        fixed={"n_train": n_train, "epochs": args.epochs}, quiet=True, register_model=False,
        warm_start=warm_from))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        run_search(plan.scfg, plan.space, plan.param_space, resume=False,
                   space_yaml=plan.space_yaml)
    for line in log.getvalue().splitlines():
        if line.startswith("warm start:"):
            print(f"  {name}: {line}", file=sys.stderr)
    return stored_curve(uri, name, "darcy")[0]


def compare(seed: int, args, stamp: str) -> dict:
    first = f"first-s{seed}-{stamp}"
    run_one(first, args.first_n_train, seed, args)
    cold = run_one(f"cold-s{seed}-{stamp}", args.second_n_train, seed, args)
    warm = run_one(f"warm-s{seed}-{stamp}", args.second_n_train, seed, args, warm_from=first)
    target = cold.best
    c, w = cold.reached(target, "min"), warm.reached(target, "min")
    return {"seed": seed, "target": target, "cold": c, "warm": w,
            "cold_best": cold.best, "warm_best": warm.best,
            "cold_epochs": cold.total_epochs, "warm_epochs": warm.total_epochs,
            "savings": (c[1] / w[1]) if w else 0.0}


def _fmt(reached) -> tuple[str, str]:
    return ("-", "-") if reached is None else (str(reached[0]), str(reached[1]))


def print_table(rows: list[dict]) -> None:
    print("seed  cold best  warm best  cold trial/epochs to it  warm trial/epochs to it  "
          "savings  epochs spent cold/warm")
    for r in rows:
        (ct, ce), (wt, we) = _fmt(r["cold"]), _fmt(r["warm"])
        print(f"{r['seed']:>4}  {r['cold_best']:9.4f}  {r['warm_best']:9.4f}  "
              f"{ct + ' / ' + ce:>23}  {wt + ' / ' + we:>23}  {r['savings']:6.2f}x  "
              f"{r['cold_epochs']:>10} / {r['warm_epochs']}")


def write_results(rows: list[dict]) -> None:
    from results_json import record

    record("warm_start_epoch_savings", {str(r["seed"]): round(r["savings"], 3) for r in rows},
           goal=">= 2x in every seed", command="python benchmarks/warm_start.py")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4, help="stage-2 epochs (ASHA's max_t)")
    p.add_argument("--first-n-train", type=int, default=300)
    p.add_argument("--second-n-train", type=int, default=500)
    args = p.parse_args(argv)
    import ray

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%H%M%S")
    t0 = time.time()
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        rows = [compare(seed, args, stamp) for seed in args.seeds]
    finally:
        ray.shutdown()
    print(f"first search n_train {args.first_n_train}, second n_train {args.second_n_train}; "
          f"{args.num_samples} trials each ({args.max_concurrent} at a time), {args.epochs} "
          "stage-2 epochs, ASHA, Optuna TPE; target = the cold search's final best val_rel_l2")
    print_table(rows)
    write_results(rows)
    met = sum(1 for r in rows if r["savings"] >= 2.0)
    no_worse = sum(1 for r in rows if r["warm_best"] <= r["cold_best"])
    finite = [r["savings"] for r in rows if math.isfinite(r["savings"])]
    print(f"wall time {time.time() - t0:.0f} s")
    print(f"headline: warm start reached the cold search's final best with >= 2x fewer stage-2 "
          f"epochs in {met}/{len(rows)} seeds (savings "
          + ", ".join(f"{s:.2f}x" for s in finite)
          + f"); final best no worse than cold in {no_worse}/{len(rows)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
