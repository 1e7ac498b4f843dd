"""ASHA vs FIFO, Optuna vs random: same space, seeds and trial budget on the embedded Darcy task.

For each (searcher, scheduler) and seed it runs a full `mona-tune search` (one local Ray for all)
and reports
- the best validation metric (last reported value of the best trial, as Tune ranks it),
- the stage-2 epochs spent by all trials (the cost a scheduler saves),
- the stage-2 epochs spent, in the order results arrived, until the best-so-far validation metric
  came within 2% of the best that FIFO (Optuna) found with the same seed,
- the search's wall time.

    python benchmarks/search_schedulers.py [--seeds 0 1] [--num-samples 8] [--space darcy]
        [--grace-period G] [--reduction-factor R] [--variants optuna-fifo optuna-asha]

The last line is the headline: the share of FIFO's stage-2 epochs ASHA needed to get within 2%.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "search_schedulers"
VARIANTS = [("optuna", "fifo"), ("optuna", "asha"), ("random", "asha"), ("random", "fifo")]


def run_one(search: str, scheduler: str, seed: int, args) -> dict:
    from ray.tune import ExperimentAnalysis

    from mona_tune.search.driver import run_search
    from mona_tune.search.plan import SearchRequest, plan_search

    name = f"{search}-{scheduler}-s{seed}-{time.strftime('%H%M%S')}"
    plan = plan_search(SearchRequest(
        task="darcy", space=args.space, name=name, storage=str(OUT / "runs"),
        tracking_uri=f"sqlite:///{OUT / 'mlflow.db'}", sampler=search, scheduler=scheduler,
        seed=seed, num_samples=args.num_samples, max_concurrent=args.max_concurrent,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor,
        quiet=True, register_model=False))
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_search(plan.scfg, plan.space, plan.param_space, resume=plan.resume,
                             space_yaml=plan.space_yaml)
    wall = time.time() - t0
    metric = outcome.metric
    ea = ExperimentAnalysis(outcome.experiment_path, default_metric=metric, default_mode="min")
    rows = []  # (timestamp, stage2 epoch reported?, val)
    spent = 0
    for trial in ea.trials:
        df = ea.trial_dataframes.get(trial.trial_id)
        if df is None or df.empty:
            continue
        df = df[df["stage"] == 2] if "stage" in df.columns else df
        spent += int(df["stage2_epoch"].max())
        for ts, val in zip(df["timestamp"], df[metric]):
            rows.append((float(ts), float(val)))
    rows.sort()
    return {"search": search, "scheduler": scheduler, "seed": seed, "name": name,
            "best": outcome.best_metrics.get(metric, math.nan), "spent": spent,
            "curve": rows, "wall": wall,
            "stopped": sum(1 for v in outcome.outcomes.values() if v == "stopped_early")}


def epochs_to_reach(curve: list[tuple[float, float]], target: float) -> int | None:
    best = math.inf
    for k, (_, val) in enumerate(curve, start=1):
        best = min(best, val)
        if best <= target:
            return k
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--space", default="darcy")
    p.add_argument("--grace-period", type=int, default=None, help="ASHA's (default: the space's)")
    p.add_argument("--reduction-factor", type=float, default=None,
                   help="ASHA's (default: the space's)")
    p.add_argument("--variants", nargs="+", default=[f"{a}-{b}" for a, b in VARIANTS],
                   help="searcher-scheduler pairs, e.g. optuna-asha random-fifo")
    args = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")

    import ray

    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    results = []
    try:
        for seed in args.seeds:
            for v in args.variants:
                search, scheduler = v.split("-")
                r = run_one(search, scheduler, seed, args)
                results.append(r)
                print(f"  {v} seed {seed}: best {r['best']:.4f}, {r['spent']} stage-2 epochs, "
                      f"{r['wall']:.0f}s", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()

    fifo = {r["seed"]: r for r in results if (r["search"], r["scheduler"]) == ("optuna", "fifo")}
    print(f"\n{'searcher':8} {'sched':5} {'seed':>4} {'best val':>9} {'epochs':>6} "
          f"{'to 2% of FIFO':>13} {'stopped':>7} {'wall s':>6}")
    for r in results:
        ref = fifo.get(r["seed"])
        reach = epochs_to_reach(r["curve"], ref["best"] * 1.02) if ref else None
        r["reach"] = reach
        print(f"{r['search']:8} {r['scheduler']:5} {r['seed']:>4} {r['best']:>9.4f} "
              f"{r['spent']:>6} {('-' if reach is None else reach):>13} {r['stopped']:>7} "
              f"{r['wall']:>6.0f}")
    asha = [r for r in results if (r["search"], r["scheduler"]) == ("optuna", "asha")]
    shares = [r["spent"] / fifo[r["seed"]]["spent"] for r in asha if r["seed"] in fifo]
    reached = [r for r in asha if r.get("reach") is not None]
    gap = [r["best"] / fifo[r["seed"]]["best"] - 1 for r in asha if r["seed"] in fifo]
    if shares:
        print(f"headline: ASHA used {100 * sum(shares) / len(shares):.0f}% of FIFO's stage-2 "
              f"epochs; its best is {100 * sum(gap) / len(gap):+.1f}% from FIFO's; within 2% of "
              f"FIFO's best in {len(reached)}/{len(asha)} seeds")
        record_savings(asha, fifo, argv)
    return 0


def record_savings(asha: list[dict], fifo: dict, argv: list[str] | None) -> None:
    """results.json: per seed, FIFO's stage-2 epochs over those ASHA spent until its best came
    within 2 % of FIFO's best (null where it never did), and in how many seeds it did."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_json import record

    command = ("python benchmarks/search_schedulers.py " + " ".join(argv or sys.argv[1:])).strip()
    paired = [(str(r["seed"]), r, fifo[r["seed"]]) for r in asha if r["seed"] in fifo]
    savings = {seed: round(f["spent"] / r["reach"], 2) if r.get("reach") else None
               for seed, r, f in paired}
    record("asha_epoch_savings", savings, goal=">= 3 in every seed", command=command,
           asha_share_of_fifo_epochs={seed: round(r["spent"] / f["spent"], 3)
                                      for seed, r, f in paired},
           best_gap_to_fifo={seed: round(r["best"] / f["best"] - 1, 4) for seed, r, f in paired})
    hit = sum(1 for v in savings.values() if v is not None)
    record("asha_within_2pct", f"{hit}/{len(savings)}", goal=f"{len(savings)}/{len(savings)}",
           command=command)


if __name__ == "__main__":
    sys.exit(main())
