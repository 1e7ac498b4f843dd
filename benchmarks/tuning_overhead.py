"""What the search machinery costs on top of training: short (~2 s) and longer (~20 s) trials.

Each case runs a FIFO search (every trial completes) on warm caches and compares
- the wall time of the trials phase (``Tuner.fit``) and of the whole search (Ray start, MLflow
  parent run, cache warm-up, summary included),
- with the ideal: the sum of the trials' own training times (``seconds`` from the trainer:
  everything inside ``Trainer.fit``) divided by the concurrency.
The per-trial fixed cost is (trials wall x concurrency - sum of training times) / trials: actor
start or reuse, TrainConfig, child-run creation, per-epoch MLflow writes, checkpoints, reports.

    python benchmarks/tuning_overhead.py [--cases short long] [--concurrency 2]

The last line is the headline: the overhead ratio of each case (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "tuning_overhead"

# Fixed fields per case, sized on 2 CPU cores (1 core per trial).
CASES = {
    "short": dict(trials=8, fixed=dict(warmup_epochs=1, epochs=3, n_train=60, n_test=16,
                                       resolution=29)),
    "long": dict(trials=4, fixed=dict(warmup_epochs=3, epochs=25)),
}


def space_file(case: str) -> Path:
    spec = CASES[case]
    fixed = "\n".join(f"  {k}: {v}" for k, v in spec["fixed"].items())
    text = textwrap.dedent("""\
        searched:
          lam: {uniform: [0.0, 1.0]}
          inner_lr: {loguniform: [1.0e-4, 1.0e-2]}
        fixed:
          device: cpu
        """) + fixed + "\n"
    path = OUT / f"{case}.yaml"
    path.write_text(text)
    return path


def run_case(case: str, concurrency: int) -> dict:
    from mona_tune.search.driver import run_search
    from mona_tune.search.plan import SearchRequest, plan_search
    from mona_tune.tracking import mlflow_runs as mr

    uri = f"sqlite:///{OUT / 'mlflow.db'}"
    name = f"{case}-{time.strftime('%H%M%S')}"
    plan = plan_search(SearchRequest(
        task="darcy", space=str(space_file(case)), name=name, storage=str(OUT / "runs"),
        tracking_uri=uri, scheduler="fifo", num_samples=CASES[case]["trials"],
        max_concurrent=concurrency, quiet=True, register_model=False))
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_search(plan.scfg, plan.space, plan.param_space, resume=plan.resume,
                             space_yaml=plan.space_yaml)
    wall = time.time() - t0
    exp = mr.ensure_experiment(uri, "darcy")
    runs = mr.child_runs(uri, exp, outcome.parent_run_id)
    done = [r.data.metrics for r in runs if "seconds" in r.data.metrics]
    # the trainer's ``seconds`` include the search's per-epoch callbacks: take them out
    train = [m["seconds"] - m.get("trial_callback_s", 0.0) for m in done]
    n = len(train)
    ideal = sum(train) / concurrency
    trials_wall = outcome.timings["trials_s"]
    mean = lambda key: sum(m.get(key, 0.0) for m in done) / max(n, 1)  # noqa: E731
    return {"case": case, "trials": n, "mean_train": sum(train) / max(n, 1),
            "ideal": ideal, "trials_wall": trials_wall, "search_wall": wall,
            "ratio_trials": trials_wall / ideal, "ratio_search": wall / ideal,
            "fixed_per_trial": (trials_wall * concurrency - sum(train)) / max(n, 1),
            "setup": mean("trial_setup_s"), "callbacks": mean("trial_callback_s"),
            "timings": outcome.timings}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--concurrency", type=int, default=2)
    args = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)

    import ray

    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    try:
        for case in args.cases:
            r = run_case(case, args.concurrency)
            rows.append(r)
            print(f"  {case}: {r['trials']} trials of {r['mean_train']:.1f}s, trials phase "
                  f"{r['trials_wall']:.1f}s", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()

    print(f"\n{'case':6} {'trials':>6} {'train s':>8} {'ideal s':>8} {'trials s':>9} "
          f"{'search s':>9} {'trials/ideal':>12} {'search/ideal':>12} {'fixed s/trial':>13} "
          f"{'setup s':>8} {'callbacks s':>11}")
    for r in rows:
        print(f"{r['case']:6} {r['trials']:>6} {r['mean_train']:>8.1f} {r['ideal']:>8.1f} "
              f"{r['trials_wall']:>9.1f} {r['search_wall']:>9.1f} {r['ratio_trials']:>12.2f} "
              f"{r['ratio_search']:>12.2f} {r['fixed_per_trial']:>13.2f} {r['setup']:>8.2f} "
              f"{r['callbacks']:>11.2f}")
    print("(fixed s/trial = what each trial costs beyond training; setup = before fit(): child "
          "run, trainer; callbacks = per-epoch MLflow, checkpoint and report, summed per trial)")
    for r in rows:
        t = r["timings"]
        print(f"  {r['case']}: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s"
                                             for k, v in t.items()))
    parts = [f"{r['case']} trials (~{r['mean_train']:.0f}s) at {r['ratio_trials']:.2f}x their "
             f"ideal time ({r['fixed_per_trial']:.2f}s fixed cost per trial)" for r in rows]
    print("headline: " + "; ".join(parts) + " (goal for the longer trials: <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
