"""Darcy data generation throughput, and where the time goes.

Run: ``python benchmarks/data_generation.py [--workers N] [--n85 N] [--n421 N]``. For each
setting it times ``make_dataset`` end to end with all cores (samples/s, files included, and the
analysis of the pattern once per worker; "cpu-bound" is the same run's rate as if each worker had
a core of its own, from the CPU seconds spent), then times the pieces of each sample in one
process, in CPU seconds so that other load on the machine counts less: coefficient field (GRF or
bumps), assembly of the upper triangle of the operator, and the sparse solve (numeric Cholesky +
triangular solves on the shared analysis). The full FNO set (1024 + 1024 samples at 421²) is
projected from the 421² rate, which is conservative: its per-worker analysis is spread over fewer
samples.

The last line is the headline, with the goals and the load average (1 min) before and after;
``generator_samples_per_s_85`` / ``_421`` and ``generator_fno_full_set_s`` (value and goal) are
merged into benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mona_tune.tasks.generate import (
    darcy_upper,
    fno_coefficient,
    make_dataset,
    pdebench_coefficient,
    sample_rng,
)
from mona_tune.tasks.spd_solve import mkl_runtime, release, solve_spd

FULL_FNO_SET = 1024 + 1024  # FNO's piececonst_r421_N1024_smooth1/2
GOALS = {"generator_samples_per_s_85": (">=", 100.0), "generator_samples_per_s_421": (">=", 8.0),
         "generator_fno_full_set_s": ("<", 300.0)}


def parallel_rate(fmt: str, resolution: int, n: int, workers: int) -> tuple[float, float, float]:
    """Samples per second of ``make_dataset`` (generation and file writing) with ``workers``: on
    the wall clock, and as if each worker had a core of its own (n over the CPU seconds of the
    parent and the workers, divided by ``workers``), which other load on the machine barely
    moves; third, the share of the workers' cores that the run got (1 where nothing else runs)."""
    n_train, n_test = (n - n // 4, n // 4) if fmt == "fno" else (n - n // 10, n // 10)
    with tempfile.TemporaryDirectory() as out:
        cpu0, start = os.times(), time.perf_counter()
        make_dataset(out, fmt=fmt, n_train=n_train, n_test=n_test, resolution=resolution,
                     seed=0, workers=workers)
        wall, cpu1 = time.perf_counter() - start, os.times()
    cpu = sum(cpu1[:4]) - sum(cpu0[:4])  # user + system, of this process and its reaped workers
    return n / wall, n / (cpu / workers), cpu / (wall * workers)


def breakdown(fmt: str, resolution: int, n: int) -> dict[str, float]:
    """Mean CPU seconds per sample of each piece, in one process, after the pattern's analysis."""
    grid = "node" if fmt == "fno" else "cell"
    times = {"coefficient": 0.0, "assembly": 0.0, "solve": 0.0}
    release()
    t0 = time.process_time()
    for i in range(n + 1):  # sample 0 pays for the analysis and is timed apart
        t1 = time.process_time()
        rng = sample_rng(0, 1, i)
        a = fno_coefficient(rng, resolution) if fmt == "fno" else \
            pdebench_coefficient(rng, resolution)
        t2 = time.process_time()
        U = darcy_upper(a, grid)
        t3 = time.process_time()
        solve_spd(U, np.ones(U.shape[0]))
        t4 = time.process_time()
        if i == 0:
            times["analysis"] = t4 - t0
            continue
        times["coefficient"] += t2 - t1
        times["assembly"] += t3 - t2
        times["solve"] += t4 - t3
    return {k: v if k == "analysis" else v / n for k, v in times.items()}


def record(figures: dict[str, tuple[float, float]], load: float) -> None:
    """Merge (wall-clock value, cpu-bound value) per key into results.json, with goal and load."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_json import record as record_figure

    for key, (value, cpu_bound) in figures.items():
        op, goal = GOALS[key]
        record_figure(key, round(value, 2), goal=f"{op} {goal:g}",
                      command="python benchmarks/data_generation.py",
                      cpu_bound=round(cpu_bound, 2), load_1min=round(load, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n85", type=int, default=512, help="samples of the 85² run")
    parser.add_argument("--n421", type=int, default=64, help="samples of the 421² run")
    args = parser.parse_args()
    settings = [  # (format, resolution, samples for the parallel run, samples for the breakdown)
        ("fno", 85, args.n85, 64),
        ("fno", 421, args.n421, 6),
        ("pdebench", 128, 200, 32),
    ]

    load_before = os.getloadavg()[0]
    solver = "MKL PARDISO (Cholesky, analysis once per grid)" if mkl_runtime() else "scipy LU"
    print(f"workers: {args.workers}, solver: {solver}; breakdown in CPU ms per sample")
    header = (f"{'format':<9}{'grid':>6}{'samples':>9}{'samples/s':>11}{'cpu-bound':>11}"
              f"{'coeff ms':>10}{'assembly ms':>13}{'solve ms':>10}{'solve share':>13}"
              f"{'analysis ms':>13}")
    print(header)
    print("-" * len(header))
    rates, shares, cpu_rates, cpu_got = {}, {}, {}, {}
    for fmt, resolution, n_par, n_serial in settings:
        rate, cpu_rate, got = parallel_rate(fmt, resolution, n_par, args.workers)
        parts = breakdown(fmt, resolution, n_serial)
        share = parts["solve"] / (parts["coefficient"] + parts["assembly"] + parts["solve"])
        print(f"{fmt:<9}{resolution:>6}{n_par:>9}{rate:>11.2f}{cpu_rate:>11.2f}"
              f"{1e3 * parts['coefficient']:>10.2f}{1e3 * parts['assembly']:>13.2f}"
              f"{1e3 * parts['solve']:>10.2f}{100 * share:>12.1f}%"
              f"{1e3 * parts['analysis']:>13.0f}", flush=True)
        if fmt == "fno":
            rates[resolution], shares[resolution] = rate, share
            cpu_rates[resolution], cpu_got[resolution] = cpu_rate, got
    full = FULL_FNO_SET / rates[421]
    load_after = os.getloadavg()[0]
    print(f"full FNO set ({FULL_FNO_SET} samples at 421²) projected: {full:.0f} s "
          f"({FULL_FNO_SET / cpu_rates[421]:.0f} s cpu-bound)")
    print("cpu-bound: samples/s if each worker had a core (CPU seconds of parent and workers); "
          f"the runs got {100 * cpu_got[85]:.0f}% (85²) and {100 * cpu_got[421]:.0f}% (421²) of "
          f"{args.workers} cores")
    record({"generator_samples_per_s_85": (rates[85], cpu_rates[85]),
            "generator_samples_per_s_421": (rates[421], cpu_rates[421]),
            "generator_fno_full_set_s": (full, FULL_FNO_SET / cpu_rates[421])}, load_before)
    print(f"samples/s @85: {rates[85]:.1f} (goal >= 100), @421: {rates[421]:.2f} (goal >= 8), "
          f"full FNO set {full:.0f} s (goal < 300), solve share {100 * shares[421]:.0f}% @421; "
          f"load {load_before:.2f} -> {load_after:.2f}")


if __name__ == "__main__":
    main()
