"""``mona-tune data make`` / ``data inspect`` through the real command line entry point."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import darcy_arrays, write_mat_v5, write_mat_v73, write_pdebench

from mona_tune.cli import main


def run_ok(capsys, *argv) -> str:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def run_fails(capsys, *argv, naming: str) -> str:
    """Exit status 2 and one error line on stderr that names ``naming``; no traceback."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mona-tune: error: "), err
    assert naming in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_make_fno_then_inspect(tmp_path, capsys):
    out_dir = tmp_path / "fno"
    out = run_ok(capsys, "data", "make", "darcy", "--out", str(out_dir), "--n-train", "4",
                 "--n-test", "2", "--resolution", "17", "--workers", "1", "--seed", "1")
    train = out_dir / "piececonst_r17_N4_smooth1.mat"
    test = out_dir / "piececonst_r17_N2_smooth2.mat"
    assert out.split() == [str(train), str(test)]
    assert set(out_dir.iterdir()) == {train, test}  # nothing else left behind
    text = run_ok(capsys, "data", "inspect", str(out_dir))
    assert "FNO MATLAB v5, 4 samples, grid 17x17" in text
    assert "FNO MATLAB v5, 2 samples, grid 17x17" in text
    assert "coeff" in text and "(4, 17, 17)" in text and "float64" in text
    assert "min 3  max 12" in text


def test_make_pdebench_then_inspect(tmp_path, capsys):
    out = run_ok(capsys, "data", "make", "darcy", "--format", "pdebench", "--out", str(tmp_path),
                 "--n-train", "18", "--n-test", "2", "--resolution", "16", "--beta", "1.0",
                 "--workers", "2")
    path = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    assert out.strip() == str(path)
    with h5py.File(path) as f:
        assert f["tensor"].shape == (20, 1, 16, 16)
    text = run_ok(capsys, "data", "inspect", str(path))
    assert "PDEBench HDF5, 20 samples (first 2 = test, 18 train), grid 16x16, beta 1" in text
    for name in ("nu", "tensor", "x-coordinate", "y-coordinate", "float32", "min 0.1  max 1"):
        assert name in text


def test_inspect_v73(tmp_path, capsys):
    a, u = darcy_arrays(3, 9)
    path = write_mat_v73(tmp_path / "piececonst_r9_N3_smooth1.mat", {"coeff": a, "sol": u})
    text = run_ok(capsys, "data", "inspect", str(path))
    assert "FNO MATLAB v7.3 (HDF5), 3 samples, grid 9x9, train file (smooth1)" in text
    assert "shape (9, 9, 3)" in text and "MATLAB order (3, 9, 9)" in text


def _write_bad(kind, d):
    """One faulty file (or directory) per kind; returns the path to inspect."""
    a, u = darcy_arrays(3, 9)
    mat = d / "piececonst_r9_N3_smooth1.mat"
    pde = d / "2D_DarcyFlow_beta0.1_Train.hdf5"
    if kind == "missing file":
        return d / "nothing-here.mat"
    if kind == "empty directory":
        return d
    if kind == "neither format":
        (d / "readme.txt").write_text("not data")
        return d
    if kind == "garbage":
        mat.write_bytes(b"garbage " * 100)
    elif kind == "tiny":
        mat.write_bytes(b"MATLAB")
    elif kind == "truncated v5":
        write_mat_v5(mat, {"coeff": a, "sol": u})
        mat.write_bytes(mat.read_bytes()[:700])
    elif kind == "truncated v73":
        write_mat_v73(mat, {"coeff": a, "sol": u})
        mat.write_bytes(mat.read_bytes()[:1500])
    elif kind == "missing field":
        write_mat_v5(mat, {"coeff": a})
    elif kind == "wrong shape":
        write_mat_v5(mat, {"coeff": a[:, :, :4], "sol": u[:, :, :4]})
    elif kind == "nan":
        u[0, 3, 3] = np.nan
        write_mat_v5(mat, {"coeff": a, "sol": u})
    elif kind == "pdebench missing dataset":
        write_pdebench(pde, a, u, skip=("x-coordinate",))
        return pde
    elif kind == "pdebench wrong shape":
        write_pdebench(pde, a, u)
        with h5py.File(pde, "r+") as f:
            del f["nu"]
            f["nu"] = a[:, :4].astype(np.float32)
        return pde
    elif kind == "unrelated hdf5":
        with h5py.File(mat, "w") as f:
            f["something"] = np.zeros(3)
    else:
        raise AssertionError(kind)
    return mat


BAD = ["missing file", "empty directory", "neither format", "garbage", "tiny", "truncated v5",
       "truncated v73", "missing field", "wrong shape", "nan", "pdebench missing dataset",
       "pdebench wrong shape", "unrelated hdf5"]


@pytest.mark.parametrize("kind", BAD)
def test_inspect_bad_input(tmp_path, capsys, kind):
    path = _write_bad(kind, tmp_path)
    run_fails(capsys, "data", "inspect", str(path), naming=str(path))


@pytest.mark.parametrize("task, args, name, states", [
    ("advection", ["--beta", "1.0"], "1D_Advection_Sols_beta1.0.hdf5", 201),
    ("burgers", ["--nu", "0.1", "--end-time", "0.5"], "1D_Burgers_Sols_Nu0.1.hdf5", 51),
    ("diffusion-reaction", ["--end-time", "0.3"], "ReacDiff_Nu0.5_Rho1.0.hdf5", 31),
    ("diffusion-sorption", ["--end-time", "100"], "1D_diff-sorp_NA_NA.h5", 21),
])
def test_make_a_pdebench_1d_file_then_inspect_and_load_it(tmp_path, capsys, task, args, name,
                                                          states):
    from mona_tune.config import TrainConfig
    from mona_tune.tasks import get_task

    out = run_ok(capsys, "data", "make", task, "--out", str(tmp_path), "--n-train", "18",
                 "--n-test", "2", "--resolution", "32", "--workers", "1", *args)
    path = tmp_path / name
    assert out.split() == [str(path)] and set(tmp_path.iterdir()) == {path}
    text = run_ok(capsys, "data", "inspect", str(tmp_path))
    assert "20 samples" in text and "32 cells" in text and f"{states} states" in text
    params = {"beta": 1.0} if task == "advection" else {"nu": 0.1} if task == "burgers" else {}
    data = get_task(task).load(TrainConfig(task=task, data_dir=str(tmp_path), **params))
    assert data.x_test.shape == (2, 1, 32) and data.info["file_states"] == states
    assert torch_finite(data.y_train) and data.info["n_train"] + data.info["n_val"] == 18


def torch_finite(t) -> bool:
    import torch

    return bool(torch.isfinite(t).all())


@pytest.mark.parametrize("argv, naming", [
    (["advection", "--nu", "1.0"], "--nu does not apply (it takes --beta, --end-time)"),
    (["diffusion-sorption", "--format", "pdebench"], "--format does not apply"),
    (["darcy", "--rho", "1"], "--rho does not apply (it takes --beta)"),
    (["burgers", "--n-train", "10", "--n-test", "2"], "--n-test must be 1 for 12 samples"),
    (["burgers", "--nu", "-1"], "--nu must be a positive number (got -1.0)"),
    (["diffusion-reaction", "--resolution", "2"], "--resolution must be ≥ 4 cells"),
])
def test_make_1d_bad_arguments_are_one_line(tmp_path, capsys, argv, naming):
    run_fails(capsys, "data", "make", *argv[:1], "--out", str(tmp_path / "o"), *argv[1:],
              naming=naming)
    assert not (tmp_path / "o").exists()
