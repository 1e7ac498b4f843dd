"""``--task arrays``: a user's own ``.npz`` or HDF5 arrays, dense or classes, 1D or 2D; every
inconsistency one line naming the file and the array."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError
from mona_tune.tasks import resolve_task
from mona_tune.tasks.arrays import load_arrays


def write_npz(folder, splits: dict[str, tuple[np.ndarray, np.ndarray]]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in splits.items():
        np.savez(folder / f"{name}.npz", x=x, y=y)
    return folder


def write_h5(path, splits: dict[str, tuple[np.ndarray, np.ndarray]]):
    with h5py.File(path, "w") as f:
        for name, (x, y) in splits.items():
            f.create_dataset(f"{name}/x", data=x)
            f.create_dataset(f"{name}/y", data=y)
    return path


def dense_1d(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, (n, 2, 16)).astype(np.float32)
    return x, (x[:, :1] * 0.5 + 1.0).astype(np.float64)


def classes_2d(n, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
    return x, y.astype(np.int64)


def cfg(data_dir, **kw):
    return TrainConfig(task="arrays", data_dir=str(data_dir), **kw)


def test_dense_1d_npz(tmp_path):
    d = write_npz(tmp_path / "d", {"train": dense_1d(20), "test": dense_1d(6, seed=1)})
    c = cfg(d)
    task = resolve_task(c)
    assert (task.output, task.metric, task.direction) == ("dense", "rel_l2", "min")
    assert (task.in_channels, task.in_shape, task.out_channels) == (2, (16,), 1)
    data = load_arrays(c)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (18, 2, 6)  # 10 % of 20
    x, y = dense_1d(20)
    # targets stay physical; inputs normalised with the 18 fitting samples' statistics
    assert torch.allclose(data.y_train, torch.from_numpy(y[:18]).float())
    assert torch.allclose(data.y_val, torch.from_numpy(y[18:]).float())
    mean, std = x[:18].mean(0), x[:18].std(0, ddof=1)
    assert torch.allclose(data.x_val, torch.from_numpy((x[18:] - mean) / (std + 1e-5)),
                          atol=1e-5)
    # the model's normalised prediction decodes with the fitting targets' statistics
    z = torch.zeros(1, 1, 16)
    assert torch.allclose(data.decode(z)[0], torch.from_numpy(y[:18].mean(0)).float(),
                          atol=1e-6)
    assert data.info["n_train"] == 18 and data.info["target"] == "dense"


def test_classes_2d_hdf5_with_its_own_validation(tmp_path):
    path = write_h5(tmp_path / "mine.h5", {"train": classes_2d(30), "val": classes_2d(9, 1),
                                           "test": classes_2d(12, 2)})
    for where in (path, tmp_path):  # the file, or the folder holding only it
        task = resolve_task(cfg(where))
        assert (task.output, task.metric, task.direction) == ("classes", "error_rate", "min")
        assert (task.in_channels, task.in_shape, task.out_channels) == (1, (8, 8), 3)
    task = resolve_task(cfg(path, metric="accuracy"))
    assert (task.metric, task.direction) == ("accuracy", "max")
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    assert task.metric_per_sample(logits, labels).tolist() == [1.0, 0.0, 1.0]
    err = resolve_task(cfg(path))
    assert err.metric_per_sample(logits, labels).tolist() == [0.0, 1.0, 0.0]
    data = load_arrays(cfg(path, n_train=24))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (24, 9, 12)
    assert data.y_train.dtype == torch.int64 and data.y_val.tolist() == [0, 1, 2] * 3
    assert data.info["classes"] == 3
    assert torch.equal(data.decode(logits), logits)


def test_target_kind_override(tmp_path):
    x, y = dense_1d(12)
    labels = (y[:, 0, 0] > 1.0).astype(np.float32)  # floats that are labels
    d = write_npz(tmp_path / "d", {"train": (x, labels), "test": (x[:4], labels[:4])})
    assert resolve_task(cfg(d, target_kind="classes")).out_channels == 2
    with pytest.raises(MonaError, match=r"y has shape \(12,\); a dense target has x's rank"):
        resolve_task(cfg(d))


def _bad_cases(tmp_path):
    x, y = dense_1d(10)
    xc, yc = classes_2d(10)
    nan = x.copy()
    nan[3, 1, 5] = np.nan
    return {
        "no test split": ({"train": (x, y)}, "no test split"),
        "x per sample": ({"train": (x, y), "test": (x[:, :, :8], y[:, :, :8])},
                         r"test.npz: x is \(2, 8\) per sample, the training split's \(2, 16\)"),
        "y per sample": ({"train": (x, y), "test": (x, np.concatenate([y, y], 1))},
                         r"test.npz: y is \(2, 16\) per sample, the training split's \(1, 16\)"),
        "counts": ({"train": (x, y[:9]), "test": (x, y)}, "train.npz: x holds 10 samples, y 9"),
        "rank": ({"train": (x[:, 0], y), "test": (x, y)},
                 r"train.npz: x has shape \(10, 16\); \(N, C, L\) or \(N, C, H, W\)"),
        "nan": ({"train": (nan, y), "test": (x, y)},
                r"train.npz: x holds 1 NaN or infinite values \(first at \(3, 1, 5\)\)"),
        "labels": ({"train": (xc, yc), "test": (xc, yc + 1)},
                   r"test.npz: labels 1..3 out of range 0..2"),
        "one class": ({"train": (xc, yc * 0), "test": (xc, yc * 0)}, "y holds one class"),
    }


@pytest.mark.parametrize("case", ["no test split", "x per sample", "y per sample", "counts",
                                  "rank", "nan", "labels", "one class"])
def test_bad_arrays_are_one_line(tmp_path, case):
    splits, message = _bad_cases(tmp_path)[case]
    d = write_npz(tmp_path / "d", splits)
    with pytest.raises(MonaError, match=message):
        resolve_task(cfg(d))
        load_arrays(cfg(d))


def test_bad_places_and_metrics(tmp_path):
    with pytest.raises(MonaError, match="task arrays needs --data-dir"):
        resolve_task(TrainConfig(task="arrays"))
    with pytest.raises(MonaError, match="no such folder or HDF5 file"):
        resolve_task(cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MonaError, match="no train.npz/test.npz and no HDF5 file"):
        resolve_task(cfg(tmp_path / "empty"))
    d = write_npz(tmp_path / "d", {"train": dense_1d(10), "test": dense_1d(4)})
    with pytest.raises(MonaError, match=r"--metric accuracy is for classes targets; these "
                                        r"targets are dense \(rel_l2, nrmse, mse\)"):
        resolve_task(cfg(d, metric="accuracy"))
    with pytest.raises(MonaError, match=r"--metric 'f1': unknown \(known: rel_l2, nrmse, mse, "
                                        r"error_rate, accuracy\)"):
        resolve_task(cfg(d, metric="f1"))
    np.savez(d / "test.npz", x=dense_1d(4)[0])
    with pytest.raises(MonaError, match="test.npz: no array 'y'"):
        resolve_task(cfg(d))
    (d / "test.npz").write_bytes(b"not a zip")
    with pytest.raises(MonaError, match="test.npz: not a readable .npz file"):
        resolve_task(cfg(d))
    h5 = write_h5(tmp_path / "g.h5", {"train": dense_1d(10), "test": dense_1d(4)})
    with h5py.File(h5, "a") as f:
        del f["test/y"]
    with pytest.raises(MonaError, match="g.h5: group 'test' has no dataset 'y'"):
        resolve_task(cfg(h5))


def test_a_field_the_task_does_not_read_is_one_line(tmp_path, capsys):
    from mona_tune.cli import main
    from mona_tune.tasks import get_task
    from mona_tune.tasks.registry import check_fields

    check_fields(get_task("burgers"), {"nu", "lr", "resolution"}, "here")  # all read
    with pytest.raises(MonaError, match=r"^here: nu is not used by task darcy \(of beta, metric, "
                                        r"nu, resolution, rho, target_kind it reads "
                                        r"resolution\)$"):
        check_fields(get_task("darcy"), {"nu", "lam"}, "here")
    with pytest.raises(MonaError, match="metric, rho are not used by task advection"):
        check_fields(get_task("advection"), {"rho", "metric", "beta"}, "here")
    with pytest.raises(MonaError, match=r"it reads none of them\)"):
        check_fields(get_task("waveforms"), {"beta"}, "here")
    assert main(["train", "--task", "darcy", "--nu", "0.5", "--epochs", "1"]) == 2
    assert "train --task darcy: nu is not used by task darcy" in capsys.readouterr().err
    space = tmp_path / "s.yaml"
    space.write_text("searched:\n  lam: {uniform: [0, 1]}\n  inner_lr: {loguniform: [0.01, 1]}\n"
                     "  warmup_epochs: {randint: [0, 2]}\nfixed:\n  metric: mse\n")
    assert main(["search", "--task", "advection", "--space", str(space), "--storage",
                 str(tmp_path / "runs"), "--tracking-uri",
                 f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err
    assert "--task advection with space s.yaml and flags: metric is not used by task " \
           "advection" in err and not (tmp_path / "runs").exists()
