"""Reading and validating Darcy files: FNO MATLAB (v5 and v7.3) and PDEBench HDF5.

Every fault a file can have (missing, truncated, corrupt, a field absent, a wrong shape, NaN/inf,
fewer samples than asked) becomes one :class:`MonaError` line naming the file and the fault.
Arrays come back as float32 numpy arrays with samples first: ``(N, R, R)``.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mona_tune.errors import MonaError
from mona_tune.tasks.generate import pdebench_filename, pdebench_n_test

FNO_FIELDS = ("coeff", "sol")
PDEBENCH_FIELDS = ("nu", "tensor", "x-coordinate", "y-coordinate")
FNO_GLOB = "piececonst_r*_N*_smooth{part}.mat"
PDEBENCH_GLOB = "2D_DarcyFlow_beta*_Train.hdf5"
FORMAT_NAMES = {"fno-v5": "FNO MATLAB v5", "fno-v73": "FNO MATLAB v7.3 (HDF5)",
                "pdebench": "PDEBench HDF5", "pdebench-1d": "PDEBench 1D HDF5 (one tensor)",
                "pdebench-1d-groups": "PDEBench 1D HDF5 (one group per sample)"}


@contextlib.contextmanager
def file_errors(path: Path, doing: str = "reading") -> Iterator[None]:
    """Turn any failure of a file library into a one-line MonaError naming the file."""
    try:
        yield
    except MonaError:
        raise
    except FileNotFoundError:
        raise MonaError(f"{path}: no such file") from None
    except Exception as e:  # h5py/scipy raise OSError, ValueError, IndexError, ... on bad bytes
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MonaError(f"{path}: {doing} failed, truncated or corrupt file ({detail})") from None


def _require_file(path: Path) -> None:
    if not path.exists():
        raise MonaError(f"{path}: no such file")
    if not path.is_file():
        raise MonaError(f"{path}: not a file")


def is_hdf5(path: Path) -> bool:
    import h5py

    with file_errors(path, "opening"):
        return bool(h5py.is_hdf5(path))


def detect_format(path: Path) -> str:
    """``fno-v5``, ``fno-v73``, ``pdebench`` (2D Darcy), ``pdebench-1d`` (one tensor) or
    ``pdebench-1d-groups`` (one group per sample) for one file, from its contents."""
    import h5py

    _require_file(path)
    if is_hdf5(path):
        with file_errors(path, "opening"), h5py.File(path, "r") as f:
            keys = set(f.keys())
            first = f[min(keys)] if keys else None
            groups = isinstance(first, h5py.Group) and "data" in first
        if {"nu", "tensor"} <= keys:
            return "pdebench"
        if "tensor" in keys:
            return "pdebench-1d"
        if {"coeff", "sol"} & keys:
            return "fno-v73"
        if groups:
            return "pdebench-1d-groups"
        shown = ", ".join(sorted(keys)[:8]) + (", ..." if len(keys) > 8 else "")
        raise MonaError(f"{path}: HDF5 file with neither FNO fields (coeff, sol), PDEBench "
                        f"fields (nu, tensor; or tensor alone for 1D) nor sample groups holding "
                        f"'data'; it has: {shown or 'nothing'}")
    _check_mat_v5(path)
    return "fno-v5"


def _check_mat_v5(path: Path) -> None:
    """A MATLAB v5 file: its 128-byte header, then top-level elements that end with the file.

    Walking the element tags finds a truncated file before scipy does (it silently lists only
    the variables that are complete).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(128)
        if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
            raise MonaError(f"{path}: neither a MATLAB v5 nor an HDF5 (v7.3) file, or corrupt")
        order = "<" if head[126:128] == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            fh.seek(pos)
            kind, nbytes = struct.unpack(order + "II", fh.read(8))
            if kind >> 16:  # small data element: tag and data share 8 bytes
                pos += 8
                continue
            pos += 8 + nbytes + (-nbytes % 8 if kind != 15 else 0)  # 15 = miCOMPRESSED
        if pos > size:
            raise MonaError(f"{path}: truncated file (a MATLAB element ends at byte {pos}, "
                            f"the file at {size})")


# ---------------------------------------------------------------- steps
def fno_step(resolution: int, target: int, path: Path) -> int:
    """FNO subsampling: every ``step``-th node, ``(R − 1) / (target − 1)`` exactly (421 → 85: 5)."""
    if target > resolution or (resolution - 1) % (target - 1):
        raise MonaError(f"{path}: a {resolution}-point grid cannot be subsampled to {target} points "
                        f"(needs (R-1)/(target-1) integral, e.g. 421 -> 85, 43, 29, 22, 15)")
    return (resolution - 1) // (target - 1)


def pdebench_step(resolution: int, target: int, path: Path) -> int:
    """PDEBench's ``reduced_resolution``: ``x[::step]`` must leave exactly ``target`` points."""
    step = resolution // target if target <= resolution else 0
    if step < 1 or -(-resolution // step) != target:
        raise MonaError(f"{path}: a {resolution}-cell grid cannot be reduced to {target} cells by "
                        f"taking every k-th cell (e.g. 128 -> 128, 64, 32)")
    return step


# ---------------------------------------------------------------- validation
def _check_numeric(path: Path, name: str, dtype) -> None:
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise MonaError(f"{path}: field {name!r} has dtype {dtype}, expected real numbers")


def _check_finite(path: Path, name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise MonaError(f"{path}: field {name!r} holds {bad} NaN/inf values")


def _check_count(path: Path, available: int, wanted: int, what: str, asked: str = "") -> None:
    if wanted > available:
        raise MonaError(f"{path}: holds {available} {what} samples, {asked or wanted} asked")


# ---------------------------------------------------------------- FNO
@dataclass(frozen=True)
class FnoFile:
    path: Path
    version: str  # "fno-v5" or "fno-v73"
    n: int
    resolution: int


def fno_header(path: Path) -> FnoFile:
    """Format, sample count and grid size of an FNO file, checked without loading the arrays."""
    import h5py
    import scipy.io

    fmt = detect_format(path)
    if fmt == "pdebench":
        raise MonaError(f"{path}: a PDEBench file, not an FNO .mat file (use task pdebench-darcy)")
    shapes: dict[str, tuple[int, ...]] = {}
    if fmt == "fno-v73":
        with file_errors(path), h5py.File(path, "r") as f:
            for name in FNO_FIELDS:
                if name in f:
                    if not isinstance(f[name], h5py.Dataset):
                        raise MonaError(f"{path}: field {name!r} is not an array")
                    _check_numeric(path, name, f[name].dtype)
                    shapes[name] = tuple(reversed(f[name].shape))  # MATLAB order (N, R, R)
    else:
        with file_errors(path):
            for name, shape, cls in scipy.io.whosmat(str(path)):
                if name in FNO_FIELDS:
                    if cls not in ("double", "single") and not cls.startswith(("int", "uint")):
                        raise MonaError(f"{path}: field {name!r} is MATLAB class {cls}, "
                                        f"expected numbers")
                    shapes[name] = tuple(shape)
    for name in FNO_FIELDS:
        if name not in shapes:
            raise MonaError(f"{path}: no field {name!r} (an FNO Darcy file holds coeff and sol)")
    shape = shapes["coeff"]
    layout = "(R, R, N) as MATLAB v7.3 stores (N, R, R)" if fmt == "fno-v73" else "(N, R, R)"
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 3:
        raw = tuple(reversed(shape)) if fmt == "fno-v73" else shape
        raise MonaError(f"{path}: field 'coeff' has shape {raw}, expected {layout}")
    if shapes["sol"] != shape:
        raw = [tuple(reversed(s)) if fmt == "fno-v73" else s for s in (shape, shapes["sol"])]
        raise MonaError(f"{path}: fields 'coeff' {raw[0]} and 'sol' {raw[1]} differ in shape")
    return FnoFile(path, fmt, shape[0], shape[1])


def read_fno(path: Path, n: int, step: int, what: str = "n",
             start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``start .. start + n − 1`` of ``coeff`` and ``sol`` (the first ``n`` by default),
    every ``step``-th node, float32 (n, r, r).

    ``what`` names the count in messages (``n_train``, ``n_test``).
    """
    import h5py
    import scipy.io

    head = fno_header(path)
    _check_count(path, head.n, start + n, "", f"{what}={n}" + (f" after {start}" if start else ""))
    rows = slice(start, start + n)
    out = []
    for name in FNO_FIELDS:
        with file_errors(path):
            if head.version == "fno-v73":
                with h5py.File(path, "r") as f:
                    # stored (R, R, N): slice there, then reverse the axes back to (N, R, R)
                    arr = f[name][::step, ::step, rows].transpose(2, 1, 0)
            else:
                full = scipy.io.loadmat(str(path), variable_names=[name])[name]
                if full.shape != (head.n, head.resolution, head.resolution):
                    raise MonaError(f"{path}: field {name!r} has shape {full.shape} when read, "
                                    f"header says {(head.n, head.resolution, head.resolution)} "
                                    f"(truncated file?)")
                arr = full[rows, ::step, ::step]
                del full
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        _check_finite(path, name, arr)
        out.append(arr)
    return out[0], out[1]


def find_fno_files(directory: Path) -> tuple[Path, Path]:
    """The smooth1 (train) and smooth2 (test) files of a directory; one of each."""
    found = []
    for part in (1, 2):
        matches = sorted(directory.glob(FNO_GLOB.format(part=part)))
        if not matches:
            others = sorted(p.name for p in directory.glob(PDEBENCH_GLOB))
            hint = f" (it holds PDEBench files: {', '.join(others)}; use task pdebench-darcy)" \
                if others else ""
            raise MonaError(f"{directory}: no FNO Darcy file "
                            f"{FNO_GLOB.format(part=part)}{hint}")
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise MonaError(f"{directory}: several smooth{part} files ({names}); keep one")
        found.append(matches[0])
    return found[0], found[1]


def fno_files(data_dir: Path) -> tuple[Path, Path]:
    """Train and test files from a directory, or from the path of either file of the pair."""
    if not data_dir.exists():
        raise MonaError(f"{data_dir}: no such file or directory")
    if data_dir.is_dir():
        return find_fno_files(data_dir)
    name = data_dir.name
    for part, other in (("smooth1", "smooth2"), ("smooth2", "smooth1")):
        if name.endswith(f"_{part}.mat"):
            pair = find_fno_files(data_dir.parent)
            if data_dir.resolve() not in (p.resolve() for p in pair):
                raise MonaError(f"{data_dir}: its directory holds other FNO files; "
                                f"give the directory or keep one {other} file beside it")
            return pair
    raise MonaError(f"{data_dir}: not an FNO Darcy file name (piececonst_r*_N*_smooth1.mat); "
                    f"give the directory holding smooth1 and smooth2")


# ---------------------------------------------------------------- PDEBench
@dataclass(frozen=True)
class PdebenchFile:
    path: Path
    n: int
    resolution: int
    beta: float | None


def pdebench_file(data_dir: Path, beta: float) -> Path:
    """``2D_DarcyFlow_beta{β}_Train.hdf5`` in a directory, or the file given directly."""
    if not data_dir.exists():
        raise MonaError(f"{data_dir}: no such file or directory")
    if data_dir.is_file():
        return data_dir
    path = data_dir / pdebench_filename(beta)
    if not path.exists():
        others = sorted(p.name for p in data_dir.glob(PDEBENCH_GLOB))
        if others:
            raise MonaError(f"{data_dir}: no {path.name} for beta={beta} "
                            f"(found {', '.join(others)}; set beta to match)")
        fno = sorted(p.name for p in data_dir.glob("piececonst_r*_N*_smooth*.mat"))
        hint = f"; it holds FNO files ({', '.join(fno)}): use task darcy" if fno else ""
        raise MonaError(f"{data_dir}: no PDEBench Darcy file {path.name}{hint}")
    return path


def pdebench_header(path: Path) -> PdebenchFile:
    import h5py

    _require_file(path)
    if not is_hdf5(path):
        raise MonaError(f"{path}: not an HDF5 file (PDEBench Darcy files are HDF5)")
    with file_errors(path), h5py.File(path, "r") as f:
        for name in PDEBENCH_FIELDS:
            if name not in f:
                raise MonaError(f"{path}: no dataset {name!r} (a PDEBench Darcy file holds "
                                f"{', '.join(PDEBENCH_FIELDS)})")
            if not isinstance(f[name], h5py.Dataset):
                raise MonaError(f"{path}: {name!r} is not a dataset")
            _check_numeric(path, name, f[name].dtype)
        nu, u = f["nu"].shape, f["tensor"].shape
        x, y = f["x-coordinate"].shape, f["y-coordinate"].shape
        beta = f.attrs.get("beta")
    if len(nu) != 3 or nu[1] != nu[2] or nu[1] < 2:
        raise MonaError(f"{path}: dataset 'nu' has shape {nu}, expected (N, R, R)")
    if u != (nu[0], 1, nu[1], nu[2]):
        raise MonaError(f"{path}: dataset 'tensor' has shape {u}, expected "
                        f"{(nu[0], 1, nu[1], nu[2])} to match 'nu' {nu}")
    for name, shape in (("x-coordinate", x), ("y-coordinate", y)):
        if shape != (nu[1],):
            raise MonaError(f"{path}: dataset {name!r} has shape {shape}, expected {(nu[1],)}")
    beta = float(np.asarray(beta).reshape(-1)[0]) if beta is not None else None
    return PdebenchFile(path, nu[0], nu[1], beta)


def read_pdebench(path: Path, n_train: int | None, n_test: int | None, step: int) -> dict:
    """PDEBench's split (first int(0.1·N) samples = test), every ``step``-th cell, float32.

    Returns ``a_train``, ``u_train`` (n, r, r), ``a_test``, ``u_test``, ``x``, ``y`` (r,).
    ``n_train``/``n_test`` (None: all) take the first samples of each part. Only those samples
    are read, by h5py slices every ``step``-th cell: a 10 000-sample file never is whole in memory.
    """
    import h5py

    head = pdebench_header(path)
    test_idx = pdebench_n_test(head.n)
    n_test = test_idx if n_test is None else n_test
    n_train = head.n - test_idx if n_train is None else n_train
    if test_idx < 1:
        raise MonaError(f"{path}: holds {head.n} samples, too few for a 10% test split")
    _check_count(path, test_idx, n_test, "test (first 10%)", f"n_test={n_test}")
    _check_count(path, head.n - test_idx, n_train, "training (last 90%)", f"n_train={n_train}")
    out = {}
    with file_errors(path), h5py.File(path, "r") as f:
        nu, u = f["nu"], f["tensor"]
        parts = {"test": slice(0, n_test), "train": slice(test_idx, test_idx + n_train)}
        for part, rows in parts.items():
            out[f"a_{part}"] = nu[rows, ::step, ::step]
            out[f"u_{part}"] = u[rows, 0, ::step, ::step]
        out["x"] = f["x-coordinate"][::step]
        out["y"] = f["y-coordinate"][::step]
    for name, arr in out.items():
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
        field = {"a": "nu", "u": "tensor", "x": "x-coordinate", "y": "y-coordinate"}[name[0]]
        _check_finite(path, field, out[name])
    return out
