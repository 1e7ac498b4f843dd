"""PDEBench's 1D files: names, layouts, reading and writing.

Two layouts, as PDEBench publishes them:

- **one tensor** (advection, Burgers, diffusion-reaction): an HDF5 file with ``tensor``
  (N, T, X) float32, the state of sample n at saved time t on X cell centres; ``x-coordinate``
  (X,) the cell centres; ``t-coordinate`` the saved times (PDEBench's generators store one entry
  more than there are states, ``arange(T + 1) · dt_save``; T entries are accepted too); the
  equation's parameters as file attributes (``beta``; ``Nu``; ``Nu`` and ``rho``) and in the name:
  ``1D_Advection_Sols_beta0.4.hdf5``, ``1D_Burgers_Sols_Nu1.0.hdf5``,
  ``ReacDiff_Nu0.5_Rho1.0.hdf5`` (PDEBench spells a value ``str(value)[:5]``).
  Split (PDEBench's and ORCA's ``UNetDatasetSingle``): the first ``int(0.1·N)`` samples are the
  test set, the rest the training set.
- **one group per sample** (diffusion-sorption, ``1D_diff-sorp_NA_NA.h5``): groups ``0000``,
  ``0001``, … each holding ``data`` (T, X, 1), ``grid/x`` (X,) and ``grid/t`` (T,), and the
  generator's configuration as the group attribute ``config`` (YAML). Split (ORCA's
  ``UNetDatasetMult``): the groups in sorted order, the first ``int(0.9·N)`` train, the rest test.

Reading takes only the two time steps a task pairs, every ``step``-th cell, so a 10 000-sample
file of 201 × 1024 states (8 GB) costs 2 · 40 MB. Every fault of a file is one
:class:`~mona_tune.errors.MonaError` line naming the file and the fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from mona_tune.cache import atomic_path
from mona_tune.errors import MonaError
from mona_tune.tasks.generate import _publishable
from mona_tune.tasks.readers import (_check_count, _check_finite, _check_numeric, _require_file,
                                     file_errors, is_hdf5)

Layout = Literal["tensor", "groups"]
TEST_RATIO = 0.1


@dataclass(frozen=True)
class Family:
    """One PDEBench 1D equation as its files hold it."""

    name: str
    layout: Layout
    params: tuple[str, ...]  # the config fields naming the file (beta; nu; nu, rho)
    attrs: tuple[str, ...]  # the file attributes that hold them
    pattern: str  # glob of the family's file names

    def filename(self, values: dict[str, float]) -> str:
        if self.name == "advection":
            return f"1D_Advection_Sols_beta{_spell(values['beta'])}.hdf5"
        if self.name == "burgers":
            return f"1D_Burgers_Sols_Nu{_spell(values['nu'])}.hdf5"
        if self.name == "diffusion-reaction":
            return f"ReacDiff_Nu{_spell(values['nu'])}_Rho{_spell(values['rho'])}.hdf5"
        return "1D_diff-sorp_NA_NA.h5"


def _spell(value: float) -> str:
    """A parameter as PDEBench writes it in a file name: ``str(value)[:5]`` (0.4, 1.0, 0.001)."""
    return str(float(value))[:5]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("advection", "tensor", ("beta",), ("beta",), "1D_Advection_Sols_beta*.hdf5"),
    Family("burgers", "tensor", ("nu",), ("Nu",), "1D_Burgers_Sols_Nu*.hdf5"),
    Family("diffusion-reaction", "tensor", ("nu", "rho"), ("Nu", "rho"),
           "ReacDiff_Nu*_Rho*.hdf5"),
    Family("diffusion-sorption", "groups", (), (), "1D_diff-sorp_NA_NA.h5"),
)}


def n_test_of(layout: Layout, n: int) -> int:
    """Test samples of an ``n``-sample file, by each layout's own expression."""
    if layout == "tensor":
        return int(n * TEST_RATIO)
    return n - int(n * (1 - TEST_RATIO))


# ---------------------------------------------------------------- finding and describing
def find_file(family: Family, data_dir: Path, values: dict[str, float]) -> Path:
    """The family's file for ``values`` in ``data_dir``, or ``data_dir`` itself when a file."""
    if not data_dir.exists():
        raise MonaError(f"{data_dir}: no such file or directory")
    if data_dir.is_file():
        return data_dir
    path = data_dir / family.filename(values)
    if path.exists():
        return path
    others = sorted(p.name for p in data_dir.glob(family.pattern))
    settings = ", ".join(f"{k}={v:g}" for k, v in values.items())
    if others:
        raise MonaError(f"{data_dir}: no {path.name} for {settings} (found "
                        f"{', '.join(others)}; set {' and '.join(family.params)} to match)")
    raise MonaError(f"{data_dir}: no PDEBench {family.name} file {path.name}")


@dataclass(frozen=True)
class File1D:
    path: Path
    layout: Layout
    n: int  # samples
    n_t: int  # saved times
    nx: int  # cells
    attrs: dict = field(default_factory=dict)  # the equation's parameters found in the file
    groups: tuple[str, ...] = ()  # layout "groups": the sample groups, sorted


def header(path: Path) -> File1D:
    """Check the file's layout and shapes without reading the states."""
    import h5py

    _require_file(path)
    if not is_hdf5(path):
        raise MonaError(f"{path}: not an HDF5 file (PDEBench 1D files are HDF5)")
    with file_errors(path), h5py.File(path, "r") as f:
        if "tensor" in f:
            return _tensor_header(path, f)
        return _groups_header(path, f)


def _dataset(path: Path, f, name: str):
    import h5py

    if name not in f:
        return None
    if not isinstance(f[name], h5py.Dataset):
        raise MonaError(f"{path}: {name!r} is not a dataset")
    _check_numeric(path, name, f[name].dtype)
    return f[name]


def _tensor_header(path: Path, f) -> File1D:
    u = _dataset(path, f, "tensor")
    if u.ndim != 3 or min(u.shape) < 1:
        raise MonaError(f"{path}: dataset 'tensor' has shape {u.shape}, expected (N, T, X) "
                        f"(a 1D PDEBench file)")
    n, n_t, nx = u.shape
    for name, allowed in (("x-coordinate", [(nx,)]), ("t-coordinate", [(n_t + 1,), (n_t,)])):
        d = _dataset(path, f, name)
        if d is None:
            raise MonaError(f"{path}: no dataset {name!r} (a PDEBench 1D file holds tensor, "
                            f"x-coordinate and t-coordinate)")
        if d.shape not in allowed:
            raise MonaError(f"{path}: dataset {name!r} has shape {d.shape}, expected "
                            f"{allowed[0]} for 'tensor' {u.shape}")
    attrs = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in f.attrs.items()
             if np.asarray(v).dtype.kind in "fiu" and np.asarray(v).size == 1}
    return File1D(path, "tensor", n, n_t, nx, attrs)


def _groups_header(path: Path, f) -> File1D:
    import h5py

    groups = tuple(sorted(k for k in f.keys() if isinstance(f[k], h5py.Group)))
    if not groups:
        raise MonaError(f"{path}: neither a dataset 'tensor' nor sample groups (a PDEBench 1D "
                        f"file holds one or the other)")
    first = groups[0]
    d = _dataset(path, f[first], "data")
    if d is None:
        raise MonaError(f"{path}: group {first!r} has no dataset 'data'")
    if d.ndim != 3 or d.shape[2] != 1 or min(d.shape) < 1:
        raise MonaError(f"{path}: {first}/data has shape {d.shape}, expected (T, X, 1)")
    n_t, nx, _ = d.shape
    for name, shape in (("grid/x", (nx,)), ("grid/t", (n_t,))):
        g = _dataset(path, f[first], name)
        if g is None or g.shape != shape:
            got = "missing" if g is None else f"shape {g.shape}"
            raise MonaError(f"{path}: {first}/{name} is {got}, expected shape {shape}")
    return File1D(path, "groups", len(groups), n_t, nx, {}, groups)


# ---------------------------------------------------------------- reading
def read_pair(head: File1D, n_train: int | None, n_test: int | None, t_index: int,
              step: int) -> dict[str, np.ndarray]:
    """The states at time 0 and at saved time ``t_index`` of the split's samples.

    Returns ``u0_train``, ``ut_train``, ``u0_test``, ``ut_test`` (n, X/step) float32 and ``x``
    (X/step,) cell centres. ``n_train``/``n_test`` (None: all) take the first samples of each part.
    """
    path = head.path
    n_te = n_test_of(head.layout, head.n)
    if n_te < 1 or head.n - n_te < 1:
        raise MonaError(f"{path}: holds {head.n} samples, too few for PDEBench's 90/10 split")
    where = ("test (first 10%)", "training (last 90%)") if head.layout == "tensor" else (
        "test (last 10%)", "training (first 90%)")
    n_test = n_te if n_test is None else n_test
    n_train = head.n - n_te if n_train is None else n_train
    _check_count(path, n_te, n_test, where[0], f"n_test={n_test}")
    _check_count(path, head.n - n_te, n_train, where[1], f"n_train={n_train}")
    if not 0 <= t_index < head.n_t:
        raise MonaError(f"{path}: holds {head.n_t} saved times, time index {t_index} asked")
    if head.layout == "tensor":
        rows = {"test": np.arange(n_test), "train": n_te + np.arange(n_train)}
    else:
        cut = head.n - n_te
        rows = {"train": np.arange(n_train), "test": cut + np.arange(n_test)}
    out = {}
    for part, idx in rows.items():
        out[f"u0_{part}"], out[f"ut_{part}"] = _states(head, idx, t_index, step)
    out["x"] = _coordinates(head, step)
    for name, arr in out.items():
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
        _check_finite(path, "tensor" if head.layout == "tensor" else "data", out[name])
    return out


def _states(head: File1D, rows: np.ndarray, t_index: int, step: int):
    import h5py

    with file_errors(head.path), h5py.File(head.path, "r") as f:
        if head.layout == "tensor":
            if not len(rows):
                return np.empty((0, head.nx))[:, ::step], np.empty((0, head.nx))[:, ::step]
            sel = slice(int(rows[0]), int(rows[-1]) + 1)  # contiguous: one hyperslab each
            return f["tensor"][sel, 0, ::step], f["tensor"][sel, t_index, ::step]
        u0, ut = [], []
        for i in rows:
            name = head.groups[i]
            d = f[name].get("data") if isinstance(f[name], h5py.Group) else None
            if d is None or d.shape != (head.n_t, head.nx, 1):
                got = "missing" if d is None else f"shape {d.shape}"
                raise MonaError(f"{head.path}: {name}/data is {got}, expected shape "
                                f"{(head.n_t, head.nx, 1)} like {head.groups[0]}/data")
            u0.append(d[0, ::step, 0])
            ut.append(d[t_index, ::step, 0])
        return np.stack(u0), np.stack(ut)


def _coordinates(head: File1D, step: int) -> np.ndarray:
    import h5py

    with file_errors(head.path), h5py.File(head.path, "r") as f:
        if head.layout == "tensor":
            return f["x-coordinate"][::step]
        return f[head.groups[0]]["grid/x"][::step]


def saved_times(head: File1D) -> np.ndarray:
    """The saved times of the states (the first ``n_t`` entries of the file's time axis)."""
    import h5py

    with file_errors(head.path), h5py.File(head.path, "r") as f:
        t = f["t-coordinate"] if head.layout == "tensor" else f[head.groups[0]]["grid/t"]
        return np.asarray(t[: head.n_t], dtype=np.float64)


# ---------------------------------------------------------------- writing
def write_tensor(path: Path, u: np.ndarray, x: np.ndarray, t: np.ndarray,
                 attrs: dict[str, float]) -> None:
    """A one-tensor file: ``u`` (N, T, X), ``x`` (X,), ``t`` (T + 1,) as PDEBench stores it."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("tensor", data=np.asarray(u, dtype=np.float32))
            f.create_dataset("x-coordinate", data=np.asarray(x, dtype=np.float32))
            f.create_dataset("t-coordinate", data=np.asarray(t, dtype=np.float32))
            for k, v in attrs.items():
                f.attrs[k] = float(v)
        _publishable(tmp)


def write_groups(path: Path, samples: Iterator[np.ndarray], x: np.ndarray, t: np.ndarray,
                 config_yaml: str) -> None:
    """A group-per-sample file: ``0000/data`` (T, X, 1), ``grid/x``, ``grid/t``, attr ``config``."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for i, u in enumerate(samples):
                g = f.create_group(str(i).zfill(4))
                g.create_dataset("data", data=np.asarray(u, dtype=np.float32)[:, :, None])
                g.create_dataset("grid/x", data=np.asarray(x, dtype=np.float32))
                g.create_dataset("grid/t", data=np.asarray(t, dtype=np.float32))
                g.attrs["config"] = config_yaml
        _publishable(tmp)
