"""The Darcy flow tasks: ``darcy`` (NAS-Bench-360 / FNO files) and ``pdebench-darcy``.

Both read real files through :mod:`mona_tune.tasks.readers` (``darcy`` through the node cache of
:mod:`mona_tune.tasks.fno_cache`, which reads each file once per node). Without ``data_dir`` a
small dataset is generated once in the same file format into the user cache and read by the very
same code path.

Input: the coefficient a, normalised per grid point, plus two channels of grid coordinates
(x along axis 0, y along axis 1), ``(N, 3, r, r)``. Target: u in physical units, ``(N, 1, r, r)``.
The model predicts u normalised per grid point; ``TaskData.decode`` undoes that (FNO's
``UnitGaussianNormalizer``, fitted on the training samples only).

Validation samples. The protocols define training and test sets only (FNO / NAS-Bench-360:
the first 1000 of smooth1 and the first 100 of smooth2; PDEBench: the last 90% and the first 10%
of one file), and ORCA trains on all the training samples. ``darcy`` therefore validates on the
smooth2 samples that follow the test block (100-199 with the real 1024-sample file), so training
keeps all 1000; only where smooth2 holds no such samples (the embedded data, small files) is the
last ``val_fraction`` of the training samples held out instead. ``pdebench-darcy`` always holds
them out of its training part: every sample of a PDEBench file is either test or training, and
10% of its 9000 training samples is a smaller loss than of FNO's 1000.
``TaskData.info["validation"]`` names the samples used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mona_tune.errors import MonaError
from mona_tune.tasks import fno_cache, readers
from mona_tune.tasks.embedded import embedded_dir, file_size_for
from mona_tune.tasks.metrics import nrmse_loss, nrmse_per_sample, rel_l2_loss, rel_l2_per_sample
from mona_tune.tasks.normalize import UnitGaussianNormalizer
from mona_tune.tasks.registry import Task, TaskData, register, validation_size
from mona_tune.tasks.generate import fno_filename, make_dataset, pdebench_filename, pdebench_n_test

# Embedded defaults (data_dir unset): small enough to generate in a few seconds.
EMBEDDED_SEED = 0  # fixed: every trial of a search sees the same data, whatever its training seed
EMBEDDED_DARCY = {"n_train": 200, "n_test": 50, "resolution": 85}
EMBEDDED_PDEBENCH = {"n_total": 250, "resolution": 64}
# Real-file defaults (the benchmark protocols).
DARCY_N_TRAIN, DARCY_N_TEST, DARCY_RESOLUTION = 1000, 100, 85
PDEBENCH_RESOLUTION = 64  # ORCA's setting: the 128-cell files reduced with step 2
PDEBENCH_BETA = 0.1  # ORCA's file: 2D_DarcyFlow_beta0.1_Train.hdf5
DATA_VERSION = 1  # bump when generated data change, so that old cache entries are not reused


# ---------------------------------------------------------------- assembling TaskData
def _tensor(a: np.ndarray) -> Tensor:
    """A view of a writable array; a copy of a read-only one (the node cache's mapped arrays)."""
    return torch.from_numpy(a if a.flags.writeable else np.array(a))


def _inputs(a: Tensor, normalizer: UnitGaussianNormalizer, gx: np.ndarray,
            gy: np.ndarray) -> Tensor:
    n, r, _ = a.shape
    xs = torch.as_tensor(gx, dtype=torch.float32).view(1, 1, r, 1).expand(n, 1, r, r)
    ys = torch.as_tensor(gy, dtype=torch.float32).view(1, 1, 1, r).expand(n, 1, r, r)
    return torch.cat([normalizer.encode(a).unsqueeze(1), xs, ys], dim=1).contiguous()


def build_task_data(a_train: np.ndarray, u_train: np.ndarray, a_test: np.ndarray,
                    u_test: np.ndarray, gx: np.ndarray, gy: np.ndarray, val_fraction: float,
                    info: dict, where: str, val: tuple[np.ndarray, np.ndarray] | None = None,
                    val_from: str = "", files: dict[str, Path] | None = None) -> TaskData:
    """Normalisers fitted on the training samples; validation = ``val`` (samples outside the
    training set, read from ``val_from``) or else the last ``val_fraction`` of the training
    samples, split off before fitting. ``info["validation"]`` says which."""
    n = a_train.shape[0]
    if val is None:
        n_val = validation_size(n, val_fraction)
        n_fit = n - n_val
        val_from = f"the last {n_val} of {n} training samples (val_fraction {val_fraction:g})"
        a_val, u_val = a_train[n_fit:], u_train[n_fit:]
    else:
        n_fit, (a_val, u_val) = n, val
    if n_fit < 2:
        raise MonaError(f"{where}: {n} training samples leave {n_fit} after the validation split "
                        f"(val_fraction={val_fraction}); the normalisers need at least 2")
    a_fit, u_fit = a_train[:n_fit], u_train[:n_fit]
    a_normalizer = UnitGaussianNormalizer(_tensor(a_fit))
    u_normalizer = UnitGaussianNormalizer(_tensor(u_fit))

    def pair(a: np.ndarray, u: np.ndarray) -> tuple[Tensor, Tensor]:
        return _inputs(_tensor(a), a_normalizer, gx, gy), _tensor(u).unsqueeze(1).contiguous()

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        pair(a_fit, u_fit), pair(a_val, u_val), pair(a_test, u_test))
    info = {**info, "n_train": n_fit, "n_val": int(a_val.shape[0]), "validation": val_from,
            "n_test": int(a_test.shape[0]), "resolution": int(a_train.shape[-1])}
    return TaskData(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                    y_test=y_test, decode=u_normalizer.decode, info=info, files=files or {})


# ---------------------------------------------------------------- embedded data
def _embedded(params: dict, expected: list[str]) -> Path:
    gen = {k: v for k, v in params.items() if k != "task"}
    return embedded_dir(params, expected, lambda out: make_dataset(
        out=out, workers=1, progress=False, seed=EMBEDDED_SEED, **gen), DATA_VERSION)


def _embedded_darcy(n_train: int, n_test: int, resolution: int) -> Path:
    params = {"task": "darcy", "fmt": "fno", "n_train": n_train, "n_test": n_test,
              "resolution": resolution}
    expected = [fno_filename(resolution, n_train, 1), fno_filename(resolution, n_test, 2)]
    return _embedded(params, expected)


def _embedded_pdebench(n_train: int | None, n_test: int | None, resolution: int,
                       beta: float) -> Path:
    """Smallest PDEBench-layout file holding ≥ n_train training and ≥ n_test test samples."""
    total = file_size_for(n_train, n_test, EMBEDDED_PDEBENCH["n_total"], pdebench_n_test)
    n_te = pdebench_n_test(total)
    params = {"task": "pdebench-darcy", "fmt": "pdebench", "n_train": total - n_te,
              "n_test": n_te, "resolution": resolution, "beta": float(beta)}
    return _embedded(params, [pdebench_filename(beta)])


# ---------------------------------------------------------------- loaders
def load_darcy(cfg) -> TaskData:
    """NAS-Bench-360 Darcy: first n_train of smooth1, first n_test of smooth2, subsampled.

    Validation: the ``round(val_fraction · n_train)`` smooth2 samples right after the test block
    when smooth2 holds them, else the last ones of the n_train (see the module docstring).
    """
    target = cfg.resolution or DARCY_RESOLUTION
    if cfg.data_dir is None:
        n_train = cfg.n_train or EMBEDDED_DARCY["n_train"]
        n_test = cfg.n_test or EMBEDDED_DARCY["n_test"]
        data_dir = _embedded_darcy(n_train, n_test, cfg.resolution or EMBEDDED_DARCY["resolution"])
        source = "embedded"
    else:
        n_train, n_test = cfg.n_train or DARCY_N_TRAIN, cfg.n_test or DARCY_N_TEST
        data_dir = Path(cfg.data_dir).expanduser()
        source = "files"
    train_path, test_path = readers.fno_files(data_dir)
    heads = [fno_cache.fno_header(p) for p in (train_path, test_path)]
    if heads[0].resolution != heads[1].resolution:
        raise MonaError(f"{test_path}: grid {heads[1].resolution} differs from the training "
                        f"file's {heads[0].resolution}")
    step = readers.fno_step(heads[0].resolution, target, train_path)
    a_train, u_train = fno_cache.read_fno(train_path, n_train, step, "n_train")
    # validation after the test block of smooth2 where the file holds it (the original holds
    # 1024 samples: test 0-99, validation 100-199), so training keeps all n_train samples;
    # test and validation come from one read (a v5 file is read whole each time)
    n_val, val, val_from = validation_size(n_train, cfg.val_fraction), None, ""
    val_after_test = heads[1].n >= n_test + n_val
    a_test, u_test = fno_cache.read_fno(test_path, n_test + n_val * val_after_test, step, "n_test")
    if val_after_test:
        val = a_test[n_test:], u_test[n_test:]
        a_test, u_test = a_test[:n_test], u_test[:n_test]
        val_from = f"{test_path.name} samples {n_test}-{n_test + n_val - 1}"
    grid = np.linspace(0.0, 1.0, target, dtype=np.float32)
    info = {"data_source": source, "data_files": f"{train_path}, {test_path}",
            "data_format": heads[0].version, "file_resolution": heads[0].resolution}
    return build_task_data(a_train, u_train, a_test, u_test, grid, grid, cfg.val_fraction, info,
                           str(train_path), val, val_from,
                           files={"train": train_path, "test": test_path})


def load_pdebench_darcy(cfg) -> TaskData:
    """PDEBench 2D Darcy at β = cfg.beta (default 0.1): first 10% test, the rest training, reduced resolution."""
    target = cfg.resolution or PDEBENCH_RESOLUTION
    beta = PDEBENCH_BETA if cfg.beta is None else cfg.beta
    if cfg.data_dir is None:
        data_dir = _embedded_pdebench(cfg.n_train, cfg.n_test, target, beta)
        source = "embedded"
    else:
        data_dir = Path(cfg.data_dir).expanduser()
        source = "files"
    path = readers.pdebench_file(data_dir, beta)
    head = readers.pdebench_header(path)
    step = readers.pdebench_step(head.resolution, target, path)
    d = readers.read_pdebench(path, cfg.n_train, cfg.n_test, step)
    info = {"data_source": source, "data_files": str(path), "data_format": "pdebench",
            "file_resolution": head.resolution,
            "beta": float(f"{head.beta:.6g}") if head.beta is not None else beta}
    return build_task_data(d["a_train"], d["u_train"], d["a_test"], d["u_test"], d["x"], d["y"],
                           cfg.val_fraction, info, str(path), files={"all": path})


register(Task(
    name="darcy",
    description="NAS-Bench-360 Darcy flow (FNO piececonst files): a -> u at 85x85, relative L2",
    in_channels=3, in_shape=(DARCY_RESOLUTION, DARCY_RESOLUTION), output="dense", out_channels=1,
    metric="rel_l2", direction="min", loss=rel_l2_loss, metric_per_sample=rel_l2_per_sample,
    load=load_darcy, fields=frozenset({"resolution"}),
))

register(Task(
    name="pdebench-darcy",
    description="PDEBench 2D Darcy flow (beta from config): a -> u at 64x64, nRMSE",
    in_channels=3, in_shape=(PDEBENCH_RESOLUTION, PDEBENCH_RESOLUTION), output="dense",
    out_channels=1, metric="nrmse", direction="min", loss=nrmse_loss,
    metric_per_sample=nrmse_per_sample, load=load_pdebench_darcy,
    fields=frozenset({"resolution", "beta"}),
))

__all__ = ["UnitGaussianNormalizer", "build_task_data", "load_darcy", "load_pdebench_darcy",
           "nrmse_per_sample", "rel_l2_per_sample"]
