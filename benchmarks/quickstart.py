"""The quickstart's wall time: `mona-tune search --task darcy` cold (empty cache), then warm.

The same command a user runs after the installation (the embedded default: 8 trials, 2 at a
time), as a separate process each time, with its own empty ``MONA_TUNE_CACHE`` for the cold run
and that filled cache for the warm run right after it; storage and MLflow store in a temporary
folder. Prints per run the wall time (process start to exit), the search's own ``time:`` line and
the load average before and after (the machine's other work slows every figure), and writes
``quickstart_cold_s`` and ``quickstart_warm_s`` into benchmarks/results.json (merged). Goals:
cold <= 120 s, warm <= 60 s.

    python benchmarks/quickstart.py [--keep DIR]

The last line is the headline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"cold": 120.0, "warm": 60.0}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_search(name: str, folder: Path, cache: Path) -> dict:
    """One `mona-tune search --task darcy` in a new process; its wall time and time: line."""
    env = {**os.environ, "MONA_TUNE_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    env.pop("RAY_ADDRESS", None)  # a Ray of its own, as on a fresh machine
    cmd = [sys.executable, "-m", "mona_tune.cli", "search", "--task", "darcy",
           "--storage", str(folder / "runs"), "--tracking-uri",
           f"sqlite:///{folder / 'mlflow.db'}", "--name", name]
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=folder, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    (folder / f"{name}.log").write_text(proc.stdout)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:])
        raise SystemExit(f"{name}: exit {proc.returncode} (log {folder / f'{name}.log'})")
    times = next((line for line in proc.stdout.splitlines() if line.startswith("time:")), "")
    return {"wall_s": wall, "time": times, "load_before": before, "load_after": load()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="run in DIR (kept) instead of a temporary folder")
    ap.add_argument("--no-record", action="store_true", help="leave results.json as it is")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mona-quickstart-") as tmp:
        folder = (args.keep or Path(tmp)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        cache = folder / "cache"
        if cache.exists() and any(cache.iterdir()):
            raise SystemExit(f"{cache} is not empty: the cold run needs an empty cache")
        cache.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runs = {"cold": run_search(f"quickstart-cold-{stamp}", folder, cache),
                "warm": run_search(f"quickstart-warm-{stamp}", folder, cache)}
    print(f"{'run':5}  {'wall s':>6}  {'goal s':>6}  load before / after       search's time: line")
    for kind, r in runs.items():
        print(f"{kind:5}  {r['wall_s']:6.1f}  {GOALS[kind]:6.0f}  {r['load_before']} / "
              f"{r['load_after']}  {r['time']}")
    figures = {f"quickstart_{k}_s": round(r["wall_s"], 1) for k, r in runs.items()}
    if not args.no_record:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from results_json import record

        for key, value in figures.items():
            kind = key.split("_")[1]
            record(key, value, goal=f"<= {GOALS[kind]:.0f}",
                   command="python benchmarks/quickstart.py",
                   load_before_after=[runs[kind]["load_before"], runs[kind]["load_after"]])
    print(", ".join(f"{k} {v:.1f} (goal {GOALS[k.split('_')[1]]:.0f})"
                    for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
