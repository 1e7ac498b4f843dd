"""The PDEBench 1D tasks on files written here with plain h5py in PDEBench's exact layouts.

``files_1d``: names as PDEBench spells them, both layouts' headers and splits, reading only the
two paired states, every fault as one line. ``pdebench_1d``: ORCA's pairing (which saved state is
the target), the split, the normalisation fitted on the training samples only, the metric on
physical units, and the ``info`` a run logs. ``describe``: ``data inspect`` of both layouts.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError
from mona_tune.tasks import files_1d, get_task
from mona_tune.tasks.describe import describe
from mona_tune.tasks.pdebench_1d import PAIRINGS, Pairing


def states(n: int, n_t: int, nx: int, seed: int = 0) -> np.ndarray:
    """Distinct values per (sample, time, cell), so any mix-up of indices shows."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1, nx)).astype(np.float32)
    return base + np.arange(n_t, dtype=np.float32)[None, :, None] * 10.0


def write_tensor_file(path, u: np.ndarray, attrs: dict, t_extra: bool = True) -> None:
    """PDEBench's one-tensor layout: tensor (N, T, X), x-coordinate (X,), t-coordinate (T+1,)."""
    n, n_t, nx = u.shape
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=u)
        f.create_dataset("x-coordinate", data=((np.arange(nx) + 0.5) / nx).astype(np.float32))
        f.create_dataset("t-coordinate",
                         data=(np.arange(n_t + int(t_extra)) * 0.01).astype(np.float32))
        for k, v in attrs.items():
            f.attrs[k] = v


def write_groups_file(path, u: np.ndarray) -> None:
    """PDEBench's diffusion-sorption layout: groups 0000.. with data (T, X, 1), grid/x, grid/t."""
    n, n_t, nx = u.shape
    with h5py.File(path, "w") as f:
        for i in range(n):
            g = f.create_group(f"{i:04d}")
            g.create_dataset("data", data=u[i][:, :, None])
            g.create_dataset("grid/x", data=((np.arange(nx) + 0.5) / nx).astype(np.float32))
            g.create_dataset("grid/t", data=np.linspace(0, 500, n_t).astype(np.float32))
            g.attrs["config"] = "sim:\n  D: 0.0005\n"


def cfg(task: str, data_dir, **kw) -> TrainConfig:
    return TrainConfig(task=task, data_dir=str(data_dir), **kw)


# ================================================================= names and pairing
def test_file_names_spelled_as_pdebench():
    fam = files_1d.FAMILIES
    assert fam["advection"].filename({"beta": 0.4}) == "1D_Advection_Sols_beta0.4.hdf5"
    assert fam["advection"].filename({"beta": 1}) == "1D_Advection_Sols_beta1.0.hdf5"
    assert fam["burgers"].filename({"nu": 0.001}) == "1D_Burgers_Sols_Nu0.001.hdf5"
    assert fam["burgers"].filename({"nu": 1.0}) == "1D_Burgers_Sols_Nu1.0.hdf5"
    assert (fam["diffusion-reaction"].filename({"nu": 0.5, "rho": 1.0})
            == "ReacDiff_Nu0.5_Rho1.0.hdf5")
    assert fam["diffusion-sorption"].filename({}) == "1D_diff-sorp_NA_NA.h5"


@pytest.mark.parametrize("task, n_t, want", [
    ("advection", 201, 200),  # 41 states kept (every 5th); t_train 200 -> the last: t = 2
    ("burgers", 201, 200),
    ("diffusion-reaction", 101, 29),  # every state kept; t_train 30 -> state 29: t = 0.29
    ("diffusion-reaction", 31, 29),
    ("diffusion-reaction", 20, 19),  # fewer states than t_train: the last
    ("diffusion-sorption", 101, 100),
    ("advection", 23, 20),  # 5 kept (0, 5, 10, 15, 20)
])
def test_orca_target_state(task, n_t, want):
    assert PAIRINGS[task].t_index(n_t) == want


def test_pairing_by_hand():
    assert Pairing(8, 3, 100).t_index(10) == 9  # kept 0, 3, 6, 9
    assert Pairing(8, 3, 2).t_index(10) == 3


# ================================================================= loading
def test_advection_file_pairs_first_and_target_state_with_pdebench_split(tmp_path):
    u = states(20, 201, 64)
    write_tensor_file(tmp_path / "1D_Advection_Sols_beta0.4.hdf5", u, {"beta": np.float32(0.4)})
    data = get_task("advection").load(cfg("advection", tmp_path, val_fraction=0.25))
    # test: the first int(0.1 * 20) = 2 samples; train: the other 18, the last 4 of them validation
    torch.testing.assert_close(data.y_test[:, 0], torch.from_numpy(u[:2, 200]))
    torch.testing.assert_close(data.y_train[:, 0], torch.from_numpy(u[2:16, 200]))
    torch.testing.assert_close(data.y_val[:, 0], torch.from_numpy(u[16:20, 200]))
    # inputs: state 0 normalised per cell with the 14 fitting samples' statistics only
    fit = torch.from_numpy(u[2:16, 0])
    mean, std = fit.mean(0), fit.std(0)
    torch.testing.assert_close(data.x_train[:, 0], (fit - mean) / (std + 1e-5))
    torch.testing.assert_close(data.x_test[:, 0], (torch.from_numpy(u[:2, 0]) - mean) / (std + 1e-5))
    assert data.x_train.shape == (14, 1, 64) and data.in_shape == (64,) == data.out_shape
    # decode maps a prediction in normalised units back with the targets' statistics
    target = torch.from_numpy(u[2:16, 200])
    z = (target - target.mean(0)) / (target.std(0) + 1e-5)
    torch.testing.assert_close(data.decode(z.unsqueeze(1))[:, 0], target, atol=1e-4, rtol=1e-5)
    info = data.info
    assert info["data_source"] == "files" and info["target_time_index"] == 200
    assert info["target_time"] == 2.0 and info["file_states"] == 201 and info["beta"] == 0.4
    assert (info["n_train"], info["n_val"], info["n_test"]) == (14, 4, 2)


def test_resolution_takes_every_kth_cell(tmp_path):
    u = states(10, 31, 64)
    write_tensor_file(tmp_path / "ReacDiff_Nu0.5_Rho1.0.hdf5", u, {"Nu": 0.5, "rho": 1.0})
    data = get_task("diffusion-reaction").load(cfg("diffusion-reaction", tmp_path, resolution=16))
    torch.testing.assert_close(data.y_test[:, 0], torch.from_numpy(u[:1, 29, ::4]))
    assert data.info["resolution"] == 16 and data.info["file_resolution"] == 64
    with pytest.raises(MonaError, match="cannot be reduced to 24 cells"):
        get_task("diffusion-reaction").load(cfg("diffusion-reaction", tmp_path, resolution=24))


def test_diffusion_sorption_groups_split_last_ten_percent_test(tmp_path):
    u = states(20, 101, 32, seed=3)
    write_groups_file(tmp_path / "1D_diff-sorp_NA_NA.h5", u)
    data = get_task("diffusion-sorption").load(cfg("diffusion-sorption", tmp_path))
    # ORCA's UNetDatasetMult: sorted groups, the first int(0.9 * 20) = 18 train, the last 2 test
    torch.testing.assert_close(data.y_test[:, 0], torch.from_numpy(u[18:, 100]))
    torch.testing.assert_close(data.y_val[:, 0], torch.from_numpy(u[16:18, 100]))
    assert data.info["target_time"] == 500.0 and data.info["n_test"] == 2


def test_n_train_and_n_test_take_the_first_of_each_part(tmp_path):
    u = states(30, 11, 16)
    write_tensor_file(tmp_path / "1D_Burgers_Sols_Nu1.0.hdf5", u, {"Nu": 1.0})
    data = get_task("burgers").load(cfg("burgers", tmp_path, n_train=10, n_test=2))
    torch.testing.assert_close(data.y_test[:, 0], torch.from_numpy(u[:2, 10]))
    torch.testing.assert_close(data.y_train[:, 0], torch.from_numpy(u[3:12, 10]))
    with pytest.raises(MonaError, match=r"holds 3 test \(first 10%\) samples, n_test=4 asked"):
        get_task("burgers").load(cfg("burgers", tmp_path, n_test=4))


def test_metric_is_pdebench_nrmse_on_physical_units(tmp_path):
    task = get_task("advection")
    target = torch.tensor([[[1.0, -1.0, 1.0, -1.0]], [[2.0, 2.0, 2.0, 2.0]]])
    pred = target + torch.tensor([[[0.1, 0.1, 0.1, 0.1]], [[0.0, 0.0, 0.0, 1.0]]])
    # sample 1: RMS error 0.1 / RMS 1 = 0.1; sample 2: RMS error 0.5 / RMS 2 = 0.25
    torch.testing.assert_close(task.metric_per_sample(pred, target), torch.tensor([0.1, 0.25]))
    assert task.metric == "nrmse" and task.direction == "min" and task.in_shape == (256,)


# ================================================================= faults: one line each
@pytest.mark.parametrize("fault, message", [
    ("no_t", "no dataset 't-coordinate'"),
    ("tensor_2d", "dataset 'tensor' has shape (4, 16), expected (N, T, X)"),
    ("x_shape", "dataset 'x-coordinate' has shape (15,), expected (16,)"),
    ("nan", "field 'tensor' holds 1 NaN/inf values"),
    ("group_shape", "0003/data is shape (11, 8, 1), expected shape (11, 16, 1)"),
    ("text", "not an HDF5 file"),
])
def test_bad_files_are_one_line(tmp_path, fault, message):
    if fault in ("group_shape",):
        u = states(10, 11, 16)
        path = tmp_path / "1D_diff-sorp_NA_NA.h5"
        write_groups_file(path, u)
        with h5py.File(path, "a") as f:
            del f["0003/data"]
            f["0003"].create_dataset("data", data=np.zeros((11, 8, 1), np.float32))
        task = "diffusion-sorption"
    else:
        path = tmp_path / "1D_Advection_Sols_beta0.4.hdf5"
        u = states(10, 11, 16)
        if fault == "nan":
            u[0, 10, 3] = np.nan
        write_tensor_file(path, u, {"beta": 0.4})
        with h5py.File(path, "a") as f:
            if fault == "no_t":
                del f["t-coordinate"]
            if fault == "tensor_2d":
                del f["tensor"]
                f.create_dataset("tensor", data=np.zeros((4, 16), np.float32))
            if fault == "x_shape":
                del f["x-coordinate"]
                f.create_dataset("x-coordinate", data=np.zeros(15, np.float32))
        if fault == "text":
            path.write_text("not a file of states\n")
        task = "advection"
    with pytest.raises(MonaError, match=None) as e:
        get_task(task).load(cfg(task, tmp_path))
    text = str(e.value)
    assert message in text and str(path) in text and "\n" not in text, text


def test_a_missing_file_names_what_the_folder_holds(tmp_path):
    write_tensor_file(tmp_path / "1D_Advection_Sols_beta1.0.hdf5", states(10, 3, 8), {"beta": 1.0})
    with pytest.raises(MonaError, match=r"no 1D_Advection_Sols_beta0.4.hdf5 for beta=0.4 \(found "
                                        r"1D_Advection_Sols_beta1.0.hdf5; set beta to match\)"):
        get_task("advection").load(cfg("advection", tmp_path))
    data = get_task("advection").load(cfg("advection", tmp_path, beta=1.0))
    assert data.info["beta"] == 1.0
    with pytest.raises(MonaError, match="no PDEBench burgers file 1D_Burgers_Sols_Nu1.0.hdf5"):
        get_task("burgers").load(cfg("burgers", tmp_path))


def test_a_groups_file_given_to_a_tensor_task_is_refused(tmp_path):
    path = tmp_path / "1D_diff-sorp_NA_NA.h5"
    write_groups_file(path, states(10, 5, 8))
    with pytest.raises(MonaError, match="a 'groups'-layout file, task advection reads 'tensor'"):
        get_task("advection").load(cfg("advection", path))


# ================================================================= data inspect
def test_inspect_both_layouts(tmp_path):
    write_tensor_file(tmp_path / "ReacDiff_Nu0.5_Rho1.0.hdf5", states(20, 31, 16),
                      {"Nu": 0.5, "rho": 1.0})
    write_groups_file(tmp_path / "1D_diff-sorp_NA_NA.h5", states(20, 101, 8))
    text = describe(tmp_path)
    assert ("PDEBench 1D HDF5 (one tensor), 20 samples (first 2 = test, 18 train), 16 cells, "
            "31 states at t = 0..0.3, Nu 0.5, rho 1") in text
    assert "tensor" in text and "(20, 31, 16)" in text and "(32,)" in text
    assert ("PDEBench 1D HDF5 (one group per sample), 20 samples (groups 0000..0019; last 2 = "
            "test, 18 train), 8 cells, 101 states at t = 0..500") in text
    assert "0000/data" in text and "(101, 8, 1)" in text
