"""Reading an FNO Darcy file at 421x421: the first read on a node and a later one (node cache).

Run: ``python benchmarks/data_at_scale.py [--samples 128] [--keep DIR]``. It writes one synthetic
``piececonst`` file with ``--samples`` samples at 421x421 (float64, as the published files) in
MATLAB v5 and in v7.3 (HDF5, axes reversed), then reads the samples subsampled to 85x85 in fresh
processes, as trials do: without the cache (every trial before the node cache), the first read
through the cache (reads the source, writes the .npy), and a later read (maps the .npy and touches
every value). Each row: seconds of the read and the process's peak resident memory during it
(Linux: the peak is reset after the imports), also above its resident memory before it. The
published files hold 1024 samples, 8x these (1.45 GB per field). The files were just written, so
the source reads come from the page cache: on a cold disk the first read costs more, a later one
no more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

R, TARGET = 421, 85
MATLAB_73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ."

CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from mona_tune.tasks import fno_cache, readers

def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

path, mode, n, step = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak (VmHWM) starts again from here: the read's own, not the imports'
before = status_mb("VmRSS")
t = time.perf_counter()
read = readers.read_fno if mode == "direct" else fno_cache.read_fno
coeff, sol = read(path, n, step)
total = float(np.asarray(coeff, np.float64).sum() + np.asarray(sol, np.float64).sum())
seconds = time.perf_counter() - t
print(json.dumps({"s": seconds, "peak_mb": status_mb("VmHWM"), "before_mb": before, "sum": total}))
"""


def write_files(folder: Path, n: int) -> dict[str, Path]:
    """The same ``n`` samples as a v5 and a v7.3 file."""
    import h5py
    import scipy.io

    rng = np.random.default_rng(0)
    coeff = np.where(rng.standard_normal((n, R, R)) >= 0, 12.0, 3.0)
    sol = rng.random((n, R, R)) * 0.01
    v5 = folder / f"piececonst_r{R}_N{n}_smooth1.mat"
    scipy.io.savemat(str(v5), {"coeff": coeff, "sol": sol}, format="5")
    v73 = folder / "v73" / v5.name
    v73.parent.mkdir(exist_ok=True)
    with h5py.File(v73, "w", userblock_size=512) as f:
        for name, arr in (("coeff", coeff), ("sol", sol)):
            f.create_dataset(name, data=arr.T)  # MATLAB stores (R, R, N)
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    with open(v73, "r+b") as fh:
        fh.write(MATLAB_73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")
    return {"v5": v5, "v7.3": v73}


def measure(path: Path, mode: str, n: int, cache: Path) -> dict:
    env = {**os.environ, "MONA_TUNE_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(n),
                          str((R - 1) // (TARGET - 1))], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--keep", type=Path, default=None, help="write the files here (kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = write_files(folder, args.samples)
        size = files["v5"].stat().st_size / 2**20
        print(f"{args.samples} samples at {R}x{R} -> {TARGET}x{TARGET}: file {size:.0f} MiB, "
              f"arrays kept {2 * args.samples * TARGET**2 * 4 / 2**20:.1f} MiB")
        print(f"{'format':6} {'read':28} {'s':>7} {'peak MiB':>9} {'above start':>12}")
        rows = {}
        for version, path in files.items():
            cache = Path(tmp) / f"cache-{version}"
            sums = set()
            for mode, label in (("direct", "uncached (every trial)"),
                                ("cached", "first (reads, writes .npy)"),
                                ("cached", "later (maps .npy)")):
                r = measure(path, mode, args.samples, cache)
                rows[(version, label)] = r
                sums.add(round(r["sum"], 3))
                print(f"{version:6} {label:28} {r['s']:7.3f} {r['peak_mb']:9.0f} "
                      f"{r['peak_mb'] - r['before_mb']:12.0f}")
            assert len(sums) == 1, "the three reads differ"
        v5_first = rows[("v5", "uncached (every trial)")]
        v5_later = rows[("v5", "later (maps .npy)")]
        print(f"v5, a later trial: {v5_first['s'] / v5_later['s']:.0f}x faster, "
              f"{v5_first['peak_mb'] - v5_first['before_mb']:.0f} -> "
              f"{v5_later['peak_mb'] - v5_later['before_mb']:.0f} MiB above its start")


if __name__ == "__main__":
    main()
