"""Does the default search depend on the CPU kind? `mona-tune search --task darcy` under two of
torch's kernel choices (``ATEN_CPU_CAPABILITY``, which stands in for a CPU of another kind), over
sampler seeds, with the data and the embedded source model as the quickstart has them.

Each search runs in a fresh process with the variable set (its Ray workers inherit it; each
trial records the kernel choice it ran with as ``platform.cpu_capability``, checked here). Prints
per search the best trial's validation and test metric, then per kernel choice the mean and range,
and the largest gap between the two choices at the same seed; writes
``benchmarks/out/search_cpu_kinds.json``.

    python benchmarks/search_cpu_kinds.py --capabilities avx2 default --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).parent / "out" / "search_cpu_kinds.json"

CHILD = """
import contextlib, io, json, sys
import mlflow
from mona_tune.search.driver import run_search
from mona_tune.search.plan import SearchRequest, plan_search
folder, seed = sys.argv[1], int(sys.argv[2])
uri = f"sqlite:///{folder}/mlflow.db"
plan = plan_search(SearchRequest(task="darcy", name=f"kinds-s{seed}", storage=f"{folder}/runs",
                                 tracking_uri=uri, seed=seed, quiet=True, register_model=False))
with contextlib.redirect_stdout(io.StringIO()):
    o = run_search(plan.scfg, plan.space, plan.param_space, resume=plan.resume,
                   space_yaml=plan.space_yaml)
client = mlflow.MlflowClient(uri)
ids = [e.experiment_id for e in client.search_experiments()]
caps = {r.data.params["platform.cpu_capability"] for r in client.search_runs(ids)
        if "platform.cpu_capability" in r.data.params}
print(json.dumps({"metric": o.metric, "best": o.best_metrics, "trials": len(o.outcomes),
                  "trial_capabilities": sorted(caps)}))
"""


def run_one(capability: str, seed: int) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run([sys.executable, "-c", CHILD, folder, str(seed)], env=env,
                              cwd=folder, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{capability} seed {seed}: exit {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"capability": capability, "seed": seed, **out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capabilities", nargs="+", default=["avx2", "default"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args(argv)
    results = []
    for seed in args.seeds:
        for cap in args.capabilities:
            r = run_one(cap, seed)
            m = r["metric"]
            print(f"{cap:>8} seed {seed}: best {m} {r['best'][m]:.4f}, test "
                  f"{r['best'].get('test_' + m.removeprefix('val_'), float('nan')):.4f} "
                  f"({r['trials']} trials; trials ran with {r['trial_capabilities']})", flush=True)
            results.append(r)
    metric = results[0]["metric"]
    summary = {}
    for cap in args.capabilities:
        vals = [r["best"][metric] for r in results if r["capability"] == cap]
        summary[cap] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals)}
        print(f"{cap:>8}: best {metric} mean {summary[cap]['mean']:.4f}, range "
              f"{summary[cap]['min']:.4f}-{summary[cap]['max']:.4f} over seeds {args.seeds}")
    by = {(r["capability"], r["seed"]): r["best"][metric] for r in results}
    a, b = args.capabilities[:2]
    gaps = [abs(by[a, s] - by[b, s]) for s in args.seeds]
    print(f"largest |{a} - {b}| at one seed: {max(gaps):.4f}; seed-to-seed range within "
          f"{a}: {summary[a]['max'] - summary[a]['min']:.4f}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"results": results, "summary": summary, "gaps": gaps}, indent=1))
    record_kinds(metric, summary, gaps, " ".join(sys.argv[1:]))
    return 0


def record_kinds(metric: str, summary: dict, gaps: list[float], argv: str) -> None:
    """results.json: the best trial's metric per kernel choice, and the gap at one seed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_json import record

    record(f"search_best_{metric}_by_cpu_kernels",
           {cap: {k: round(v, 4) for k, v in s.items()} for cap, s in summary.items()},
           goal="the gap between kernel choices at one seed within the seed-to-seed range",
           command=f"python benchmarks/search_cpu_kinds.py {argv}".strip(),
           largest_gap_at_one_seed=round(max(gaps), 4))


if __name__ == "__main__":
    sys.exit(main())
