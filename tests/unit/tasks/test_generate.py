"""The Darcy generator: file layout, determinism, and that solutions solve the discrete equation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from mona_tune.errors import MonaError
from mona_tune.tasks.generate import darcy_operator, make_dataset, make_sample


def relative_residual(a: np.ndarray, u: np.ndarray, f: float, grid: str) -> float:
    """‖A u − f‖ / ‖f‖ in float64 on the unknowns of ``grid``."""
    A = darcy_operator(np.asarray(a, np.float64), grid)
    unknowns = u[1:-1, 1:-1] if grid == "node" else u
    rhs = np.full(A.shape[0], f)
    return float(np.linalg.norm(A @ np.asarray(unknowns, np.float64).ravel() - rhs)
                 / np.linalg.norm(rhs))


def test_fno_files(tmp_path):
    paths = make_dataset(tmp_path, fmt="fno", n_train=8, n_test=4, resolution=85, seed=3,
                         workers=1)
    assert [p.name for p in paths] == ["piececonst_r85_N8_smooth1.mat",
                                       "piececonst_r85_N4_smooth2.mat"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    for path, n in zip(paths, (8, 4)):
        m = scipy.io.loadmat(str(path))
        for name in ("coeff", "sol"):
            assert m[name].shape == (n, 85, 85) and m[name].dtype == np.float64
        assert set(np.unique(m["coeff"])) == {3.0, 12.0}
        sol = m["sol"]
        assert np.all(sol[:, 0] == 0) and np.all(sol[:, -1] == 0)
        assert np.all(sol[:, :, 0] == 0) and np.all(sol[:, :, -1] == 0)
        assert np.all(sol[:, 1:-1, 1:-1] > 0)  # f = 1 > 0: maximum principle
        for a, u in zip(m["coeff"], sol):  # a float64 file keeps the solver's precision
            assert relative_residual(a, u, 1.0, "node") < 1e-8
    # train and test samples come from different streams
    assert not np.array_equal(scipy.io.loadmat(str(paths[0]))["coeff"][:4],
                              scipy.io.loadmat(str(paths[1]))["coeff"])


def test_pdebench_file(tmp_path):
    (path,) = make_dataset(tmp_path, fmt="pdebench", n_train=9, n_test=1, resolution=32, seed=0,
                           beta=1.0, workers=1)
    assert path.name == "2D_DarcyFlow_beta1.0_Train.hdf5"
    with h5py.File(path, "r") as f:
        assert f["nu"].shape == (10, 32, 32) and f["tensor"].shape == (10, 1, 32, 32)
        for name in ("nu", "tensor", "x-coordinate", "y-coordinate"):
            assert f[name].dtype == np.float32
        np.testing.assert_allclose(f["x-coordinate"][:], (np.arange(32) + 0.5) / 32, rtol=1e-6)
        np.testing.assert_array_equal(f["x-coordinate"][:], f["y-coordinate"][:])
        assert f.attrs["beta"] == np.float32(1.0)
        nu, u = f["nu"][:], f["tensor"][:, 0]
    assert set(np.unique(nu)) == {np.float32(0.1), np.float32(1.0)}
    assert np.all(u > 0)
    for a, sol in zip(nu, u):  # float32 on disk: residual up to its rounding
        assert relative_residual(a, sol, 1.0, "cell") < 1e-2


@pytest.mark.parametrize("fmt,grid,resolution,f", [("fno", "node", 85, 1.0),
                                                    ("pdebench", "cell", 64, 0.1)])
def test_solver_residual_float64(fmt, grid, resolution, f):
    for index in range(3):
        a, u = make_sample(fmt, seed=0, part=1, index=index, resolution=resolution, beta=f)
        assert u.dtype == np.float64
        assert relative_residual(a, u, f, grid) < 1e-8


def test_operator_is_symmetric_and_matches_constant_coefficient_laplacian():
    a = np.full((6, 6), 2.0)
    A = darcy_operator(a, "node").toarray()
    np.testing.assert_allclose(A, A.T)
    h2 = (1 / 5) ** 2
    # interior node with four interior neighbours: 4a/h² on the diagonal, −a/h² off it
    row = A[5]  # unknown (1, 1) of the 4×4 interior
    assert row[5] == pytest.approx(4 * 2 / h2)
    assert sorted(row[[1, 4, 6, 9]]) == pytest.approx([-2 / h2] * 4)
    assert np.count_nonzero(row) == 5
    C = darcy_operator(a, "cell").toarray()
    # a corner cell: two interior faces (a/h²) and two walls at h/2 (2a/h²)
    assert C[0, 0] == pytest.approx((2 + 2 + 4 + 4) / (1 / 6) ** 2)


def dense_darcy_operator(a: np.ndarray, grid: str) -> np.ndarray:
    """−∇·(a∇u), u = 0 on the boundary, assembled plainly: one unknown and one face at a time.

    Written from the finite-volume balance of each unknown, independently of the generator: the
    flux through a face is (face coefficient) × (difference of u across it) / distance, the face
    coefficient of two unknowns is the mean of their a; on the ``cell`` grid a wall face takes the
    cell's own a and the wall (u = 0) is h/2 away.
    """
    r = a.shape[0]
    if grid == "node":
        h, lo, hi = 1.0 / (r - 1), 1, r - 1  # unknowns: nodes lo..hi-1 in both axes
    else:
        h, lo, hi = 1.0 / r, 0, r
    m = hi - lo
    index = {(i, j): (i - lo) * m + (j - lo) for i in range(lo, hi) for j in range(lo, hi)}
    A = np.zeros((m * m, m * m))
    for (i, j), row in index.items():
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ni, nj = i + di, j + dj
            if grid == "cell" and not (0 <= ni < r and 0 <= nj < r):  # a wall face, h/2 away
                A[row, row] += a[i, j] / (h / 2) / h
                continue
            k = (a[i, j] + a[ni, nj]) / 2
            A[row, row] += k / h**2
            if (ni, nj) in index:  # else a boundary node, where u = 0
                A[row, index[ni, nj]] -= k / h**2
    return A


@pytest.mark.parametrize("grid", ["node", "cell"])
def test_operator_matches_independent_assembly_with_variable_coefficient(grid):
    rng = np.random.default_rng(5)
    r = 9
    # piecewise constant on 3×3 blocks, three distinct values: faces between unequal cells occur
    blocks = rng.choice([0.1, 3.0, 12.0], size=(3, 3))
    a = np.kron(blocks, np.ones((3, 3)))
    a[0, 0], a[4, 7] = 7.0, 0.5  # lone cells, so that no face pairs repeat the same two values
    assert len(np.unique(a)) >= 4
    A = darcy_operator(a, grid).toarray()
    D = dense_darcy_operator(a, grid)
    unknowns = (r - 2) ** 2 if grid == "node" else r * r
    assert A.shape == D.shape == (unknowns, unknowns)
    np.testing.assert_allclose(A, D, rtol=1e-12, atol=1e-9)
    v = rng.standard_normal(A.shape[0])
    np.testing.assert_allclose(darcy_operator(a, grid) @ v, D @ v, rtol=1e-12, atol=1e-8)
    # and the coefficient matters: the constant-coefficient operator is far from it
    assert np.abs(darcy_operator(np.full_like(a, a.mean()), grid).toarray() - D).max() > 1.0


def test_deterministic_across_workers(tmp_path):
    def arrays(out, workers, seed=7):
        paths = make_dataset(out, fmt="fno", n_train=6, n_test=2, resolution=33, seed=seed,
                             workers=workers)
        return [scipy.io.loadmat(str(p))[k] for p in paths for k in ("coeff", "sol")]

    one, two = arrays(tmp_path / "w1", 1), arrays(tmp_path / "w2", 2)
    for x, y in zip(one, two):
        np.testing.assert_array_equal(x, y)
    other = arrays(tmp_path / "s8", 1, seed=8)
    assert not np.array_equal(one[0], other[0])


def test_pdebench_deterministic(tmp_path):
    a = make_dataset(tmp_path / "a", fmt="pdebench", n_train=18, n_test=2, resolution=16,
                     workers=1)[0]
    b = make_dataset(tmp_path / "b", fmt="pdebench", n_train=18, n_test=2, resolution=16,
                     workers=2)[0]
    with h5py.File(a) as fa, h5py.File(b) as fb:
        np.testing.assert_array_equal(fa["nu"][:], fb["nu"][:])
        np.testing.assert_array_equal(fa["tensor"][:], fb["tensor"][:])


@pytest.mark.parametrize("kwargs,fault", [
    ({"fmt": "pdebench", "n_train": 90, "n_test": 11}, "first 10%"),
    ({"fmt": "hdf5"}, "unknown data format"),
    ({"fmt": "fno", "n_train": 0}, "must be"),
    ({"fmt": "fno", "resolution": 2}, "--resolution"),
    ({"fmt": "fno", "n_train": 20000}, "2 GiB"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, fault):
    out = tmp_path / "out"
    with pytest.raises(MonaError, match=fault):
        make_dataset(out, **{"n_test": 10, **kwargs})
    assert not out.exists()
