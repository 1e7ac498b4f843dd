"""Run every benchmark script, print their tables, and record them in benchmarks/RESULTS.md.

Each script prints a table and, as its last line, its headline figure. They run one after the
other (never side by side) because the ratios they report are timing-sensitive.

    python benchmarks/run_all.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# figures the scripts write under benchmarks/out/ that RESULTS.md shows (kept in benchmarks/figures/)
FIGURES = {"methods_table.py": ("out/methods-darcy/curves.png", "figures/methods-curves.png")}

# (script, arguments, question it answers)
BENCHMARKS = [
    ("quickstart.py", [], "the default search's wall time, cold (empty cache) and warm"),
    ("data_generation.py", [], "Darcy generator throughput and share of time in the sparse solve"),
    ("generation_1d.py", [], "PDEBench 1D generators: samples/s per family and resolution"),
    ("data_at_scale.py", [], "FNO 421x421 file: first read on a node vs a later (cache)"),
    ("step_cost.py", [], "MoNA stage-1 step time over a plain fine-tuning step"),
    ("paper_size_cpu.py", [], "Swin-Base at 224, 4 target / 32 source: step time and memory on the CPU"),
    ("tuning_overhead.py", [], "search wall time over the ideal, per-trial fixed cost"),
    ("peer_search.py", [], "mona-tune search vs the same search written by hand with Ray Tune"),
    ("search_schedulers.py", ["--seeds", "0", "1", "2", "--variants", "optuna-fifo", "optuna-asha"],
     "ASHA vs FIFO over three seeds: best metric, epochs spent, epochs to within 2 % of FIFO"),
    ("warm_start.py", [], "warm start vs cold after n_train changed: epochs to the cold best"),
    ("multinode.py", [], "the same search on one node (2 CPU) and on two local nodes (2 x 1 CPU)"),
    ("source_transfer.py", [], "does the embedded source help? ft per source vs scratch, paired"),
    ("methods_table.py", [], "ft, emb, orca, mona vs scratch and ridge: paired verdicts, target and probe"),
]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="script names (without .py) to run")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args()

    chosen = [b for b in BENCHMARKS if not args.only or b[0].removesuffix(".py") in args.only]
    sections, failed = [], []
    for script, extra, question in chosen:
        cmd = [sys.executable, str(HERE / script), *extra]
        print(f"\n=== {script}: {question}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
        seconds = time.perf_counter() - t0
        print(proc.stdout, end="", flush=True)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        if proc.returncode:
            failed.append(script)
        lines = proc.stdout.strip().splitlines()
        headline = lines[-1] if lines else "(no output)"
        figure = ""
        if script in FIGURES and (HERE / FIGURES[script][0]).exists():
            src, dst = (HERE / f for f in FIGURES[script])
            dst.parent.mkdir(exist_ok=True)
            shutil.copyfile(src, dst)
            figure = f"\n![{script}]({FIGURES[script][1]})\n"
        sections.append(
            f"## {script.removesuffix('.py')}: {question}\n\n"
            f"`python benchmarks/{script}` — {status}, {seconds:.0f} s\n\n"
            f"**{headline}**\n\n```\n{proc.stdout.strip()}\n```\n{figure}"
        )

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    written = "Written by `make bench` (`python benchmarks/run_all.py`)"
    written += (f" on {stamp}." if not args.only else
                f"; each section names its run. Last updated on {stamp} (`--only "
                f"{' '.join(args.only)}`).")
    header = f"# Benchmark results\n\n{written}\n\nMachine: {machine()}.\n\n"
    if args.only and args.results.exists():
        # Partial run: replace only the sections that ran, keep the others.
        old = args.results.read_text().split("\n## ")
        keep = [s for s in old[1:] if not any(s.startswith(b[0].removesuffix(".py") + ":") for b in chosen)]
        sections = ["## " + s.rstrip() + "\n" for s in keep] + sections
    args.results.write_text(header + "\n".join(sections))
    print(f"\nwrote {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
