"""Unit checks of the Darcy task modules against oracles written here.

``mona_tune.tasks.generate``: file names and PDEBench's split size, the per-sample seed streams,
the Gaussian random field's values (cosine expansion built here), the coefficient thresholds at
their edge (a field equal to its threshold), the solver against a finite-volume residual and hand
values, the argument checks at their boundaries, defaults, file contents against
``make_sample``, file permissions, the progress bar, and serial against parallel generation.

``mona_tune.tasks.darcy``: the metrics from their definitions (relative L2, PDEBench's nRMSE) on
batches of several samples and channels, the normaliser (statistics, round trip, dtype, pickling),
``build_task_data`` (split, normalisation, grid channels, info), the embedded-data cache (its key,
reuse without rewriting, the PDEBench totals), and loader details on files written with plain
scipy/h5py.
"""

from __future__ import annotations

import os
import pickle
import re
import stat

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from conftest import cosine_basis, darcy_arrays, write_mat_v5, write_mat_v73, write_pdebench

from mona_tune.cache import config_key
from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError
from mona_tune.tasks import darcy, generate, get_task
from mona_tune.tasks.darcy import (UnitGaussianNormalizer, build_task_data, nrmse_loss,
                                   nrmse_per_sample, rel_l2_loss, rel_l2_per_sample,
                                   validation_size)
from mona_tune.tasks.generate import (darcy_operator, fno_coefficient, fno_filename, grf_cosine,
                                      make_dataset, make_sample, pdebench_coefficient,
                                      pdebench_filename, pdebench_n_test, sample_rng,
                                      solve_darcy)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_thread):
    yield


def seeded(seed, part, index):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(part, index)))


# ================================================================= generate: names, seeds
def test_file_names_and_pdebench_test_share():
    assert fno_filename(85, 8, 1) == "piececonst_r85_N8_smooth1.mat"
    assert fno_filename(421, 100, 2) == "piececonst_r421_N100_smooth2.mat"
    assert pdebench_filename(0.1) == "2D_DarcyFlow_beta0.1_Train.hdf5"
    assert pdebench_filename(1) == "2D_DarcyFlow_beta1.0_Train.hdf5"
    # int(0.1 * N): PDEBench's test share, rounded down
    assert [pdebench_n_test(n) for n in (9, 10, 19, 20, 250, 10000)] == [0, 1, 1, 2, 25, 1000]


def test_sample_rng_is_the_seed_sequence_of_seed_part_and_index():
    got = sample_rng(3, 2, 5).standard_normal(6)
    np.testing.assert_array_equal(got, seeded(3, 2, 5).standard_normal(6))
    np.testing.assert_array_equal(sample_rng(3, 2, 5).standard_normal(6), got)  # reproducible
    for other in ((4, 2, 5), (3, 5, 2), (3, 2, 6)):
        assert not np.array_equal(sample_rng(*other).standard_normal(6), got)


# ================================================================= generate: coefficient fields
def grf_here(xi: np.ndarray, alpha: float, tau: float) -> np.ndarray:
    """Σ_k s·τ^(α−1)(π²|k|² + τ²)^(−α/2) ξ_k φ_k1 ⊗ φ_k2, constant mode removed."""
    s = xi.shape[0]
    k2 = np.arange(s)[:, None] ** 2 + np.arange(s)[None, :] ** 2
    std = s * tau ** (alpha - 1) * (np.pi**2 * k2 + tau**2) ** (-alpha / 2)
    std[0, 0] = 0.0
    phi = cosine_basis(s)
    return phi.T @ (std * xi) @ phi


@pytest.mark.parametrize("kwargs,alpha,tau", [({}, 2.0, 3.0),
                                              ({"alpha": 1.5, "tau": 2.0}, 1.5, 2.0)])
def test_random_field_values_from_the_same_draws(kwargs, alpha, tau):
    for s, seed in ((6, 0), (7, 1)):
        xi = np.random.default_rng(seed).standard_normal((s, s))
        field = grf_cosine(np.random.default_rng(seed), s, **kwargs)
        np.testing.assert_allclose(field, grf_here(xi, alpha, tau), rtol=1e-10, atol=1e-12)


def test_thresholds_at_their_edges():
    """A 1-point grid: the field is its own (zero) mean, so the edge of each rule decides."""
    # FNO: the zero-mean field of one point is exactly 0, and a = 12 where the field is ≥ 0
    assert grf_cosine(np.random.default_rng(0), 1).tolist() == [[0.0]]
    assert fno_coefficient(np.random.default_rng(0), 1).tolist() == [[12.0]]
    # PDEBench: one cell equals the mean, and only values above the mean get 1
    assert pdebench_coefficient(np.random.default_rng(0), 1).tolist() == [[0.1]]


def test_fno_coefficient_is_12_and_3_by_the_sign_of_the_field():
    for seed in range(3):
        field = grf_here(np.random.default_rng(seed).standard_normal((8, 8)), 2.0, 3.0)
        a = fno_coefficient(np.random.default_rng(seed), 8)
        np.testing.assert_array_equal(a, np.where(field >= 0, 12.0, 3.0))


# ================================================================= generate: the solver
def flux_residual(a: np.ndarray, u: np.ndarray, f: float, grid: str) -> np.ndarray:
    """−∇·(a∇u) − f at every unknown, from the fluxes through its four faces.

    node: unknowns are the interior nodes, h = 1/(R−1), u = 0 on the boundary nodes;
    cell: unknowns are all cells, h = 1/R, the wall (u = 0) is h/2 outside the outer cells.
    """
    r = a.shape[0]
    h = 1.0 / (r - 1) if grid == "node" else 1.0 / r
    pad_a = np.pad(a, 1, mode="edge")  # outside a wall: the cell's own a
    pad_u = np.pad(u, 1)  # the boundary value 0 outside
    out = np.zeros_like(u, dtype=np.float64)
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        an = pad_a[1 + di:1 + di + r, 1 + dj:1 + dj + r]
        un = pad_u[1 + di:1 + di + r, 1 + dj:1 + dj + r]
        k = 0.5 * (a + an)
        flux = k * (un - u) / h
        if grid == "cell":  # faces on the wall: distance h/2 to u = 0
            wall = np.zeros((r, r), bool)
            if di == 1:
                wall[-1, :] = True
            elif di == -1:
                wall[0, :] = True
            elif dj == 1:
                wall[:, -1] = True
            else:
                wall[:, 0] = True
            flux = np.where(wall, a * (0.0 - u) / (h / 2), flux)
        out -= flux / h
    out -= f
    return out[1:-1, 1:-1] if grid == "node" else out


@pytest.mark.parametrize("grid,f", [("node", 1.0), ("cell", 0.3)])
def test_solution_satisfies_the_flux_balance(grid, f):
    a = np.kron(np.array([[3.0, 12.0], [12.0, 0.5]]), np.ones((4, 4)))
    a[1, 5] = 7.0
    u = solve_darcy(a, f, grid)
    assert u.shape == a.shape and u.dtype == np.float64
    res = flux_residual(a, u, f, grid)
    assert np.abs(res).max() < 1e-9 * f
    if grid == "node":  # u = 0 on the boundary nodes
        assert np.all(u[0] == 0) and np.all(u[-1] == 0)
        assert np.all(u[:, 0] == 0) and np.all(u[:, -1] == 0)
    assert np.all(u[1:-1, 1:-1] > 0)


def test_solver_hand_values():
    # cell grid of 2×2 cells with a = 2, h = 1/2: by symmetry all u equal, so only the two wall
    # faces of each cell (2a/h² each) act: 4a u / h² = f, u = f h² / (4a) = f / 32
    np.testing.assert_allclose(solve_darcy(np.full((2, 2), 2.0), 4.0, "cell"),
                               np.full((2, 2), 4.0 / 32), rtol=1e-12)
    # node grid of 4×4 nodes with a = 1: 2×2 unknowns, h = 1/3; each unknown has two boundary
    # neighbours: (4u − 2u)/h² = f (by symmetry all equal), u = f h² / 2
    u = solve_darcy(np.ones((4, 4)), 1.0, "node")
    np.testing.assert_allclose(u[1:3, 1:3], np.full((2, 2), (1 / 9) / 2), rtol=1e-12)


def test_solver_returns_float64_for_integer_coefficients():
    a = np.full((5, 5), 2, dtype=np.int64)
    u = solve_darcy(a, 1.0, "node")
    assert u.dtype == np.float64
    np.testing.assert_allclose(u, solve_darcy(a.astype(np.float64), 1.0, "node"), rtol=1e-12)
    assert u[2, 2] > 0


def test_operator_is_compressed_sparse_column():
    assert darcy_operator(np.ones((5, 5)), "node").format == "csc"
    assert darcy_operator(np.ones((4, 4)), "cell").format == "csc"


def test_grids_with_one_unknown_per_row():
    """R = 3 (the smallest resolution allowed): the node grid holds one unknown."""
    # a single cell: four wall faces with 2a/h² each, h = 1: u = f / (8a)
    assert solve_darcy(np.array([[2.0]]), 4.0, "cell")[0, 0] == pytest.approx(4.0 / 16.0)
    a = np.array([[3.0, 12.0, 3.0], [12.0, 3.0, 12.0], [3.0, 3.0, 12.0]])
    # faces of the centre node: mean of it and each neighbour; h = 1/2: u = f h² / Σ faces
    faces = sum(0.5 * (a[1, 1] + a[i, j]) for i, j in ((0, 1), (2, 1), (1, 0), (1, 2)))
    u = solve_darcy(a, 1.0, "node")
    assert u[1, 1] == pytest.approx(0.25 / faces, rel=1e-12)
    assert np.count_nonzero(u) == 1
    coeff, sol = make_sample("fno", 0, 1, 0, 3)
    assert coeff.shape == sol.shape == (3, 3) and sol[1, 1] > 0


# ================================================================= generate: samples
def test_make_sample_uses_beta_1_by_default_and_the_sample_stream():
    a, u = make_sample("pdebench", 2, 0, 3, 6)
    assert np.abs(flux_residual(a, u, 1.0, "cell")).max() < 1e-9
    np.testing.assert_array_equal(a, pdebench_coefficient(seeded(2, 0, 3), 6))
    a, u = make_sample("pdebench", 2, 0, 3, 6, beta=0.25)
    assert np.abs(flux_residual(a, u, 0.25, "cell")).max() < 1e-9
    a, u = make_sample("fno", 2, 1, 3, 6)
    np.testing.assert_array_equal(a, fno_coefficient(seeded(2, 1, 3), 6))
    assert np.abs(flux_residual(a, u, 1.0, "node")).max() < 1e-9


def test_job_returns_the_part_the_index_and_the_sample():
    part, index, a, u = generate._job(("pdebench", 4, 0, 7, 5, 0.5))
    want_a, want_u = make_sample("pdebench", 4, 0, 7, 5, beta=0.5)
    assert (part, index) == (0, 7)
    np.testing.assert_array_equal(a, want_a)
    np.testing.assert_array_equal(u, want_u)


def test_collect_stacks_samples_in_index_order_and_dtype():
    a, u = generate._collect("pdebench", 5, {0: 3}, 5, 0.5, 1, False, "x", np.float32)[0]
    assert a.shape == u.shape == (3, 5, 5) and a.dtype == u.dtype == np.float32
    for i in range(3):
        wa, wu = make_sample("pdebench", 5, 0, i, 5, beta=0.5)
        np.testing.assert_array_equal(a[i], wa.astype(np.float32))
        np.testing.assert_array_equal(u[i], wu.astype(np.float32))
    a64, _ = generate._collect("fno", 5, {2: 2}, 5, 1.0, 1, False, "x", np.float64)[2]
    assert a64.dtype == np.float64
    np.testing.assert_array_equal(a64[1], make_sample("fno", 5, 2, 1, 5)[0])


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_parallel_generation_equals_serial(workers):
    """Two parts from one pool (forked workers write into shared arrays): every sample lands in
    its part at its index, equal to the sample made alone."""
    parts = generate._collect("fno", 1, {1: 7, 2: 3}, 6, 1.0, workers, False, "", np.float64)
    assert sorted(parts) == [1, 2]
    for part, n in ((1, 7), (2, 3)):
        a, u = parts[part]
        assert a.shape == u.shape == (n, 6, 6)
        for i in range(n):
            want_a, want_u = make_sample("fno", 1, part, i, 6)
            np.testing.assert_array_equal(a[i], want_a)
            np.testing.assert_array_equal(u[i], want_u)


def test_progress_bar_only_when_asked(tmp_path, capsys):
    make_dataset(tmp_path / "quiet", fmt="pdebench", n_train=9, n_test=1, resolution=4,
                 workers=1, progress=False)
    assert capsys.readouterr().err == ""
    make_dataset(tmp_path / "loud", fmt="pdebench", n_train=9, n_test=1, resolution=4,
                 workers=1, beta=0.5, progress=True)
    err = capsys.readouterr().err
    assert "pdebench β=0.5 r4" in err and "10/10" in err and "sample" in err


# ================================================================= generate: arguments
def check(**kw):
    args = {"out": None, "fmt": "fno", "n_train": 1, "n_test": 1, "resolution": 3, "beta": 0.1,
            "workers": None, **kw}
    generate._check_args(**args)


@pytest.fixture
def out_path(tmp_path):
    return tmp_path / "out"


def test_argument_floors_are_allowed(out_path):
    check(out=out_path)  # one sample each, 3 points, default workers
    check(out=out_path, workers=1, beta=0.5)
    check(out=out_path, fmt="pdebench", n_train=9, n_test=1)
    out_path.mkdir()
    check(out=out_path)  # an existing directory is fine


@pytest.mark.parametrize("kw,naming", [
    ({"fmt": "hdf5"}, "unknown data format 'hdf5' (known: fno, pdebench)"),
    ({"n_train": 0}, "--n-train and --n-test must be ≥ 1 (got 0, 1)"),
    ({"n_test": 0}, "--n-train and --n-test must be ≥ 1 (got 1, 0)"),
    ({"resolution": 2}, "--resolution must be ≥ 3 (got 2)"),
    ({"workers": 0}, "--workers must be ≥ 1 (got 0)"),
    ({"beta": 0.0}, "--beta must be a positive number (got 0.0)"),
    ({"beta": -1.0}, "--beta must be a positive number"),
    ({"beta": float("inf")}, "--beta must be a positive number (got inf)"),
    ({"beta": float("nan")}, "--beta must be a positive number"),
])
def test_bad_arguments_are_named(out_path, kw, naming):
    with pytest.raises(MonaError) as err:
        check(out=out_path, **kw)
    assert naming in str(err.value)


def test_out_must_not_be_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(MonaError, match="exists and is not a directory"):
        check(out=f)


def test_pdebench_split_message_suggests_valid_counts(out_path):
    with pytest.raises(MonaError) as err:
        check(out=out_path, fmt="pdebench", n_train=90, n_test=11)
    msg = str(err.value)
    assert "= 10 for 101 samples" in msg
    n_train, n_test = map(int, re.search(r"--n-train (\d+) --n-test (\d+)", msg).groups())
    assert n_test == 11 and pdebench_n_test(n_train + n_test) == n_test
    check(out=out_path, fmt="pdebench", n_train=n_train, n_test=n_test)  # the suggestion works


def test_mat_v5_size_limit_boundary(out_path):
    per_sample = 3 * 3 * 8  # bytes of one 3×3 float64 sample
    most = (2**31 - 1) // per_sample  # the most samples a v5 variable holds
    check(out=out_path, n_train=most, n_test=1)
    check(out=out_path, n_train=1, n_test=most)
    for kw in ({"n_train": most + 1}, {"n_test": most + 1}):
        with pytest.raises(MonaError) as err:
            check(out=out_path, **{"n_train": 1, "n_test": 1, **kw})
        assert f"{most + 1} samples at 3² exceed the 2 GiB" in str(err.value)
    # the limit is MATLAB v5's: the PDEBench (HDF5) format has none
    check(out=out_path, fmt="pdebench", n_train=9 * (most + 1), n_test=most + 1)


# ================================================================= generate: make_dataset
def test_defaults_fno_format_seed_0_and_100_test_samples(tmp_path):
    paths = make_dataset(tmp_path, n_train=2, resolution=4, workers=1)
    assert [p.name for p in paths] == ["piececonst_r4_N2_smooth1.mat",
                                       "piececonst_r4_N100_smooth2.mat"]
    test = scipy.io.loadmat(str(paths[1]))
    assert test["coeff"].shape == (100, 4, 4)
    np.testing.assert_array_equal(test["coeff"][99], make_sample("fno", 0, 2, 99, 4)[0])


def test_default_training_count_fno(tmp_path):
    (train, _) = make_dataset(tmp_path, fmt="fno", n_test=1, resolution=4, workers=1)
    assert train.name == "piececonst_r4_N1000_smooth1.mat"


def test_pdebench_defaults_128_cells_and_beta_0_1(tmp_path):
    (path,) = make_dataset(tmp_path, fmt="pdebench", n_train=9, n_test=1, workers=1)
    assert path.name == "2D_DarcyFlow_beta0.1_Train.hdf5"
    with h5py.File(path) as f:
        assert f["nu"].shape == (10, 128, 128)
        assert f.attrs["beta"] == np.float32(0.1)
        u0 = f["tensor"][0, 0]
    a, u = make_sample("pdebench", 0, 0, 0, 128, beta=0.1)
    np.testing.assert_array_equal(u0, u.astype(np.float32))


def test_pdebench_default_size_is_900_plus_100(tmp_path):
    (path,) = make_dataset(tmp_path, fmt="pdebench", resolution=3, workers=1)
    with h5py.File(path) as f:
        assert f["nu"].shape == (1000, 3, 3)


def test_fno_file_contents_are_the_samples_of_parts_1_and_2(tmp_path):
    paths = make_dataset(tmp_path, fmt="fno", n_train=3, n_test=2, resolution=5, seed=4,
                         workers=1)
    for path, part, n in zip(paths, (1, 2), (3, 2)):
        m = scipy.io.loadmat(str(path))
        assert m["coeff"].shape == m["sol"].shape == (n, 5, 5)
        for i in range(n):
            a, u = make_sample("fno", 4, part, i, 5)
            np.testing.assert_array_equal(m["coeff"][i], a)
            np.testing.assert_array_equal(m["sol"][i], u)
        with open(path, "rb") as fh:  # uncompressed v5: the first element is a plain miMATRIX
            fh.seek(128)
            assert int.from_bytes(fh.read(4), "little") == 14


def test_pdebench_file_contents_are_the_samples_of_part_0(tmp_path):
    (path,) = make_dataset(tmp_path, fmt="pdebench", n_train=9, n_test=1, resolution=5, seed=6,
                           beta=2.0, workers=1)
    assert path.name == "2D_DarcyFlow_beta2.0_Train.hdf5"
    with h5py.File(path) as f:
        nu, u = f["nu"][:], f["tensor"][:]
        assert f.attrs["beta"] == np.float32(2.0)
        np.testing.assert_array_equal(f["x-coordinate"][:],
                                      ((np.arange(5) + 0.5) / 5).astype(np.float32))
    assert nu.shape == (10, 5, 5) and u.shape == (10, 1, 5, 5)
    for i in (0, 9):
        a, sol = make_sample("pdebench", 6, 0, i, 5, beta=2.0)
        np.testing.assert_array_equal(nu[i], a.astype(np.float32))
        np.testing.assert_array_equal(u[i, 0], sol.astype(np.float32))


def test_output_directory_parents_created_and_existing_reused(tmp_path):
    nested = tmp_path / "a" / "b"
    make_dataset(nested, fmt="pdebench", n_train=9, n_test=1, resolution=3, workers=1)
    paths = make_dataset(nested, fmt="fno", n_train=1, n_test=1, resolution=4, workers=1)
    assert all(p.parent == nested and p.is_file() for p in paths)


def test_output_directory_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MonaError) as err:
        make_dataset(blocker / "sub", fmt="fno", n_train=1, n_test=1, resolution=4, workers=1)
    assert f"--out {blocker / 'sub'}: cannot create it" in str(err.value)


@pytest.mark.parametrize("mask", [0o022, 0o007])
def test_files_get_the_usual_permissions(tmp_path, mask):
    old = os.umask(mask)
    try:
        paths = make_dataset(tmp_path / "fno", fmt="fno", n_train=1, n_test=1, resolution=4,
                             workers=1)
        paths += make_dataset(tmp_path / "pde", fmt="pdebench", n_train=9, n_test=1,
                              resolution=3, workers=1)
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    assert os.umask(old) == old  # the process umask is left as it was


# ================================================================= darcy: metrics
def batch():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 2, 4, 5, generator=g) + 0.5
    pred = target + 0.3 * torch.randn(3, 2, 4, 5, generator=g)
    return pred, target


def test_relative_l2_per_sample_and_mean():
    pred, target = batch()
    want = torch.tensor([float(np.linalg.norm((pred[i] - target[i]).numpy())
                               / np.linalg.norm(target[i].numpy())) for i in range(3)])
    got = rel_l2_per_sample(pred, target)
    assert got.shape == (3,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert rel_l2_loss(pred, target).item() == pytest.approx(want.mean().item(), rel=1e-5)


def test_nrmse_per_sample_and_mean():
    pred, target = batch()
    want = []
    for i in range(3):
        per_channel = [np.sqrt(np.mean((pred[i, c] - target[i, c]).numpy() ** 2))
                       / np.sqrt(np.mean(target[i, c].numpy() ** 2)) for c in range(2)]
        want.append(np.mean(per_channel))
    got = nrmse_per_sample(pred, target)
    assert got.shape == (3,)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=0)
    assert nrmse_loss(pred, target).item() == pytest.approx(float(np.mean(want)), rel=1e-5)
    assert get_task("pdebench-darcy").loss(pred, target).item() == pytest.approx(
        float(np.mean(want)), rel=1e-5)
    assert nrmse_loss(target, target).item() == 0.0


# ================================================================= darcy: normaliser
def test_normaliser_statistics_round_trip_and_dtype():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 4, generator=g, dtype=torch.float64) * 2 + 5
    n = UnitGaussianNormalizer(x)
    enc = n.encode(x)
    want = (x - x.mean(0)) / (x.std(0) + 1e-5)
    torch.testing.assert_close(enc, want)
    torch.testing.assert_close(enc.mean(0), torch.zeros(3, 4, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(n.decode(enc), x)
    # float32 input: float32 statistics, same values
    x32 = x.float()
    assert n.encode(x32).dtype == torch.float32 and n.decode(x32).dtype == torch.float32
    torch.testing.assert_close(n.encode(x32), want.float())
    torch.testing.assert_close(n.decode(torch.ones(3, 4)),
                               (x.std(0) + 1e-5 + x.mean(0)).float())
    # a custom eps
    m = UnitGaussianNormalizer(torch.ones(2, 3), eps=0.5)
    torch.testing.assert_close(m.encode(torch.full((1, 3), 2.0)), torch.full((1, 3), 2.0))


def test_pickled_normaliser_carries_no_device_copies():
    x = torch.randn(5, 16, 16, dtype=torch.float64)
    fresh = pickle.dumps(UnitGaussianNormalizer(x))
    used = UnitGaussianNormalizer(x)
    used.encode(x.float())
    used.decode(x)
    blob = pickle.dumps(used)
    assert len(blob) == len(fresh)
    back = pickle.loads(blob)
    torch.testing.assert_close(back.decode(back.encode(x)), x)


# ================================================================= darcy: build_task_data
def test_validation_size():
    assert validation_size(200, 0.1) == 20
    assert validation_size(10, 0.34) == 3
    assert validation_size(10, 0.01) == 1  # at least one
    assert validation_size(3, 0.5) == 2  # round(1.5) = 2


def arrays(n, r, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.choice([3.0, 12.0], size=(n, r, r)).astype(np.float32)
    u = (rng.random((n, r, r)) + np.arange(r)[None, :, None]).astype(np.float32)
    return a, u


def test_build_task_data_split_normalisation_grid_and_info():
    n, r = 5, 4
    a, u = arrays(n, r)
    a_test, u_test = arrays(2, r, seed=1)
    gx = np.array([0.0, 0.1, 0.5, 1.0])  # float64 here: the inputs are float32 all the same
    gy = np.array([2.0, 3.0, 5.0, 7.0])
    data = build_task_data(a, u, a_test, u_test, gx, gy, 0.4, {"k": "v"}, "here")
    # validation: the last round(0.4 · 5) = 2 training samples, split off before fitting
    fit_a, fit_u = torch.from_numpy(a[:3]), torch.from_numpy(u[:3])
    for x, y, a_part, u_part in ((data.x_train, data.y_train, a[:3], u[:3]),
                                 (data.x_val, data.y_val, a[3:], u[3:]),
                                 (data.x_test, data.y_test, a_test, u_test)):
        m = a_part.shape[0]
        assert x.shape == (m, 3, r, r) and y.shape == (m, 1, r, r)
        assert x.dtype == y.dtype == torch.float32
        torch.testing.assert_close(y[:, 0], torch.from_numpy(u_part))
        want = (torch.from_numpy(a_part) - fit_a.mean(0)) / (fit_a.std(0) + 1e-5)
        torch.testing.assert_close(x[:, 0], want)
        torch.testing.assert_close(x[:, 1], torch.tensor(gx).float()[:, None].expand(m, r, r))
        torch.testing.assert_close(x[:, 2], torch.tensor(gy).float()[None, :].expand(m, r, r))
    # decode: the target normaliser of the 3 fitting samples
    torch.testing.assert_close(data.decode(torch.zeros(1, 1, r, r))[0, 0], fit_u.mean(0))
    torch.testing.assert_close(data.decode(torch.ones(1, 1, r, r))[0, 0],
                               fit_u.mean(0) + fit_u.std(0) + 1e-5)
    assert data.info == {"k": "v", "n_train": 3, "n_val": 2, "n_test": 2, "resolution": r,
                         "validation": "the last 2 of 5 training samples (val_fraction 0.4)"}


def test_build_task_data_with_given_validation_keeps_all_training_samples():
    a, u = arrays(3, 4)
    a_val, u_val = arrays(2, 4, seed=2)
    a_test, u_test = arrays(1, 4, seed=3)
    g = np.linspace(0, 1, 4, dtype=np.float32)
    data = build_task_data(a, u, a_test, u_test, g, g, 0.5, {}, "here", val=(a_val, u_val),
                           val_from="f.mat samples 1-2")
    assert data.x_train.shape[0] == 3 and data.x_val.shape[0] == 2
    torch.testing.assert_close(data.y_val[:, 0], torch.from_numpy(u_val))
    fit = torch.from_numpy(a)
    torch.testing.assert_close(data.x_val[:, 0],
                               (torch.from_numpy(a_val) - fit.mean(0)) / (fit.std(0) + 1e-5))
    assert data.info["n_train"] == 3 and data.info["validation"] == "f.mat samples 1-2"


def test_build_task_data_needs_two_fitting_samples():
    a, u = arrays(3, 4)
    g = np.linspace(0, 1, 4, dtype=np.float32)
    data = build_task_data(a, u, a, u, g, g, 0.34, {}, "here")  # 3 − 1: two left, enough
    assert data.info["n_train"] == 2
    with pytest.raises(MonaError) as err:
        build_task_data(a, u, a, u, g, g, 0.5, {}, "the/place")  # 3 − 2 = 1 left
    assert "the/place: 3 training samples leave 1" in str(err.value)


# ================================================================= darcy: embedded cache
def test_embedded_entry_key_and_reuse_without_rewriting(mona_cache, capsys):
    locks_before = set((mona_cache / "data").glob("*.lock"))
    out = darcy._embedded_darcy(3, 2, 4)
    params = {"task": "darcy", "fmt": "fno", "n_train": 3, "n_test": 2, "resolution": 4,
              "version": darcy.DATA_VERSION}
    assert out == mona_cache / "data" / config_key(params)
    # concurrent trials lock this entry only: the lock file is named after its key
    assert set((mona_cache / "data").glob("*.lock")) - locks_before == {
        mona_cache / "data" / f"{config_key(params)}.lock"}
    files = [out / "piececonst_r4_N3_smooth1.mat", out / "piececonst_r4_N2_smooth2.mat"]
    assert sorted(out.glob("*.mat")) == sorted(files)
    assert capsys.readouterr().err == ""  # generated quietly
    # the embedded data: seed 0, in the real layout
    m = scipy.io.loadmat(str(files[0]))
    np.testing.assert_array_equal(m["sol"][2], make_sample("fno", 0, 1, 2, 4)[1])
    inodes = [p.stat().st_ino for p in files]
    assert darcy._embedded_darcy(3, 2, 4) == out
    assert [p.stat().st_ino for p in files] == inodes  # complete: not written again


def pdebench_total(path):
    with h5py.File(path) as f:
        return f["nu"].shape[0]


@pytest.mark.parametrize("n_train,n_test,total", [
    (5, 2, 20),  # the 10% test share decides: 2 test samples need 20
    (18, 2, 20),  # exactly enough of both
    (300, None, 333),  # the training part decides; the default 25 test samples fit
    (None, 26, 260),  # default 225 training samples, 26 test samples need 260
])
def test_embedded_pdebench_smallest_file(n_train, n_test, total):
    out = darcy._embedded_pdebench(n_train, n_test, 3, 0.7)
    path = out / "2D_DarcyFlow_beta0.7_Train.hdf5"
    assert pdebench_total(path) == total
    assert out.name == config_key({"task": "pdebench-darcy", "fmt": "pdebench",
                                   "n_train": total - total // 10, "n_test": total // 10,
                                   "resolution": 3, "beta": 0.7,
                                   "version": darcy.DATA_VERSION})


def test_embedded_pdebench_default_size():
    out = darcy._embedded_pdebench(None, None, 3, 0.9)
    assert pdebench_total(out / "2D_DarcyFlow_beta0.9_Train.hdf5") == 250


def test_embedded_pdebench_loader(capsys):
    data = get_task("pdebench-darcy").load(TrainConfig(task="pdebench-darcy", n_train=8,
                                                        n_test=1, resolution=4, beta=0.6,
                                                        val_fraction=0.25))
    assert data.x_train.shape == (6, 3, 4, 4) and data.x_test.shape == (1, 3, 4, 4)
    _, u = make_sample("pdebench", 0, 0, 0, 4, beta=0.6)  # the first sample is the test one
    torch.testing.assert_close(data.y_test[0, 0], torch.from_numpy(u.astype(np.float32)))
    assert data.info["data_source"] == "embedded" and data.info["beta"] == 0.6
    assert data.info["data_format"] == "pdebench" and data.info["file_resolution"] == 4
    assert data.info["data_files"].endswith("2D_DarcyFlow_beta0.6_Train.hdf5")
    # the smallest file holding 8 training and 1 test samples: 10, test share 1
    assert pdebench_total(data.info["data_files"]) == 10
    _, u = make_sample("pdebench", 0, 0, 1, 4, beta=0.6)
    torch.testing.assert_close(data.y_train[0, 0], torch.from_numpy(u.astype(np.float32)))
    assert capsys.readouterr().err == ""


def test_embedded_darcy_loader_counts():
    cfg = TrainConfig(task="darcy", n_train=4, n_test=2, resolution=5, val_fraction=0.25)
    data = get_task("darcy").load(cfg)
    assert data.x_train.shape == (3, 3, 5, 5) and data.x_val.shape[0] == 1
    assert data.x_test.shape == (2, 3, 5, 5)
    _, u = make_sample("fno", 0, 2, 1, 5)
    torch.testing.assert_close(data.y_test[1, 0], torch.from_numpy(u.astype(np.float32)))
    assert data.info["data_source"] == "embedded" and data.info["file_resolution"] == 5
    # the entry holds exactly the samples asked for
    assert [os.path.basename(p) for p in data.info["data_files"].split(", ")] == [
        "piececonst_r5_N4_smooth1.mat", "piececonst_r5_N2_smooth2.mat"]


def test_embedded_darcy_default_counts():
    data = get_task("darcy").load(TrainConfig(task="darcy", resolution=5))
    # 200 training samples (the last 10% validate) and 50 test samples
    assert data.info["n_train"] == 180 and data.info["n_val"] == 20
    assert data.info["n_test"] == 50 and data.x_test.shape == (50, 3, 5, 5)


# ================================================================= darcy: loaders on files
def load(task, **kw):
    return get_task(task).load(TrainConfig(task=task, **kw))


def test_fno_info_names_files_and_training_file_format(tmp_path):
    a, u = darcy_arrays(6, 9, seed=7)
    write_mat_v5(tmp_path / "piececonst_r9_N4_smooth1.mat", {"coeff": a[:4], "sol": u[:4]})
    write_mat_v73(tmp_path / "piececonst_r9_N2_smooth2.mat", {"coeff": a[4:], "sol": u[4:]})
    data = load("darcy", data_dir=str(tmp_path), n_train=4, n_test=2, resolution=9,
                val_fraction=0.25)
    train, test = (tmp_path / "piececonst_r9_N4_smooth1.mat",
                   tmp_path / "piececonst_r9_N2_smooth2.mat")
    assert data.info["data_files"] == f"{train}, {test}"
    assert data.info["data_format"] == "fno-v5" and data.info["data_source"] == "files"
    np.testing.assert_allclose(data.y_test[:, 0], u[4:], rtol=1e-6)
    grid = torch.linspace(0, 1, 9)  # nodes of the unit square, x along axis 0
    torch.testing.assert_close(data.x_train[1, 1], grid[:, None].expand(9, 9))
    torch.testing.assert_close(data.x_train[1, 2], grid[None, :].expand(9, 9))
    with pytest.raises(MonaError) as err:  # 8 intervals cannot become 3
        load("darcy", data_dir=str(tmp_path), n_train=4, n_test=2, resolution=4)
    assert str(err.value).startswith(f"{train}: a 9-point grid cannot be subsampled to 4")


def test_fno_validation_block_that_exactly_fits(tmp_path):
    a1, u1 = darcy_arrays(10, 9, seed=3)
    a2, u2 = darcy_arrays(8, 9, seed=4)
    write_mat_v5(tmp_path / "piececonst_r9_N10_smooth1.mat", {"coeff": a1, "sol": u1})
    write_mat_v5(tmp_path / "piececonst_r9_N8_smooth2.mat", {"coeff": a2, "sol": u2})
    # 5 test + 3 validation = the 8 samples of smooth2; every 2nd node: 9 -> 5
    data = load("darcy", data_dir=str(tmp_path), n_train=10, n_test=5, resolution=5,
                val_fraction=0.3)
    assert data.info["n_train"] == 10
    assert data.info["validation"] == "piececonst_r9_N8_smooth2.mat samples 5-7"
    np.testing.assert_allclose(data.y_train[:, 0], u1[:, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(data.y_test[:, 0], u2[:5, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(data.y_val[:, 0], u2[5:, ::2, ::2], rtol=1e-6)


def test_fno_count_errors_name_the_option(tmp_path):
    a, u = darcy_arrays(5, 5)
    write_mat_v5(tmp_path / "piececonst_r5_N3_smooth1.mat", {"coeff": a[:3], "sol": u[:3]})
    write_mat_v5(tmp_path / "piececonst_r5_N2_smooth2.mat", {"coeff": a[3:], "sol": u[3:]})
    with pytest.raises(MonaError, match="n_train=4"):
        load("darcy", data_dir=str(tmp_path), n_train=4, n_test=2, resolution=5)
    with pytest.raises(MonaError, match="n_test=3"):
        load("darcy", data_dir=str(tmp_path), n_train=3, n_test=3, resolution=5)
    with pytest.raises(MonaError, match="piececonst_r5_N3_smooth1.mat: 2 training samples"):
        load("darcy", data_dir=str(tmp_path), n_train=2, n_test=2, resolution=5,
             val_fraction=0.5)


def test_fno_grids_must_agree(tmp_path):
    a, u = darcy_arrays(3, 9)
    b, v = darcy_arrays(2, 5)
    write_mat_v5(tmp_path / "piececonst_r9_N3_smooth1.mat", {"coeff": a, "sol": u})
    write_mat_v5(tmp_path / "piececonst_r5_N2_smooth2.mat", {"coeff": b, "sol": v})
    with pytest.raises(MonaError, match="grid 5 differs from the training file's 9"):
        load("darcy", data_dir=str(tmp_path), n_train=3, n_test=1, resolution=5)


def test_pdebench_default_resolution_is_64(tmp_path):
    a, u = darcy_arrays(10, 128, seed=2)
    path = write_pdebench(tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5", np.where(a > 5, 1.0, 0.1),
                          u)
    data = load("pdebench-darcy", data_dir=str(tmp_path), val_fraction=0.2)
    assert data.x_train.shape == (7, 3, 64, 64) and data.x_test.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(data.y_test[0, 0], u[0, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(data.y_train[:, 0], u[1:8, ::2, ::2], rtol=1e-6)
    assert data.info == {"data_source": "files", "data_files": str(path),
                         "data_format": "pdebench", "file_resolution": 128, "beta": 0.1,
                         "n_train": 7, "n_val": 2, "n_test": 1, "resolution": 64,
                         "validation": "the last 2 of 9 training samples (val_fraction 0.2)"}


def write_own_pdebench(path, a, u, x, y, beta=None):
    with h5py.File(path, "w") as f:
        f["nu"] = np.where(a > 5, 1.0, 0.1).astype(np.float32)
        f["tensor"] = u.astype(np.float32)[:, None]
        f["x-coordinate"] = x.astype(np.float32)
        f["y-coordinate"] = y.astype(np.float32)
        if beta is not None:
            f.attrs["beta"] = np.float32(beta)
    return path


def test_pdebench_distinct_grid_channels_and_missing_beta(tmp_path):
    a, u = darcy_arrays(20, 8, seed=5)
    path = write_own_pdebench(tmp_path / "f.hdf5", a, u, np.linspace(0, 1, 8),
                              np.linspace(2, 3, 8))  # no beta attribute; x and y differ
    data = load("pdebench-darcy", data_dir=str(path), resolution=8, beta=0.3, n_test=1,
                val_fraction=0.2)
    assert data.info["beta"] == 0.3  # from the configuration where the file has none
    assert data.x_test.shape == (1, 3, 8, 8)  # the first of the 2 test samples
    torch.testing.assert_close(data.x_test[0, 1],
                               torch.linspace(0, 1, 8)[:, None].expand(8, 8))
    torch.testing.assert_close(data.x_test[0, 2],
                               torch.linspace(2, 3, 8)[None, :].expand(8, 8))
    np.testing.assert_allclose(data.y_test[:, 0], u[:1], rtol=1e-6)
    np.testing.assert_allclose(data.y_train[:, 0], u[2:16], rtol=1e-6)  # 18 − round(3.6)
    np.testing.assert_allclose(data.y_val[:, 0], u[16:], rtol=1e-6)


def test_pdebench_file_given_directly_reports_its_beta_and_errors_name_it(tmp_path):
    a, u = darcy_arrays(10, 8, seed=6)
    x = (np.arange(8) + 0.5) / 8
    path = write_own_pdebench(tmp_path / "own.hdf5", a, u, x, x, beta=1.0)
    data = load("pdebench-darcy", data_dir=str(path), resolution=4, val_fraction=0.2)
    assert data.info["beta"] == 1.0 and data.info["data_files"] == str(path)
    np.testing.assert_allclose(data.y_train[0, 0], u[1, ::2, ::2], rtol=1e-6)
    with pytest.raises(MonaError) as err:  # 8 cells cannot be reduced to 3
        load("pdebench-darcy", data_dir=str(path), resolution=3)
    assert str(err.value).startswith(f"{path}: a 8-cell grid cannot be reduced to 3")
    with pytest.raises(MonaError) as err:  # 2 training samples, one of them validation
        load("pdebench-darcy", data_dir=str(path), resolution=8, n_train=2, val_fraction=0.5)
    assert str(err.value).startswith(f"{path}: 2 training samples leave 1")
