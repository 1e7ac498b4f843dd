"""The quickstart's wall time: `mona-tune search --task darcy` cold (empty cache), then warm.

The same command a user runs after the installation (the embedded default: 8 trials, 2 at a
time), as a separate process each time, with its own empty ``MONA_TUNE_CACHE`` for the cold run
and that filled cache for the warm run right after it; storage and MLflow store in a temporary
folder. Prints per run the wall time (process start to exit), the search's own ``time:`` line, the
load average before and after (the machine's other work slows every figure) and the trials' own
training per stage (from the MLflow store: what no overhead can go below), and writes
``quickstart_cold_s`` and ``quickstart_warm_s`` into benchmarks/results.json (merged). Goals:
cold <= 120 s, warm <= 60 s.

    python benchmarks/quickstart.py [--keep DIR]

The last line is the headline.
"""

from __future__ import annotations

import argparse
import os
import re
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


def training_split(folder: Path, name: str) -> dict:
    """The trials' own training of search ``name`` from its MLflow store: seconds and epochs per
    stage (each epoch's ``epoch_seconds``, by its ``stage``), and the number of trials."""
    from mona_tune.tracking import mlflow_runs as mr

    client = mr.get_client(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mona-tune-darcy")
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`mona.search_name` = '{name}' and tags.`mona.role` = 'trial'"))
    split = {"trials": len(runs), 1: [0.0, 0], 2: [0.0, 0]}
    for run in runs:
        stage = {m.step: int(m.value) for m in client.get_metric_history(run.info.run_id, "stage")}
        for m in client.get_metric_history(run.info.run_id, "epoch_seconds"):
            split[stage.get(m.step, 2)][0] += m.value
            split[stage.get(m.step, 2)][1] += 1
    return split


def describe_split(split: dict, trials_s: float | None, slots: int = 2) -> str:
    total = split[1][0] + split[2][0]
    text = (f"{split['trials']} trials trained {total:.1f} s: stage 1 {split[1][0]:.1f} s in "
            f"{split[1][1]} epochs, stage 2 {split[2][0]:.1f} s in {split[2][1]} epochs; "
            f"on {slots} slots at best {total / slots:.1f} s")
    return text + (f" of the trials phase's {trials_s:.1f} s" if trials_s else "")


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
        runs = {kind: run_search(f"quickstart-{kind}-{stamp}", folder, cache)
                for kind in ("cold", "warm")}
        for kind, r in runs.items():
            r["split"] = training_split(folder, f"quickstart-{kind}-{stamp}")
    print(f"{'run':5}  {'wall s':>6}  {'goal s':>6}  load before / after       search's time: line")
    for kind, r in runs.items():
        print(f"{kind:5}  {r['wall_s']:6.1f}  {GOALS[kind]:6.0f}  {r['load_before']} / "
              f"{r['load_after']}  {r['time']}")
    for kind, r in runs.items():
        trials_s = re.search(r"trials ([\d.]+)s", r["time"])
        print(f"{kind:5}  {describe_split(r['split'], trials_s and float(trials_s.group(1)))}")
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
