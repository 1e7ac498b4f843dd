"""Throughput of the PDEBench 1D generators (PDEBench's schemes, one process).

For each family: samples per second at 128 and 256 cells with PDEBench's parameters and end
times (Burgers at ν = 0.1, the generated default, and at ORCA's ν = 1.0 with a shorter end time,
scaled: the explicit diffusion limit makes its cost grow with ν and with the cells squared), and
the time the embedded default file (250 samples, 128 cells) takes to generate.

    python benchmarks/generation_1d.py [--samples 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from mona_tune.tasks import files_1d
from mona_tune.tasks.generate_1d import make_1d_dataset
from mona_tune.tasks.pdebench_1d import EMBEDDED

CASES = [  # (family, parameters, end time, what the end time stands for)
    ("advection", {"beta": 0.4}, None, "t = 2"),
    ("burgers", {"nu": 0.1}, None, "t = 2"),
    ("burgers", {"nu": 1.0}, 0.1, "t = 0.1 (x20 for t = 2)"),
    ("diffusion-reaction", {"nu": 0.5, "rho": 1.0}, 0.3, "t = 0.3 (the target 0.29)"),
    ("diffusion-sorption", {}, None, "t = 500 s"),
]


def timed(family: str, n: int, cells: int, params: dict, end: float | None) -> float:
    n_test = files_1d.n_test_of(files_1d.FAMILIES[family].layout, n)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        make_1d_dataset(family, out, n_train=n - n_test, n_test=n_test, resolution=cells,
                        workers=1, fin_time=end, **params)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    args = ap.parse_args()
    n = args.samples
    print(f"one process, {n} samples per case")
    print("| family | parameters | end | samples/s @128 | samples/s @256 |")
    print("| --- | --- | --- | --- | --- |")
    for family, params, end, label in CASES:
        rates = [n / timed(family, n, cells, params, end) for cells in (128, 256)]
        shown = ", ".join(f"{k}={v:g}" for k, v in params.items()) or "-"
        print(f"| {family} | {shown} | {label} | {rates[0]:.1f} | {rates[1]:.1f} |", flush=True)
    totals = []
    for family, emb in EMBEDDED.items():
        params = dict(emb.params)
        seconds = timed(family, emb.n_total, emb.resolution, params, emb.fin_time)
        totals.append(f"{family} {seconds:.1f} s")
    print("embedded default files (250 samples, 128 cells, one process): " + ", ".join(totals))


if __name__ == "__main__":
    main()
