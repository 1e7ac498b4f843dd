"""``mona-tune data inspect PATH``: what a data file (or a directory of them) holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mona_tune.errors import MonaError
from mona_tune.tasks import readers
from mona_tune.tasks.generate import pdebench_n_test

_BLOCK_BYTES = 64 * 2**20  # HDF5 value ranges are computed block by block, not all in memory


def _range(path: Path, name: str, read_block, n_rows: int, row_bytes: int) -> tuple[float, float]:
    rows = max(1, _BLOCK_BYTES // max(1, row_bytes))
    lo, hi = np.inf, -np.inf
    for start in range(0, n_rows, rows):
        with readers.file_errors(path):
            block = np.asarray(read_block(slice(start, start + rows)))
        if not np.isfinite(block).all():
            raise MonaError(f"{path}: field {name!r} holds NaN/inf values")
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return lo, hi


def _hdf5_fields(path: Path, names: tuple[str, ...]) -> list[tuple[str, tuple, str, float, float]]:
    import h5py

    rows = []
    with readers.file_errors(path), h5py.File(path, "r") as f:
        for name in names:
            ds = f[name]
            row_bytes = int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
            n_rows = ds.shape[0] if ds.shape else 1
            lo, hi = _range(path, name, lambda s, ds=ds: ds[s] if ds.shape else ds[()],
                            n_rows, row_bytes)
            rows.append((name, tuple(ds.shape), str(ds.dtype), lo, hi))
    return rows


def _mat_fields(path: Path) -> list[tuple[str, tuple, str, float, float]]:
    import scipy.io

    rows = []
    for name in readers.FNO_FIELDS:
        with readers.file_errors(path):
            arr = scipy.io.loadmat(str(path), variable_names=[name])[name]
        lo, hi = _range(path, name, lambda s, arr=arr: arr[s], arr.shape[0], 0)
        rows.append((name, tuple(arr.shape), str(arr.dtype), lo, hi))
    return rows


def _table(rows, note: dict[str, str] | None = None) -> list[str]:
    note = note or {}
    width = max(len(r[0]) for r in rows)
    out = []
    for name, shape, dtype, lo, hi in rows:
        extra = f"  {note[name]}" if name in note else ""
        out.append(f"  {name:<{width}}  shape {str(shape):<18} {dtype:<8} "
                   f"min {lo:.6g}  max {hi:.6g}{extra}")
    return out


def _describe_1d(path: Path, fmt: str) -> str:
    from mona_tune.tasks import files_1d

    head = files_1d.header(path)
    n_test = files_1d.n_test_of(head.layout, head.n)
    t = files_1d.saved_times(head)
    split = (f"first {n_test} = test, {head.n - n_test} train" if head.layout == "tensor" else
             f"groups {head.groups[0]}..{head.groups[-1]}; last {n_test} = test, "
             f"{head.n - n_test} train")
    params = "".join(f", {k} {v:.6g}" for k, v in head.attrs.items())
    lines = [f"{path}: {readers.FORMAT_NAMES[fmt]}, {head.n} samples ({split}), {head.nx} cells, "
             f"{head.n_t} states at t = {t[0]:g}..{t[-1]:g}{params}"]
    if head.layout == "tensor":
        return "\n".join(lines + _table(_hdf5_fields(path, ("tensor", "x-coordinate",
                                                             "t-coordinate"))))
    first = head.groups[0]
    rows = _hdf5_fields(path, tuple(f"{first}/{n}" for n in ("data", "grid/x", "grid/t")))
    return "\n".join(lines + [f"  (fields of group {first}; every group holds the same)"]
                     + _table(rows))


def describe_file(path: Path) -> str:
    fmt = readers.detect_format(path)
    if fmt.startswith("pdebench-1d"):
        return _describe_1d(path, fmt)
    if fmt == "pdebench":
        head = readers.pdebench_header(path)
        rows = _hdf5_fields(path, readers.PDEBENCH_FIELDS)
        beta = "" if head.beta is None else f", beta {head.beta:.6g}"
        n_test = pdebench_n_test(head.n)
        lines = [f"{path}: {readers.FORMAT_NAMES[fmt]}, {head.n} samples "
                 f"(first {n_test} = test, {head.n - n_test} train), grid "
                 f"{head.resolution}x{head.resolution}{beta}"]
        return "\n".join(lines + _table(rows))
    head = readers.fno_header(path)
    if fmt == "fno-v73":
        rows = _hdf5_fields(path, readers.FNO_FIELDS)
        note = {r[0]: f"(MATLAB order {tuple(reversed(r[1]))})" for r in rows}
    else:
        rows, note = _mat_fields(path), None
    part = {"smooth1": ", train file (smooth1)", "smooth2": ", test file (smooth2)"}
    role = next((v for k, v in part.items() if path.name.endswith(f"_{k}.mat")), "")
    lines = [f"{path}: {readers.FORMAT_NAMES[fmt]}, {head.n} samples, grid "
             f"{head.resolution}x{head.resolution}{role}"]
    return "\n".join(lines + _table(rows, note))


def describe(path: Path | str) -> str:
    """Format, fields, shapes, dtypes, value ranges and sample counts of a file or directory."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MonaError(f"{path}: no such file or directory")
    if path.is_file():
        return describe_file(path)
    from mona_tune.tasks.files_1d import FAMILIES

    globs = ["piececonst_r*_N*_smooth[12].mat", readers.PDEBENCH_GLOB]
    globs += [f.pattern for f in FAMILIES.values()]
    files = [p for g in globs for p in sorted(path.glob(g))]
    if not files:
        raise MonaError(f"{path}: no data files (expected piececonst_r*_N*_smooth1.mat and "
                        f"smooth2.mat, 2D_DarcyFlow_beta*_Train.hdf5, or a PDEBench 1D file "
                        f"such as 1D_Advection_Sols_beta0.4.hdf5)")
    return "\n".join(describe_file(p) for p in files)
