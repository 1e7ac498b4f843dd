"""Sparse symmetric positive definite solves that share one sparsity pattern.

Every Darcy sample of a grid has the same 5-point pattern, so MKL PARDISO's fill-reducing ordering
(minimum degree) and symbolic factorisation run once per pattern and process; each sample costs a
numeric Cholesky factorisation and two triangular solves. The analysis sees a canonical matrix of
the pattern, never a sample's values, so a solution does not depend on which sample a process met
first, and MKL runs sequentially, so it does not depend on the number of processes either.

MKL's runtime comes from the ``mkl`` wheel (x86_64 only); where it is missing, scipy's sparse LU
solves instead (the same solutions to rounding, several times slower on large grids).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

MTYPE_SPD = 2  # PARDISO's real symmetric positive definite matrix type
MKL_THREADING_SEQUENTIAL = 1


@functools.cache
def mkl_runtime() -> ctypes.CDLL | None:
    """MKL's single dynamic library (``libmkl_rt``), set to run sequentially; None if absent."""
    path = None
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("mkl")
        path = next((dist.locate_file(f) for f in dist.files or () if "libmkl_rt" in f.name), None)
    except PackageNotFoundError:
        pass
    path = path or ctypes.util.find_library("mkl_rt")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    # before any other MKL call: no OpenMP runtime in the process, safe across fork
    lib.MKL_Set_Threading_Layer(ctypes.c_int(MKL_THREADING_SEQUENTIAL))
    return lib


def _pardiso_input(U: sp.spmatrix) -> sp.csr_matrix:
    """U as CSR with sorted int32 indices and float64 values (copied only where it is not)."""
    U = sp.csr_matrix(U)
    if not U.has_sorted_indices:
        U = U.sorted_indices()
    if U.indices.dtype != np.int32 or U.indptr.dtype != np.int32 or U.dtype != np.float64:
        U = sp.csr_matrix((U.data.astype(np.float64), U.indices.astype(np.int32),
                           U.indptr.astype(np.int32)), shape=U.shape)
    return U


class Pardiso:
    """A PARDISO instance analysed for one pattern (upper triangle, CSR); see :func:`solve_spd`."""

    def __init__(self, lib: ctypes.CDLL, U: sp.csr_matrix):
        self._lib = lib
        self.n = U.shape[0]
        self.indptr, self.indices = U.indptr.copy(), U.indices.copy()
        self._pt = np.zeros(64, dtype=np.int64)  # PARDISO's opaque handle
        self.iparm = np.zeros(64, dtype=np.int32)
        lib.pardisoinit(self._ptr(self._pt), ctypes.byref(ctypes.c_int32(MTYPE_SPD)),
                        self._ptr(self.iparm))
        self.iparm[1] = 0  # iparm(2): minimum degree; fewer flops than METIS on these 2D grids
        self.iparm[23] = 10  # iparm(24): the improved two-level factorisation, faster on one core
        self.iparm[34] = 1  # iparm(35): zero-based indices, as scipy stores them
        rows = np.repeat(np.arange(self.n), np.diff(U.indptr))
        canonical = np.where(U.indices == rows, 8.0, -1.0)  # diagonally dominant: SPD
        self._call(11, canonical, np.zeros(self.n))  # ordering + symbolic factorisation

    @staticmethod
    def _ptr(array: np.ndarray) -> ctypes.c_void_p:
        return array.ctypes.data_as(ctypes.c_void_p)

    def matches(self, U: sp.csr_matrix) -> bool:
        return (U.shape[0] == self.n and np.array_equal(U.indptr, self.indptr)
                and np.array_equal(U.indices, self.indices))

    def _call(self, phase: int, data: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(data, dtype=np.float64)
        rhs = np.ascontiguousarray(rhs, dtype=np.float64)
        x = np.zeros_like(rhs)
        err = ctypes.c_int32(0)
        one = ctypes.c_int32(1)
        self._lib.pardiso(
            self._ptr(self._pt), ctypes.byref(one), ctypes.byref(one),
            ctypes.byref(ctypes.c_int32(MTYPE_SPD)), ctypes.byref(ctypes.c_int32(phase)),
            ctypes.byref(ctypes.c_int32(self.n)), self._ptr(data), self._ptr(self.indptr),
            self._ptr(self.indices), None, ctypes.byref(one), self._ptr(self.iparm),
            ctypes.byref(ctypes.c_int32(0)), self._ptr(rhs), self._ptr(x), ctypes.byref(err))
        if err.value != 0:
            raise np.linalg.LinAlgError(f"PARDISO phase {phase} failed with error {err.value}"
                                        + (" (not positive definite)" if err.value == -4 else ""))
        return x

    def solve(self, U: sp.csr_matrix, rhs: np.ndarray) -> np.ndarray:
        """x with A x = rhs: numeric factorisation and solve (phase 23) on the stored analysis."""
        x = self._call(23, U.data, rhs)
        if not np.isfinite(x).all():  # PARDISO may return NaN rather than error -4
            raise np.linalg.LinAlgError("PARDISO: the matrix is not positive definite")
        return x

    def release(self) -> None:
        self._call(-1, np.zeros(0), np.zeros(0))


_current: Pardiso | None = None  # the analysis of the last pattern this process solved


def release() -> None:
    """Free this process's PARDISO analysis and factor; the next solve analyses again."""
    global _current
    if _current is not None:
        _current.release()
    _current = None


def solve_spd(U: sp.spmatrix, rhs: np.ndarray) -> np.ndarray:
    """x with A x = rhs for the symmetric positive definite A whose upper triangle is U.

    Reuses the process's PARDISO analysis while the pattern stays the same; scipy's LU without MKL.
    """
    global _current
    lib = mkl_runtime()
    if lib is None:
        A = (U + sp.triu(U, k=1).T).tocsc()
        # A is symmetric: an ordering of A + Aᵀ keeps the fill-in of the 2D grid low
        return spla.splu(A, permc_spec="MMD_AT_PLUS_A").solve(rhs)
    U = _pardiso_input(U)
    if _current is None or not _current.matches(U):
        release()
        _current = Pardiso(lib, U)
    return _current.solve(U, rhs)
