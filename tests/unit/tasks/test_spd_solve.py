"""The generator's sparse Cholesky: equal to scipy's spsolve on the same operator, independent of
the order samples meet the shared analysis, and scipy's LU where MKL is missing."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mona_tune.tasks import spd_solve
from mona_tune.tasks.generate import (darcy_operator, darcy_upper, fno_coefficient,
                                      pdebench_coefficient, sample_rng, solve_darcy)

CASES = [("fno", "node", 33), ("fno", "node", 129), ("pdebench", "cell", 32),
         ("pdebench", "cell", 128)]


def coefficient(fmt: str, resolution: int, index: int) -> np.ndarray:
    rng = sample_rng(0, 1, index)
    if fmt == "fno":
        return fno_coefficient(rng, resolution)
    return pdebench_coefficient(rng, resolution)


def unknowns(u: np.ndarray, grid: str) -> np.ndarray:
    return (u[1:-1, 1:-1] if grid == "node" else u).ravel()


@pytest.mark.parametrize("fmt,grid,resolution", CASES)
def test_solve_equals_spsolve(fmt, grid, resolution):
    for index in range(2):  # the second sample reuses the first one's analysis
        a = coefficient(fmt, resolution, index)
        f = 1.0 if fmt == "fno" else 0.1
        ref = spla.spsolve(darcy_operator(a, grid), np.full(a.size if grid == "cell" else
                                                            (resolution - 2) ** 2, f))
        got = unknowns(solve_darcy(a, f, grid), grid)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-8


@pytest.mark.parametrize("grid", ["node", "cell"])
def test_upper_triangle_is_the_operator(grid):
    a = coefficient("fno", 9, 0)
    A, U = darcy_operator(a, grid), darcy_upper(a, grid)
    assert U.format == "csr" and U.has_sorted_indices and U.indices.dtype == np.int32
    np.testing.assert_array_equal(U.toarray(), np.triu(A.toarray()))


def test_result_does_not_depend_on_the_sample_analysed_first():
    first, second = (darcy_upper(coefficient("fno", 65, i), "node") for i in (0, 1))
    rhs = np.ones(first.shape[0])
    spd_solve.release()
    fresh = spd_solve.solve_spd(second, rhs)
    spd_solve.release()
    spd_solve.solve_spd(first, rhs)  # the analysis now comes from another sample's solve
    np.testing.assert_array_equal(spd_solve.solve_spd(second, rhs), fresh)


def test_a_new_pattern_gets_its_own_analysis():
    for resolution in (17, 33, 17):
        a = coefficient("pdebench", resolution, 0)
        A = darcy_operator(a, "cell")
        x = spd_solve.solve_spd(darcy_upper(a, "cell"), np.ones(A.shape[0]))
        np.testing.assert_allclose(A @ x, 1.0, rtol=1e-10)


def test_without_mkl_scipy_solves(monkeypatch):
    monkeypatch.setattr(spd_solve, "mkl_runtime", lambda: None)
    a = coefficient("fno", 33, 0)
    ref = spla.spsolve(darcy_operator(a, "node"), np.ones(31 * 31))
    got = unknowns(solve_darcy(a, 1.0, "node"), "node")
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-12


@pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                    reason="the mkl wheel is a dependency on Linux x86_64 only")
def test_mkl_is_there_where_it_is_a_dependency():
    assert spd_solve.mkl_runtime() is not None


@pytest.mark.skipif(spd_solve.mkl_runtime() is None, reason="no MKL: scipy's LU solves")
def test_not_positive_definite_is_an_error():
    with pytest.raises(np.linalg.LinAlgError, match="PARDISO"):
        spd_solve.solve_spd(sp.csr_matrix(-np.eye(3)), np.ones(3))
    spd_solve.release()
