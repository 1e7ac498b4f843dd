"""Darcy loaders on files written by independent code (plain scipy/h5py), and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import darcy_arrays, write_mat_v5, write_mat_v73, write_pdebench

from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError
from mona_tune.tasks import get_task
from mona_tune.tasks.darcy import UnitGaussianNormalizer, nrmse_per_sample, rel_l2_per_sample


def load(task: str, **kw):
    return get_task(task).load(TrainConfig(task=task, **kw))


def check_layout(data, n_fit, n_val, n_test, r):
    assert data.x_train.shape == (n_fit, 3, r, r) and data.y_train.shape == (n_fit, 1, r, r)
    assert data.x_val.shape == (n_val, 3, r, r) and data.y_val.shape == (n_val, 1, r, r)
    assert data.x_test.shape == (n_test, 3, r, r) and data.y_test.shape == (n_test, 1, r, r)
    for t in (data.x_train, data.y_train, data.x_val, data.x_test, data.y_test):
        assert t.dtype == torch.float32
    assert data.in_shape == data.out_shape == (r, r)


def test_fno_v5(fno_dir):
    data = load("darcy", data_dir=str(fno_dir), n_train=8, n_test=4, val_fraction=0.25)
    check_layout(data, 6, 2, 4, 85)
    a, u = darcy_arrays(12, 85)
    # targets are physical, in file order: train = first of smooth1, val = its last, test = smooth2
    np.testing.assert_allclose(data.y_train[:, 0], u[:6], rtol=1e-6)
    np.testing.assert_allclose(data.y_val[:, 0], u[6:8], rtol=1e-6)
    np.testing.assert_allclose(data.y_test[:, 0], u[8:], rtol=1e-6)
    # channel 0: a normalised per point on the 6 fitting samples; channels 1, 2: the grid
    fit = torch.tensor(a[:6], dtype=torch.float32)
    expect = (torch.tensor(a[8:], dtype=torch.float32) - fit.mean(0)) / (fit.std(0) + 1e-5)
    torch.testing.assert_close(data.x_test[:, 0], expect)
    grid = torch.linspace(0, 1, 85)
    torch.testing.assert_close(data.x_train[0, 1], grid[:, None].expand(85, 85))
    torch.testing.assert_close(data.x_train[0, 2], grid[None, :].expand(85, 85))
    assert data.info["data_format"] == "fno-v5" and data.info["n_train"] == 6
    # smooth2 holds only the test samples: validation is split from the training samples
    assert data.info["validation"] == "the last 2 of 8 training samples (val_fraction 0.25)"


def test_decode_round_trip(fno_dir):
    data = load("darcy", data_dir=str(fno_dir), n_train=8, n_test=4, val_fraction=0.25)
    normalizer = data.decode.__self__
    torch.testing.assert_close(data.decode(normalizer.encode(data.y_test)), data.y_test,
                               rtol=1e-5, atol=1e-8)
    # a perfect normalised prediction of the training targets has zero error after decoding
    encoded = normalizer.encode(data.y_train)
    assert encoded[:, :, 1:-1, 1:-1].mean().abs() < 1e-4  # centred per point
    assert get_task("darcy").loss(data.decode(encoded), data.y_train) < 1e-5


def test_fno_v73_reversed_axes(tmp_path):
    a, u = darcy_arrays(7, 29, seed=5)
    write_mat_v73(tmp_path / "piececonst_r29_N5_smooth1.mat", {"coeff": a[:5], "sol": u[:5]})
    write_mat_v73(tmp_path / "piececonst_r29_N2_smooth2.mat", {"coeff": a[5:], "sol": u[5:]})
    with open(tmp_path / "piececonst_r29_N5_smooth1.mat", "rb") as fh:
        assert fh.read(19) == b"MATLAB 7.3 MAT-file"
    data = load("darcy", data_dir=str(tmp_path), n_train=5, n_test=2, resolution=29,
                val_fraction=0.2)
    check_layout(data, 4, 1, 2, 29)
    assert data.info["data_format"] == "fno-v73"
    np.testing.assert_allclose(data.y_train[:, 0], u[:4], rtol=1e-6)
    np.testing.assert_allclose(data.y_test[:, 0], u[5:], rtol=1e-6)
    # a transposed read would put the asymmetric field on the wrong axes
    assert not np.allclose(u[0], u[0].T)


def test_421_subsampled_to_85(tmp_path):
    a, u = darcy_arrays(5, 421, seed=2)
    write_mat_v5(tmp_path / "piececonst_r421_N3_smooth1.mat", {"coeff": a[:3], "sol": u[:3]})
    write_mat_v5(tmp_path / "piececonst_r421_N2_smooth2.mat", {"coeff": a[3:], "sol": u[3:]})
    data = load("darcy", data_dir=str(tmp_path), n_train=3, n_test=1, val_fraction=0.34)
    check_layout(data, 3, 1, 1, 85)  # smooth2 holds a sample after the test one: validation
    np.testing.assert_allclose(data.y_test[0, 0], u[3, ::5, ::5], rtol=1e-6)
    np.testing.assert_allclose(data.y_val[0, 0], u[4, ::5, ::5], rtol=1e-6)
    assert data.info["file_resolution"] == 421
    with pytest.raises(MonaError, match="cannot be subsampled to 50"):
        load("darcy", data_dir=str(tmp_path), n_train=3, n_test=1, resolution=50)


@pytest.mark.parametrize("writer", [write_mat_v5, write_mat_v73])
def test_fno_validation_after_the_test_block(tmp_path, writer):
    """smooth2 holding samples after the test block: they validate, training keeps all n_train."""
    a1, u1 = darcy_arrays(10, 29, seed=3)
    a2, u2 = darcy_arrays(8, 29, seed=4)
    writer(tmp_path / "piececonst_r29_N10_smooth1.mat", {"coeff": a1, "sol": u1})
    writer(tmp_path / "piececonst_r29_N8_smooth2.mat", {"coeff": a2, "sol": u2})
    data = load("darcy", data_dir=str(tmp_path), n_train=10, n_test=4, resolution=15,
                val_fraction=0.3)
    check_layout(data, 10, 3, 4, 15)
    np.testing.assert_allclose(data.y_train[:, 0], u1[:, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(data.y_test[:, 0], u2[:4, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(data.y_val[:, 0], u2[4:7, ::2, ::2], rtol=1e-6)
    # the normalisers are fitted on all 10 training samples, and applied to validation as well
    fit = torch.tensor(a1[:, ::2, ::2], dtype=torch.float32)
    expect = (torch.tensor(a2[4:7, ::2, ::2], dtype=torch.float32) - fit.mean(0)) / (
        fit.std(0) + 1e-5)
    torch.testing.assert_close(data.x_val[:, 0], expect)
    assert data.info["n_train"] == 10 and data.info["n_val"] == 3
    assert data.info["validation"] == "piececonst_r29_N8_smooth2.mat samples 4-6"
    # one sample too few after the test block (n_val = 4 > 8 - 5): back to the training split
    data = load("darcy", data_dir=str(tmp_path), n_train=10, n_test=5, resolution=15,
                val_fraction=0.4)
    check_layout(data, 6, 4, 5, 15)
    np.testing.assert_allclose(data.y_val[:, 0], u1[6:, ::2, ::2], rtol=1e-6)
    assert data.info["validation"] == "the last 4 of 10 training samples (val_fraction 0.4)"


def test_pdebench_layout(pdebench_path):
    data = load("pdebench-darcy", data_dir=str(pdebench_path.parent), resolution=16,
                val_fraction=0.1)
    check_layout(data, 16, 2, 2, 16)  # 20 samples: first 2 test, 18 train of which 2 val
    a, u = darcy_arrays(20, 32, seed=1)
    np.testing.assert_allclose(data.y_test[:, 0], u[:2, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(data.y_train[:, 0], u[2:18, ::2, ::2], rtol=1e-6)
    xc = torch.tensor((np.arange(32) + 0.5) / 32, dtype=torch.float32)[::2]
    torch.testing.assert_close(data.x_train[3, 1], xc[:, None].expand(16, 16))
    torch.testing.assert_close(data.x_train[3, 2], xc[None, :].expand(16, 16))
    # the file path itself works too, and n_train / n_test take the first of each part
    data = load("pdebench-darcy", data_dir=str(pdebench_path), resolution=32, n_train=10,
                n_test=1, val_fraction=0.2)
    check_layout(data, 8, 2, 1, 32)
    np.testing.assert_allclose(data.y_val[:, 0], u[10:12], rtol=1e-6)


def test_metrics_by_hand():
    target = torch.tensor([[[[3.0, 4.0]]], [[[1.0, 0.0]]]])  # (2, 1, 1, 2)
    pred = torch.tensor([[[[3.0, 0.0]]], [[[2.0, 0.0]]]])
    # ‖(0, 4)‖/‖(3, 4)‖ = 0.8; ‖(1, 0)‖/‖(1, 0)‖ = 1
    torch.testing.assert_close(rel_l2_per_sample(pred, target), torch.tensor([0.8, 1.0]))
    assert get_task("darcy").loss(pred, target).item() == pytest.approx(0.9)
    # nRMSE per channel: RMS(err)/RMS(u), averaged over channels
    t2 = torch.tensor([[[[3.0, 4.0]], [[1.0, 1.0]]]])  # (1, 2, 1, 2)
    p2 = torch.tensor([[[[3.0, 0.0]], [[1.0, 3.0]]]])
    expect = (np.sqrt(16 / 2) / np.sqrt(25 / 2) + np.sqrt(4 / 2) / np.sqrt(2 / 2)) / 2
    assert nrmse_per_sample(p2, t2).item() == pytest.approx(expect, rel=1e-6)
    task = get_task("pdebench-darcy")
    assert task.metric == "nrmse" and task.direction == "min"
    assert get_task("darcy").metric == "rel_l2"


def test_normalizer_per_point():
    x = torch.tensor([[[1.0, 5.0]], [[3.0, 5.0]]])  # (2, 1, 2): second point constant
    n = UnitGaussianNormalizer(x)
    enc = n.encode(x)
    torch.testing.assert_close(enc[:, 0, 0], torch.tensor([-1.0, 1.0]) / (np.sqrt(2) + 1e-5))
    torch.testing.assert_close(enc[:, 0, 1], torch.zeros(2))  # std 0: eps keeps it finite
    torch.testing.assert_close(n.decode(enc), x)


def test_embedded_defaults():
    data = load("darcy")
    check_layout(data, 180, 20, 50, 85)
    assert data.info["data_source"] == "embedded"
    assert data.info["validation"].startswith("the last 20 of 200 training samples")
    assert torch.unique(data.x_train[:, 0]).numel() > 1
    again = load("darcy")  # cached: the same files
    torch.testing.assert_close(again.y_test, data.y_test)
    pde = load("pdebench-darcy")
    check_layout(pde, 203, 22, 25, 64)  # N = 250: 25 test, 225 train, 10% of them validation
    assert (pde.y_test > 0).all()


def test_embedded_incomplete_entry_is_regenerated(mona_cache):
    kw = {"n_train": 6, "n_test": 2, "resolution": 17, "val_fraction": 0.34}
    first = load("darcy", **kw)
    smooth2 = next(mona_cache.glob("data/*/piececonst_r17_N2_smooth2.mat"))
    smooth2.unlink()  # as if generation had stopped after the training file
    second = load("darcy", **kw)
    assert smooth2.exists()
    torch.testing.assert_close(second.y_test, first.y_test)


# ---------------------------------------------------------------- bad input
def _pair(d, a, u, n1=3, n2=2, r=17, writer=write_mat_v5):
    writer(d / f"piececonst_r{r}_N{n1}_smooth1.mat", {"coeff": a[:n1], "sol": u[:n1]})
    writer(d / f"piececonst_r{r}_N{n2}_smooth2.mat", {"coeff": a[n1:n1 + n2], "sol": u[n1:n1 + n2]})


def _bad_fno(kind, d):
    a, u = darcy_arrays(5, 17)
    if kind == "missing smooth2":
        write_mat_v5(d / "piececonst_r17_N3_smooth1.mat", {"coeff": a[:3], "sol": u[:3]})
        return "piececonst_r*_N*_smooth2.mat", str(d)
    if kind == "missing field":
        _pair(d, a, u)
        write_mat_v5(d / "piececonst_r17_N3_smooth1.mat", {"coeff": a[:3]})
        return "no field 'sol'", "piececonst_r17_N3_smooth1.mat"
    if kind == "wrong shape":
        _pair(d, a, u)
        write_mat_v5(d / "piececonst_r17_N3_smooth1.mat", {"coeff": a[:3, :, :9], "sol": u[:3]})
        return "shape", "piececonst_r17_N3_smooth1.mat"
    if kind == "v73 not reversed":
        _pair(d, a, u, writer=write_mat_v73)
        import h5py

        with h5py.File(d / "piececonst_r17_N3_smooth1.mat", "r+") as f:
            del f["coeff"]
            f["coeff"] = a[:3, :, :9]  # (3, 17, 9): not (R, R, N)
        return "expected (R, R, N)", "piececonst_r17_N3_smooth1.mat"
    if kind == "truncated":
        _pair(d, a, u)
        p = d / "piececonst_r17_N2_smooth2.mat"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return "truncated", "piececonst_r17_N2_smooth2.mat"
    if kind == "garbage":
        _pair(d, a, u)
        (d / "piececonst_r17_N2_smooth2.mat").write_bytes(b"\x00not a mat file" * 40)
        return "corrupt", "piececonst_r17_N2_smooth2.mat"
    if kind == "nan":
        u = u.copy()
        u[1, 4, 4] = np.nan
        _pair(d, a, u)
        return "NaN", "piececonst_r17_N3_smooth1.mat"
    if kind == "too few samples":
        _pair(d, a, u)
        return "holds 3", "piececonst_r17_N3_smooth1.mat"
    if kind == "neither format":
        (d / "notes.txt").write_text("hello")
        return "no FNO Darcy file", str(d)
    if kind == "no such dir":
        return "no such file", str(d / "absent")
    raise AssertionError(kind)


FNO_FAULTS = ["missing smooth2", "missing field", "wrong shape", "v73 not reversed", "truncated",
              "garbage", "nan", "too few samples", "neither format", "no such dir"]


@pytest.mark.parametrize("kind", FNO_FAULTS)
def test_darcy_bad_input(tmp_path, kind):
    fault, where = _bad_fno(kind, tmp_path)
    data_dir = tmp_path / "absent" if kind == "no such dir" else tmp_path
    n_train = 4 if kind == "too few samples" else 3
    with pytest.raises(MonaError) as err:
        load("darcy", data_dir=str(data_dir), n_train=n_train, n_test=2, resolution=17)
    msg = str(err.value)
    assert "\n" not in msg and where in msg and fault in msg, msg


def _bad_pdebench(kind, d):
    a, u = darcy_arrays(20, 16)
    path = d / "2D_DarcyFlow_beta0.1_Train.hdf5"
    if kind == "missing dataset":
        write_pdebench(path, a, u, skip=("tensor",))
        return "no dataset 'tensor'"
    if kind == "wrong shape":
        write_pdebench(path, a, u)
        import h5py

        with h5py.File(path, "r+") as f:
            del f["tensor"]
            f["tensor"] = u[:, None, :, :8].astype(np.float32)
        return "'tensor' has shape"
    if kind == "nan":
        a = a.copy()
        a[0, 0, 0] = np.inf
        write_pdebench(path, a, u)
        return "NaN/inf"
    if kind == "truncated":
        write_pdebench(path, a, u)
        path.write_bytes(path.read_bytes()[:3000])
        return "truncated"
    if kind == "other beta":
        write_pdebench(d / "2D_DarcyFlow_beta1.0_Train.hdf5", a, u)
        return "beta=0.1"
    if kind == "too few samples":
        write_pdebench(path, a, u)
        return "holds 18 training"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing dataset", "wrong shape", "nan", "truncated",
                                  "other beta", "too few samples"])
def test_pdebench_bad_input(tmp_path, kind):
    fault = _bad_pdebench(kind, tmp_path)
    n_train = 30 if kind == "too few samples" else None
    with pytest.raises(MonaError) as err:
        load("pdebench-darcy", data_dir=str(tmp_path), resolution=16, n_train=n_train)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and fault in msg, msg


def test_unknown_task():
    with pytest.raises(MonaError, match="unknown task 'nope'.*darcy"):
        get_task("nope")
