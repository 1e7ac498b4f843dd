"""``mona-tune data make`` many times in a row, each a fresh process, each with a time limit: the
check that the generator's process pool never hangs (a hang is a run over its limit).

    python benchmarks/data_make_loop.py --runs 200 --limit 60

Prints each run's wall time summary and the number of runs over the limit; exit status 1 if any.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["data", "make", "darcy", "--format", "pdebench", "--n-train", "9", "--n-test", "1",
           "--resolution", "32", "--beta", "10.0", "--seed", "5"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--limit", type=float, default=60.0, help="seconds one run may take")
    args = ap.parse_args(argv)
    times, hung, failed = [], 0, 0
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            try:
                r = subprocess.run([sys.executable, "-m", "mona_tune.cli", *COMMAND, "--out", out],
                                   capture_output=True, text=True, timeout=args.limit)
                failed += r.returncode != 0
            except subprocess.TimeoutExpired:
                hung += 1
            times.append(time.perf_counter() - t0)
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{args.runs} runs: {hung} over {args.limit:.0f} s, {failed} failed",
                  flush=True)
    print(f"{args.runs} runs of mona-tune {' '.join(COMMAND)}: median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s; {hung} over the {args.limit:.0f} s limit, {failed} failed")
    record_runs(args.runs, hung, failed, statistics.median(times), max(times), args.limit)
    return 1 if hung or failed else 0


def record_runs(runs: int, hung: int, failed: int, median: float, longest: float,
                limit: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_json import record

    record("data_make_runs_over_limit", hung, goal="0", runs=runs, failed=failed,
           median_s=round(median, 2), max_s=round(longest, 2), limit_s=limit,
           command=f"python benchmarks/data_make_loop.py --runs {runs} --limit {limit:g}")


if __name__ == "__main__":
    sys.exit(main())
