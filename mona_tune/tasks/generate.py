"""Darcy flow data in the two real file formats, generated the way the originals were.

``fno``: the FNO / NAS-Bench-360 recipe. A Gaussian random field with covariance (−Δ + 9I)^−2 (cosine
basis, zero-flux boundary, zero mean) on the R×R node grid of the unit square, thresholded to a = 12
where ≥ 0 and 3 where < 0; u solves −∇·(a∇u) = 1 with u = 0 on the boundary. FNO's MATLAB solver
interpolates a onto its grid with splines first; we solve on the node grid directly so that a stays
two-valued (the thresholds are applied on that grid anyway).

``pdebench``: the PDEBench recipe. a = sum of 5 Gaussian bumps exp(−|x − c|²/s) with centres uniform
on the domain and s = 0.5·U(0, 1) (PDEBench's unit amplitudes), thresholded at its mean to 1 and 0.1;
u is the steady state of u_t = ∇·(a∇u) + β with zero boundary values, i.e. −∇·(a∇u) = β on the
R×R cell-centred grid with the wall half a cell away. PDEBench thresholds at the mean over the whole
batch; we use each sample's own mean so that a sample depends only on its own seed.

Both use the same 5-point finite-volume operator with arithmetic-mean face coefficients and a sparse
Cholesky solve (:mod:`mona_tune.tasks.spd_solve`); :func:`darcy_operator` is public so that tests can
check the discrete residual.

Every sample draws from its own generator, ``SeedSequence(seed, spawn_key=(part, index))``, so the
data depend on the seed only, never on the number of worker processes.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.fft
import scipy.sparse as sp

from mona_tune.cache import atomic_path
from mona_tune.errors import MonaError
from mona_tune.tasks.spd_solve import solve_spd
from mona_tune.workers import one_blas_thread, start_method, worker_pool

Grid = Literal["node", "cell"]
FORMATS = ("fno", "pdebench")
DEFAULT_RESOLUTION = {"fno": 421, "pdebench": 128}
DEFAULT_N_TRAIN = {"fno": 1000, "pdebench": 900}
PDEBENCH_TEST_RATIO = 0.1  # PDEBench's split: the first int(N * 0.1) samples are the test set
MAT_V5_MAX_BYTES = 2**31 - 1  # a MATLAB v5 variable holds at most 2 GiB


# ---------------------------------------------------------------- file names
def fno_filename(resolution: int, n: int, part: int) -> str:
    """``piececonst_r{R}_N{n}_smooth{part}.mat``; part 1 = train, 2 = test; n = samples in it."""
    return f"piececonst_r{resolution}_N{n}_smooth{part}.mat"


def pdebench_filename(beta: float) -> str:
    """``2D_DarcyFlow_beta{β}_Train.hdf5`` spelled like PDEBench (0.01, 0.1, 1.0, 10.0, 100.0)."""
    return f"2D_DarcyFlow_beta{float(beta)}_Train.hdf5"


def pdebench_n_test(n_total: int) -> int:
    """Size of PDEBench's test part of a file of ``n_total`` samples (its own expression)."""
    return int(n_total * PDEBENCH_TEST_RATIO)


# ---------------------------------------------------------------- coefficients
def sample_rng(seed: int, part: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(part, index)))


def grf_cosine(rng: np.random.Generator, s: int, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """FNO's GRF: N(0, C), C = τ^(2α−2)(−Δ + τ²I)^(−α) with zero-flux boundary, zero mean.

    Karhunen–Loève expansion on the cosine basis: coefficient k has standard deviation
    τ^(α−1)(π²|k|² + τ²)^(−α/2), i.e. variance ∝ (π²|k|² + 9)^−2 for α = 2, τ = 3; the field is the
    orthonormal inverse DCT (MATLAB's idct2) of the scaled coefficients, with the k = 0 term zeroed.
    """
    coeffs = _grf_scale(s, alpha, tau) * rng.standard_normal((s, s))
    return scipy.fft.idctn(coeffs, type=2, norm="ortho")


@functools.lru_cache(maxsize=8)
def _grf_scale(s: int, alpha: float, tau: float) -> np.ndarray:
    """s times the standard deviation of each cosine coefficient, 0 for k = 0 (shared, read-only)."""
    k1, k2 = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    scale = s * (tau ** (alpha - 1) * (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2))
    scale[0, 0] = 0.0
    scale.flags.writeable = False
    return scale


def fno_coefficient(rng: np.random.Generator, s: int) -> np.ndarray:
    """Piecewise-constant a: 12 where the GRF is ≥ 0, 3 where it is < 0."""
    return np.where(grf_cosine(rng, s) >= 0, 12.0, 3.0)


def pdebench_coefficient(rng: np.random.Generator, s: int, bumps: int = 5) -> np.ndarray:
    """Sum of Gaussian bumps on the cell centres, thresholded at its mean to 1 and 0.1."""
    xc = (np.arange(s) + 0.5) / s
    centres = rng.uniform(0.0, 1.0, size=(bumps, 2))
    widths = 0.5 * rng.uniform(0.0, 1.0, size=bumps)
    widths = np.maximum(widths, 1e-12)  # U(0,1) can return exactly 0
    field = np.zeros((s, s))
    for (cx, cy), w in zip(centres, widths):
        field += np.exp(-((xc[:, None] - cx) ** 2 + (xc[None, :] - cy) ** 2) / w)
    return np.where(field > field.mean(), 1.0, 0.1)


# ---------------------------------------------------------------- the discrete operator
def _face_coefficients(a: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, float]:
    """Face coefficients (faces across axis 0, faces across axis 1) of the unknowns, and h.

    ``node``: unknowns are the interior nodes of an R×R grid including the boundary (h = 1/(R−1));
    every face coefficient is the mean of the two nodes it joins, boundary nodes included.
    ``cell``: unknowns are all R×R cell centres (h = 1/R); interior faces take the mean of the two
    cells, wall faces the cell's own value, doubled because the wall (u = 0) is h/2 away.
    """
    if grid == "node":
        h = 1.0 / (a.shape[0] - 1)
        f0 = 0.5 * (a[1:, 1:-1] + a[:-1, 1:-1])
        f1 = 0.5 * (a[1:-1, 1:] + a[1:-1, :-1])
    elif grid == "cell":
        h = 1.0 / a.shape[0]
        f0 = np.concatenate([2 * a[:1], 0.5 * (a[1:] + a[:-1]), 2 * a[-1:]], axis=0)
        f1 = np.concatenate([2 * a[:, :1], 0.5 * (a[:, 1:] + a[:, :-1]), 2 * a[:, -1:]], axis=1)
    else:
        raise ValueError(f"unknown grid {grid!r}")
    return f0, f1, h


@functools.lru_cache(maxsize=8)
def _upper_pattern(m0: int, m1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR pattern of the upper triangle on an m0×m1 grid of unknowns in C order: per row the
    entries (i, j), (i, j+1), (i+1, j) in that (column) order; also which of the three exist."""
    exists = np.ones((m0, m1, 3), dtype=bool)
    exists[:, -1, 1] = False  # no right neighbour at a row's end
    exists[-1, :, 2] = False  # no neighbour below in the last row
    k = np.arange(m0 * m1).reshape(m0, m1)
    cols = np.stack([k, k + 1, k + m1], axis=-1)[exists].astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(exists.sum(axis=-1).ravel())]).astype(np.int32)
    for array in (exists, cols, indptr):
        array.flags.writeable = False
    return exists, cols, indptr


def darcy_upper(a: np.ndarray, grid: Grid) -> sp.csr_matrix:
    """Upper triangle (diagonal included) of :func:`darcy_operator`'s matrix, in CSR, built
    directly from the face coefficients: the input of the symmetric solver."""
    a = np.asarray(a, dtype=np.float64)
    f0, f1, h = _face_coefficients(a, grid)
    m0, m1 = f1.shape[0], f0.shape[1]
    exists, cols, indptr = _upper_pattern(m0, m1)
    values = np.empty((m0, m1, 3))
    values[..., 0] = f0[:-1] + f0[1:] + f1[:, :-1] + f1[:, 1:]
    values[:, :-1, 1] = -f1[:, 1:-1]  # link (i, j)–(i, j+1)
    values[:-1, :, 2] = -f0[1:-1]  # link (i, j)–(i+1, j)
    n = m0 * m1
    return sp.csr_matrix((values[exists] / h**2, cols, indptr), shape=(n, n))


def darcy_operator(a: np.ndarray, grid: Grid) -> sp.csc_matrix:
    """The 5-point matrix A of −∇·(a∇u) with u = 0 on the boundary, unknowns in C order.

    For ``grid='node'`` the unknowns are ``u[1:-1, 1:-1]``; for ``grid='cell'`` all of ``u``.
    """
    U = darcy_upper(a, grid)
    return (U + sp.triu(U, k=1).T).tocsc()


def solve_darcy(a: np.ndarray, f: float, grid: Grid) -> np.ndarray:
    """u (same shape as a, float64) with −∇·(a∇u) = f, u = 0 on the boundary.

    A sparse Cholesky whose ordering and symbolic analysis are shared by every sample of a grid
    (:func:`~mona_tune.tasks.spd_solve.solve_spd`).
    """
    U = darcy_upper(a, grid)
    sol = solve_spd(U, np.full(U.shape[0], float(f)))
    if grid == "node":
        u = np.zeros_like(a, dtype=np.float64)
        u[1:-1, 1:-1] = sol.reshape(a.shape[0] - 2, a.shape[1] - 2)
        return u
    return sol.reshape(a.shape)


# ---------------------------------------------------------------- one sample
def make_sample(fmt: str, seed: int, part: int, index: int, resolution: int,
                beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(a, u) of one sample in float64; ``part`` separates the FNO train (1) and test (2) files."""
    rng = sample_rng(seed, part, index)
    if fmt == "fno":
        a = fno_coefficient(rng, resolution)
        return a, solve_darcy(a, 1.0, "node")
    a = pdebench_coefficient(rng, resolution)
    return a, solve_darcy(a, beta, "cell")


# part -> (a, u) output arrays in memory shared with forked workers, which write their samples
# there instead of sending them back through the pool's pipe (a 421² sample is 2.8 MB)
_OUT: dict[int, tuple[np.ndarray, np.ndarray]] | None = None


def _job(args: tuple) -> tuple[int, int, np.ndarray | None, np.ndarray | None]:
    fmt, seed, part, index, resolution, beta = args
    a, u = make_sample(fmt, seed, part, index, resolution, beta)
    if _OUT is not None:
        _OUT[part][0][index], _OUT[part][1][index] = a, u
        return part, index, None, None
    return part, index, a, u


def _shared_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array in an anonymous shared mapping (inherited by forked workers)."""
    count = math.prod(shape)
    buf = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize))
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


def _collect(fmt: str, seed: int, parts: dict[int, int], resolution: int, beta: float,
             workers: int, progress: bool, desc: str,
             dtype) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """part -> (a, u): the samples of each part (part -> sample count), in index order.

    One pool serves every part, so each worker analyses the grid's sparsity pattern once. Forked
    workers write into shared output arrays; spawned ones (platforms without fork) send their
    samples back.
    """
    from tqdm import tqdm

    global _OUT
    jobs = [(fmt, seed, part, i, resolution, beta) for part, n in parts.items() for i in range(n)]
    workers = min(workers, len(jobs))
    fork = workers > 1 and start_method() == "fork"
    empty = _shared_empty if fork else np.empty
    out = {part: (empty((n, resolution, resolution), dtype), empty((n, resolution, resolution),
                                                                    dtype))
           for part, n in parts.items()}
    bar = tqdm(total=len(jobs), desc=desc, unit="sample", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        if workers <= 1:
            _gather(map(_job, jobs), out, bar)
        else:
            _OUT = out if fork else None
            chunk = max(1, min(16, len(jobs) // (4 * workers)))
            with worker_pool(workers, one_blas_thread, start_method(fork)) as pool:
                _gather(pool.imap_unordered(_job, jobs, chunksize=chunk), out, bar)
    finally:
        bar.close()
        _OUT = None
    return out


def _gather(results, out: dict[int, tuple[np.ndarray, np.ndarray]], bar) -> None:
    for part, i, a, u in results:
        if a is not None:
            out[part][0][i], out[part][1][i] = a, u
        bar.update()


# ---------------------------------------------------------------- writers
def _publishable(tmp: Path) -> None:
    """Give a finished temporary file the usual permissions (mkstemp creates it 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def _write_mat(path: Path, coeff: np.ndarray, sol: np.ndarray) -> None:
    import scipy.io

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: savemat would append ".mat" to a name
            scipy.io.savemat(fh, {"coeff": coeff, "sol": sol}, format="5", do_compression=False)
        _publishable(tmp)


def _write_pdebench(path: Path, nu: np.ndarray, u: np.ndarray, beta: float) -> None:
    import h5py

    r = nu.shape[-1]
    centres = ((np.arange(r) + 0.5) / r).astype(np.float32)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("nu", data=nu.astype(np.float32))
            f.create_dataset("tensor", data=u.astype(np.float32)[:, None])
            f.create_dataset("x-coordinate", data=centres)
            f.create_dataset("y-coordinate", data=centres)
            f.attrs["beta"] = np.float32(beta)
        _publishable(tmp)


def check_sizes(out: Path, n_train: int, n_test: int, resolution: int, least: int, unit: str,
                workers: int | None, positive: dict[str, float]) -> None:
    """The checks every generator makes: sample counts, grid size, workers, positive
    parameters (``--name`` flags; ``fin_time`` is ``--end-time``), the output folder."""
    if n_train < 1 or n_test < 1:
        raise MonaError(f"--n-train and --n-test must be ≥ 1 (got {n_train}, {n_test})")
    if resolution < least:
        raise MonaError(f"--resolution must be ≥ {least}{unit} (got {resolution})")
    if workers is not None and workers < 1:
        raise MonaError(f"--workers must be ≥ 1 (got {workers})")
    for k, v in positive.items():
        if not (v > 0 and math.isfinite(v)):
            flag = "--end-time" if k == "fin_time" else f"--{k}"
            raise MonaError(f"{flag} must be a positive number (got {v})")
    if out.exists() and not out.is_dir():
        raise MonaError(f"{out}: exists and is not a directory")


def _check_args(out: Path, fmt: str, n_train: int, n_test: int, resolution: int,
                beta: float, workers: int | None) -> None:
    if fmt not in FORMATS:
        raise MonaError(f"unknown data format {fmt!r} (known: {', '.join(FORMATS)})")
    check_sizes(out, n_train, n_test, resolution, 3, "", workers, {"beta": beta})
    if fmt == "pdebench":
        total = n_train + n_test
        if pdebench_n_test(total) != n_test:
            raise MonaError(
                f"pdebench format: the first 10% of the file is the test set, so --n-test must be "
                f"int(0.1 * (n_train + n_test)) = {pdebench_n_test(total)} for "
                f"{total} samples (e.g. --n-train {9 * n_test} --n-test {n_test})")
    if fmt == "fno" and max(n_train, n_test) * resolution**2 * 8 > MAT_V5_MAX_BYTES:
        raise MonaError(
            f"fno format: {max(n_train, n_test)} samples at {resolution}² exceed the 2 GiB a "
            f"MATLAB v5 variable can hold; use fewer samples per file")


def make_dataset(out: Path | str, fmt: str = "fno", n_train: int | None = None,
                 n_test: int = 100, resolution: int | None = None, seed: int = 0,
                 beta: float = 0.1, workers: int | None = None,
                 progress: bool = False) -> list[Path]:
    """Generate a Darcy dataset in ``out`` in a real file format; return the files written.

    ``fno``: ``piececonst_r{R}_N{n_train}_smooth1.mat`` (train) and ``piececonst_r{R}_N{n_test}_
    smooth2.mat`` (test), MATLAB v5, fields ``coeff`` and ``sol`` (N, R, R) float64 (MATLAB double,
    as in the originals); default R = 421, n_train = 1000. The N in a name is the count in that file.
    ``pdebench``: ``2D_DarcyFlow_beta{β}_Train.hdf5`` with N = n_train + n_test samples, ``nu``
    (N, R, R), ``tensor`` (N, 1, R, R), ``x-coordinate``/``y-coordinate`` (R,) cell centres, attribute
    ``beta``, all float32; default R = 128, n_train = 900. PDEBench reads the first int(0.1·N) samples
    as its test set, so ``n_test`` must equal that (MonaError otherwise); the test samples come first.

    Each file is written beside its final name and renamed into place when complete. ``workers``
    processes (default: all cores) share the samples; the result does not depend on their number.
    """
    out = Path(out)
    n_train = DEFAULT_N_TRAIN.get(fmt, 1000) if n_train is None else int(n_train)
    resolution = DEFAULT_RESOLUTION.get(fmt, 421) if resolution is None else int(resolution)
    _check_args(out, fmt, n_train, n_test, resolution, beta, workers)
    workers = workers or os.cpu_count() or 1
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way, no permission, a read-only disk
        raise MonaError(f"--out {out}: cannot create it ({e.strerror or e})") from None

    if fmt == "fno":
        # both parts first, then the files: an interrupted run leaves no file behind
        counts = {1: n_train, 2: n_test}
        parts = _collect("fno", seed, counts, resolution, beta, workers, progress,
                         f"fno smooth1+2 r{resolution}", np.float64)
        paths = []
        for part, (coeff, sol) in parts.items():
            path = out / fno_filename(resolution, counts[part], part)
            _write_mat(path, coeff, sol)
            paths.append(path)
        return paths

    total = n_train + n_test
    nu, u = _collect("pdebench", seed, {0: total}, resolution, beta, workers, progress,
                     f"pdebench β={beta} r{resolution}", np.float32)[0]
    path = out / pdebench_filename(beta)
    _write_pdebench(path, nu, u, beta)
    return [path]
