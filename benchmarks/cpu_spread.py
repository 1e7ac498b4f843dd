"""How far the shipped source model's recipe moves between CPU kernels, thread counts and seeds.

The shipped embedded model (mona_tune/models/shipped.py) is reproduced bit for bit only on the CPU
kind, torch and timm it was made with. Elsewhere rounding differs from the first step on and
training drifts; the test then compares the held-out accuracy within ``ACCURACY_TOLERANCE``. This
measures the spread that tolerance comes from. Each run trains the recipe in a fresh process:

- ``ATEN_CPU_CAPABILITY`` = default / avx2 (torch's kernel choice; the run records what torch
  reports). Add avx512 only on a CPU that has it: torch does not fall back, and on this AMD EPYC
  without AVX-512 the first vectorised kernel died of SIGILL (Illegal instruction);
- oneDNN (mkldnn) on and off;
- 1 and 2 torch threads;
- the recipe's seed and other seeds (a drifted run is, for the optimiser, much like another seed).

    python benchmarks/cpu_spread.py                 # the default grid, two runs at a time
    python benchmarks/cpu_spread.py --seeds 0 1 2 --capabilities default avx2 --jobs 2

Prints one line per run and a summary (min, max, the largest distance from the shipped accuracy),
and writes ``benchmarks/out/cpu_spread.json``. The recipe's one-thread run takes 80-160 s of one
core.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OUT = Path(__file__).parent / "out" / "cpu_spread.json"

CHILD = """
import json, sys, torch
torch.backends.mkldnn.enabled = {mkldnn}
from mona_tune.models import ship
state, meta = ship.train(seed={seed}, threads={threads}, progress=False)
print(json.dumps({{k: meta[k] for k in ("heldout_accuracy", "train_seconds", "weights_sha256",
                                       "cpu_capability", "cpu", "torch")}}))
"""


def run_one(capability: str, mkldnn: bool, threads: int, seed: int) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    code = CHILD.format(mkldnn=mkldnn, seed=seed, threads=threads)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"asked": capability, "mkldnn": mkldnn, "threads": threads, "seed": seed, **result}


def grid(args) -> list[tuple[str, bool, int, int]]:
    """The recipe's seed under every kernel choice, oneDNN and thread count; other seeds under
    each kernel choice with the recipe's settings (one thread, oneDNN on)."""
    runs = [(c, m, t, args.recipe_seed) for c, m, t in
            itertools.product(args.capabilities, (True, False), args.threads)]
    runs += [(c, True, 1, s) for c in args.capabilities for s in args.seeds
             if s != args.recipe_seed]
    return runs


def summary(results: list[dict], shipped: float, recipe_seed: int) -> dict:
    acc = [r["heldout_accuracy"] for r in results]
    at_recipe = [r["heldout_accuracy"] for r in results if r["seed"] == recipe_seed]
    return {"runs": len(acc), "min": min(acc), "max": max(acc),
            "mean": statistics.mean(acc), "stdev": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "shipped": shipped, "max_gap_to_shipped": max(abs(a - shipped) for a in acc),
            "recipe_seed_range": [min(at_recipe), max(at_recipe)] if at_recipe else None,
            "distinct_weights": len({r["weights_sha256"] for r in results})}


def main(argv: list[str] | None = None) -> int:
    from mona_tune.models.shipped import read_meta

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capabilities", nargs="+", default=["default", "avx2"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--recipe-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time")
    args = ap.parse_args(argv)
    runs = grid(args)
    print(f"{len(runs)} runs of the shipped recipe, {args.jobs} at a time", flush=True)
    results = []

    def one(spec):
        r = run_one(*spec)
        print(f"{r['asked']:>8} -> {r['cpu_capability']:<8} mkldnn={int(r['mkldnn'])} "
              f"threads={r['threads']} seed={r['seed']}: held-out accuracy "
              f"{r['heldout_accuracy']:.4f} ({r['train_seconds']:.0f} s, sha256 "
              f"{r['weights_sha256'][:12]})", flush=True)
        return r

    with ThreadPoolExecutor(args.jobs) as ex:
        results = list(ex.map(one, runs))
    out = {"cpu": results[0]["cpu"], "torch": results[0]["torch"], "results": results,
           "summary": summary(results, read_meta()["heldout_accuracy"], args.recipe_seed)}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))
    record_spread(out["summary"], " ".join(sys.argv[1:]))
    return 0


def record_spread(summary: dict, argv: str) -> None:
    """results.json: the spread, beside the tolerance the shipped-model check uses."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_json import record

    from mona_tune.models.shipped import ACCURACY_TOLERANCE

    record("shipped_recipe_heldout_accuracy_spread",
           {k: round(summary[k], 4) for k in ("min", "max", "mean", "stdev", "max_gap_to_shipped")},
           goal=f"max_gap_to_shipped <= ACCURACY_TOLERANCE ({ACCURACY_TOLERANCE})",
           command=f"python benchmarks/cpu_spread.py {argv}".strip(), runs=summary["runs"])


if __name__ == "__main__":
    sys.exit(main())
