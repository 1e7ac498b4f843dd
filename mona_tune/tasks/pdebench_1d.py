"""The PDEBench 1D family: ``advection``, ``burgers``, ``diffusion-reaction``, ``diffusion-sorption``.

Each maps the state at t = 0 to the state at one later saved time, on the same cells, and is
scored by PDEBench's nRMSE (per sample, then the mean). The pairing is ORCA's, which MoNA reuses
(ORCA, ``src/data_loaders.py``: ``load_pde`` with ``UNetDatasetSingle`` / ``UNetDatasetMult``;
``src/configs/PDEADV.yaml``, ``PDEBG.yaml``, ``PDERD.yaml``, ``PDEDS.yaml``):

===================  ===============================  =====  ======  =======  ================
task                 file                             cells  t step  t_train  output state
===================  ===============================  =====  ======  =======  ================
advection            1D_Advection_Sols_beta0.4.hdf5   1024/4   5     200      last (t = 2)
burgers              1D_Burgers_Sols_Nu1.0.hdf5       1024     5     200      last (t = 2)
diffusion-reaction   ReacDiff_Nu0.5_Rho1.0.hdf5       1024     1     30       index 29 (t=0.29)
diffusion-sorption   1D_diff-sorp_NA_NA.h5            1024     1     101      last (t = 500 s)
===================  ===============================  =====  ======  =======  ================

ORCA keeps every ``t step``-th saved state and takes state ``min(t_train, kept) − 1`` of those as
the target; the input is state 0 alone (one channel), ``(N, 1, X)``. Test and training samples
follow each layout's split (:mod:`mona_tune.tasks.files_1d`); validation is the last
``val_fraction`` of the training samples, held out of training as for ``pdebench-darcy``.

Departure: ORCA feeds the raw states; here inputs are normalised and the model predicts the
target normalised, per cell, with statistics of the training samples (FNO's normaliser, as for
the Darcy tasks); the loss and the metric are computed on the decoded target in physical units,
so the metric is PDEBench's.

Without ``data_dir`` a small file in the same layout is generated once into the user cache (by
:mod:`mona_tune.tasks.generate_1d`, PDEBench's schemes) and read by the same code path.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mona_tune.errors import MonaError
from mona_tune.tasks import files_1d
from mona_tune.tasks.embedded import embedded_dir, file_size_for
from mona_tune.tasks.metrics import nrmse_loss, nrmse_per_sample
from mona_tune.tasks.normalize import UnitGaussianNormalizer
from mona_tune.tasks.readers import pdebench_step
from mona_tune.tasks.registry import Task, TaskData, register, validation_size

EMBEDDED_SEED = 0
DATA_VERSION = 1  # bump when the generated data change


@dataclass(frozen=True)
class Pairing:
    """ORCA's choice of input and output for one file: resolution, time step kept, target."""

    resolution: int  # cells after reduction (a 1024-cell file reduced by ORCA's step)
    t_step: int  # ORCA's reduced_resolution_t
    t_train: int  # ORCA's t_train: the target is kept state min(t_train, kept) - 1

    def t_index(self, n_t: int) -> int:
        """Index in the file's saved states of the target state."""
        kept = math.ceil(n_t / self.t_step)
        return (min(self.t_train, kept) - 1) * self.t_step


@dataclass(frozen=True)
class Embedded:
    """The generated default: samples, cells, how far the generator runs, and parameters that
    differ from the real file's (used when the config leaves them unset)."""

    n_total: int
    resolution: int
    fin_time: float | None = None  # None: PDEBench's end time
    params: tuple[tuple[str, float], ...] = ()


PAIRINGS = {
    "advection": Pairing(256, 5, 200),
    "burgers": Pairing(1024, 5, 200),
    "diffusion-reaction": Pairing(1024, 1, 30),
    "diffusion-sorption": Pairing(1024, 1, 101),
}
EMBEDDED = {
    "advection": Embedded(250, 128),
    # ν = 0.1 (PDEBench's Nu0.1 file) rather than ORCA's 1.0: at ν = 1 the explicit scheme's
    # diffusion limit takes 80 000 steps at 128 cells (minutes for 250 samples on 2 cores), and
    # by t = 2 the state has decayed to the mean of u(0) (the first mode by e^-25), a target a
    # linear map predicts exactly
    "burgers": Embedded(250, 128, params=(("nu", 0.1),)),
    "diffusion-reaction": Embedded(250, 128, fin_time=0.3),  # the target is t = 0.29
    "diffusion-sorption": Embedded(250, 128),
}
PAPER_NRMSE = {  # MoNA / ORCA, nRMSE on PDEBench (ORCA's own table for Burgers)
    "advection": "MoNA 0.0088, ORCA 0.0098",
    "burgers": "ORCA 0.012",
    "diffusion-reaction": "MoNA 0.0028, ORCA 0.0032",
    "diffusion-sorption": "MoNA 0.0016, ORCA 0.0018",
}
DEFAULT_PARAMS = {"advection": {"beta": 0.4}, "burgers": {"nu": 1.0},
                  "diffusion-reaction": {"nu": 0.5, "rho": 1.0}, "diffusion-sorption": {}}


def equation_params(task: str, cfg) -> dict[str, float]:
    """The equation's parameters naming the file: the config's, else ORCA's files' (or, for the
    generated default, the embedded data's)."""
    defaults = dict(DEFAULT_PARAMS[task])
    if cfg.data_dir is None:
        defaults.update(EMBEDDED[task].params)
    return {k: float(getattr(cfg, k) if getattr(cfg, k) is not None else v)
            for k, v in defaults.items()}


def _embedded_file(task: str, cfg, params: dict[str, float]) -> Path:
    from mona_tune.tasks.generate_1d import make_1d_dataset

    emb = EMBEDDED[task]
    fam = files_1d.FAMILIES[task]
    total = file_size_for(cfg.n_train, cfg.n_test, emb.n_total,
                          functools.partial(files_1d.n_test_of, fam.layout))
    n_te = files_1d.n_test_of(fam.layout, total)
    gen = {"n_train": total - n_te, "n_test": n_te, "resolution": emb.resolution,
           "fin_time": emb.fin_time, **params}
    out = embedded_dir({"task": task, **gen}, [fam.filename(params)],
                       lambda d: make_1d_dataset(task, d, seed=EMBEDDED_SEED, workers=1, **gen),
                       DATA_VERSION)
    return out / fam.filename(params)


def load_1d(task: str, cfg) -> TaskData:
    """Read the task's file (or the generated default), pair, split and normalise."""
    fam, pairing = files_1d.FAMILIES[task], PAIRINGS[task]
    params = equation_params(task, cfg)
    if cfg.data_dir is None:
        path, source = _embedded_file(task, cfg, params), "embedded"
    else:
        path = files_1d.find_file(fam, Path(cfg.data_dir).expanduser(), params)
        source = "files"
    head = files_1d.header(path)
    if head.layout != fam.layout:
        raise MonaError(f"{path}: a {head.layout!r}-layout file, task {task} reads "
                        f"{fam.layout!r} (see mona-tune data inspect)")
    default_res = EMBEDDED[task].resolution if source == "embedded" else pairing.resolution
    step = pdebench_step(head.nx, min(cfg.resolution or default_res, head.nx), path)
    t_index = pairing.t_index(head.n_t)
    d = files_1d.read_pair(head, cfg.n_train, cfg.n_test, t_index, step)
    t = files_1d.saved_times(head)
    info = {"data_source": source, "data_files": str(path), "data_format": f"pdebench-1d "
            f"({head.layout})", "file_resolution": head.nx, "target_time_index": t_index,
            "target_time": float(f"{t[t_index]:.6g}"), "file_states": head.n_t,
            **{k: float(f"{head.attrs.get(a, params[k]):.6g}")
               for k, a in zip(fam.params, fam.attrs)}}
    return build_1d_task_data(d["u0_train"], d["ut_train"], d["u0_test"], d["ut_test"],
                              cfg.val_fraction, info, str(path), files={"all": path})


def build_1d_task_data(u0_train: np.ndarray, ut_train: np.ndarray, u0_test: np.ndarray,
                       ut_test: np.ndarray, val_fraction: float, info: dict,
                       where: str, files: dict[str, Path] | None = None) -> TaskData:
    """Validation = the last ``val_fraction`` of the training samples, split off before the
    normalisers are fitted on the rest."""
    n = u0_train.shape[0]
    n_val = validation_size(n, val_fraction)
    n_fit = n - n_val
    if n_fit < 2:
        raise MonaError(f"{where}: {n} training samples leave {n_fit} after the validation split "
                        f"(val_fraction={val_fraction}); the normalisers need at least 2")
    x_norm = UnitGaussianNormalizer(torch.from_numpy(u0_train[:n_fit]))
    y_norm = UnitGaussianNormalizer(torch.from_numpy(ut_train[:n_fit]))

    def pair(u0: np.ndarray, ut: np.ndarray):
        return (x_norm.encode(torch.from_numpy(u0)).unsqueeze(1).contiguous(),
                torch.from_numpy(ut).unsqueeze(1).contiguous())

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        pair(u0_train[:n_fit], ut_train[:n_fit]), pair(u0_train[n_fit:], ut_train[n_fit:]),
        pair(u0_test, ut_test))
    info = {**info, "n_train": n_fit, "n_val": n_val, "n_test": int(u0_test.shape[0]),
            "validation": f"the last {n_val} of {n} training samples (val_fraction "
                          f"{val_fraction:g})", "resolution": int(u0_train.shape[-1])}
    return TaskData(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                    y_test=y_test, decode=y_norm.decode, info=info, files=files or {})


_EQUATIONS = {
    "advection": "u_t + beta u_x = 0 (beta from config, 0.4)",
    "burgers": "u_t + (u^2/2)_x = nu/pi u_xx (nu from config, 1.0)",
    "diffusion-reaction": "u_t = nu u_xx + rho u(1-u) (nu 0.5, rho 1.0 from config)",
    "diffusion-sorption": "u_t = D/R(u) u_xx, Freundlich retardation R",
}


def _register(task: str) -> Task:
    pairing = PAIRINGS[task]
    return register(Task(
        name=task,
        description=f"PDEBench 1D {_EQUATIONS[task]}: u(0) -> u(t) on {pairing.resolution} "
                    f"cells, nRMSE",
        in_channels=1, in_shape=(pairing.resolution,), output="dense", out_channels=1,
        metric="nrmse", direction="min", loss=nrmse_loss, metric_per_sample=nrmse_per_sample,
        load=functools.partial(load_1d, task),
        fields=frozenset({"resolution", *DEFAULT_PARAMS[task]}),
    ))


TASKS_1D = tuple(_register(name) for name in PAIRINGS)
