"""Darcy data generation throughput, and where the time goes.

Run: ``python benchmarks/data_generation.py [--workers N]``. For each setting it times
``make_dataset`` end to end with all cores (samples/s, files included), then times the pieces of
each sample in one process: coefficient field (GRF or bumps), assembly of the sparse operator, and
the sparse direct solve (LU factorisation + triangular solves). The last line is the headline.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import scipy.sparse.linalg as spla

from mona_tune.tasks.generate import (
    darcy_operator,
    fno_coefficient,
    make_dataset,
    pdebench_coefficient,
    sample_rng,
)

SETTINGS = [  # (format, resolution, samples for the parallel run, samples for the breakdown)
    ("fno", 85, 32, 16),
    ("fno", 421, 8, 4),
    ("pdebench", 128, 40, 16),
]


def parallel_rate(fmt: str, resolution: int, n: int, workers: int) -> float:
    """Samples per second of ``make_dataset`` (generation and file writing) with ``workers``."""
    n_train, n_test = (n - n // 4, n // 4) if fmt == "fno" else (n - n // 10, n // 10)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        make_dataset(out, fmt=fmt, n_train=n_train, n_test=n_test, resolution=resolution,
                     seed=0, workers=workers)
        return n / (time.perf_counter() - start)


def breakdown(fmt: str, resolution: int, n: int) -> dict[str, float]:
    """Mean seconds per sample of each piece, in one process."""
    grid = "node" if fmt == "fno" else "cell"
    times = {"coefficient": 0.0, "assembly": 0.0, "solve": 0.0}
    for i in range(n):
        t0 = time.perf_counter()
        rng = sample_rng(0, 1, i)
        a = fno_coefficient(rng, resolution) if fmt == "fno" else \
            pdebench_coefficient(rng, resolution)
        t1 = time.perf_counter()
        A = darcy_operator(a, grid)
        t2 = time.perf_counter()
        spla.splu(A, permc_spec="MMD_AT_PLUS_A").solve(np.ones(A.shape[0]))
        t3 = time.perf_counter()
        times["coefficient"] += t1 - t0
        times["assembly"] += t2 - t1
        times["solve"] += t3 - t2
    return {k: v / n for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    print(f"workers: {args.workers}")
    header = (f"{'format':<9}{'grid':>6}{'samples':>9}{'samples/s':>11}{'coeff ms':>10}"
              f"{'assembly ms':>13}{'solve ms':>10}{'solve share':>13}")
    print(header)
    print("-" * len(header))
    headline = {}
    for fmt, resolution, n_par, n_serial in SETTINGS:
        rate = parallel_rate(fmt, resolution, n_par, args.workers)
        parts = breakdown(fmt, resolution, n_serial)
        share = parts["solve"] / sum(parts.values())
        print(f"{fmt:<9}{resolution:>6}{n_par:>9}{rate:>11.2f}"
              f"{1e3 * parts['coefficient']:>10.2f}{1e3 * parts['assembly']:>13.2f}"
              f"{1e3 * parts['solve']:>10.2f}{100 * share:>12.1f}%")
        if fmt == "fno":
            headline[resolution] = (rate, share)
    print(f"samples/s @85: {headline[85][0]:.1f}, @421: {headline[421][0]:.2f}, "
          f"solve share: {100 * headline[421][1]:.0f}% @421 ({100 * headline[85][1]:.0f}% @85)")


if __name__ == "__main__":
    main()
