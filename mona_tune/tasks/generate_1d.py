"""PDEBench's 1D datasets generated the way PDEBench generated them, in its file layouts.

The solvers and initial conditions are :mod:`mona_tune.tasks.solvers_1d`; this module draws the
samples, runs the solver over fixed blocks of samples (in parallel processes) and writes the file
(:mod:`mona_tune.tasks.files_1d`). PDEBench's settings are the defaults:

==================  =====================  ======================  ====  =============
family              equation               parameters              end   saved times
==================  =====================  ======================  ====  =============
advection           u_t + β u_x = 0        β (file: beta)          2     0.01 apart
burgers             u_t + (u²/2)_x = ν/π u_xx   ν (file: Nu)       2     0.01 apart
diffusion-reaction  u_t = ν u_xx + ρu(1−u)  ν, ρ (file: Nu, rho)   1     0.01 apart
diffusion-sorption  u_t = D/R(u) u_xx      fixed (Freundlich R)    500   101 states
==================  =====================  ======================  ====  =============

``end`` may be shortened (``fin_time``), e.g. for a small embedded file whose task reads an early
time step: the states saved up to then are exactly those of the full run.

Blocks of :data:`BLOCK` samples, always the same ones, are solved together, so that the data
depend on the seed and the sample count only, never on the number of processes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from mona_tune.errors import MonaError
from mona_tune.tasks import files_1d, solvers_1d
from mona_tune.tasks.files_1d import FAMILIES
from mona_tune.tasks.generate import check_sizes, sample_rng
from mona_tune.workers import one_blas_thread, worker_pool

BLOCK = 64
DEFAULT_RESOLUTION = 1024  # PDEBench's cells
DEFAULTS = {  # PDEBench's released settings, and the ones ORCA's loaders read
    "advection": {"beta": 0.4, "fin_time": 2.0},
    "burgers": {"nu": 1.0, "fin_time": 2.0},
    "diffusion-reaction": {"nu": 0.5, "rho": 1.0, "fin_time": 1.0},
    "diffusion-sorption": {"fin_time": 500.0},
}
DT_SAVE = 0.01
SORPTION_STATES = 101  # PDEBench's released diffusion-sorption file: 101 states over [0, 500] s


def settings(family: str, **given) -> dict[str, float]:
    """The family's defaults overridden by the values ``given`` (None: the default)."""
    out = dict(DEFAULTS[family])
    out.update({k: float(v) for k, v in given.items() if v is not None and k in out})
    return out


def _block(args: tuple) -> tuple[int, np.ndarray]:
    family, seed, start, stop, nx, s = args
    xc = solvers_1d.cell_centres(nx)
    rngs = [sample_rng(seed, 0, i) for i in range(start, stop)]
    if family == "diffusion-sorption":
        u0 = np.array([solvers_1d.diffusion_sorption_initial(rng) for rng in rngs])
        n_t = _sorption_states(s["fin_time"])
        return start, solvers_1d.diffusion_sorption(u0, nx, t_end=s["fin_time"], n_t=n_t)
    normalise = family == "diffusion-reaction"
    u0 = np.stack([solvers_1d.initial_conditions(rng, xc, normalise=normalise) for rng in rngs])
    if family == "advection":
        u = solvers_1d.advection(u0, s["beta"], fin_time=s["fin_time"], dt_save=DT_SAVE)
    elif family == "burgers":
        u = solvers_1d.burgers(u0, s["nu"], fin_time=s["fin_time"], dt_save=DT_SAVE)
    else:
        u = solvers_1d.reaction_diffusion(u0, s["nu"], s["rho"], fin_time=s["fin_time"],
                                          dt_save=DT_SAVE)
    return start, u


def _sorption_states(t_end: float) -> int:
    """States of a diffusion-sorption run to ``t_end``: PDEBench's spacing (5 s) kept."""
    dt = DEFAULTS["diffusion-sorption"]["fin_time"] / (SORPTION_STATES - 1)
    return int(round(t_end / dt)) + 1


def _solve_all(family: str, seed: int, n: int, nx: int, s: dict, workers: int,
               progress: bool) -> np.ndarray:
    from tqdm import tqdm

    jobs = [(family, seed, a, min(a + BLOCK, n), nx, s) for a in range(0, n, BLOCK)]
    bar = tqdm(total=n, desc=f"{family} {nx} cells", unit="sample", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(jobs) <= 1:
            out = _stack(map(_block, jobs), n, bar)
        else:
            with worker_pool(min(workers, len(jobs)), one_blas_thread) as pool:
                out = _stack(pool.imap_unordered(_block, jobs), n, bar)
    finally:
        bar.close()
    return out


def _stack(results, n: int, bar) -> np.ndarray:
    """The solutions of every block, in sample order."""
    out: np.ndarray | None = None
    for start, u in results:
        if out is None:
            out = np.empty((n, *u.shape[1:]), dtype=np.float32)
        out[start:start + u.shape[0]] = u
        bar.update(u.shape[0])
    return out


def _check(out: Path, family: str, n_train: int, n_test: int, nx: int, s: dict,
           workers: int | None) -> None:
    if family not in FAMILIES:
        raise MonaError(f"unknown 1D task {family!r} (known: {', '.join(FAMILIES)})")
    check_sizes(out, n_train, n_test, nx, 4, " cells", workers, s)
    layout = FAMILIES[family].layout
    total = n_train + n_test
    if files_1d.n_test_of(layout, total) != n_test:
        where = "first" if layout == "tensor" else "last"
        want = files_1d.n_test_of(layout, total)
        raise MonaError(
            f"{family}: PDEBench's test set is the {where} 10% of the file, so --n-test must be "
            f"{want} for {total} samples (e.g. --n-train {9 * n_test} --n-test {n_test})")


def make_1d_dataset(family: str, out: Path | str, n_train: int = 900, n_test: int = 100,
                    resolution: int | None = None, seed: int = 0, workers: int | None = None,
                    progress: bool = False, **params) -> list[Path]:
    """Generate a PDEBench 1D dataset of ``n_train + n_test`` samples into ``out``.

    ``params``: ``beta`` (advection), ``nu`` (Burgers, diffusion-reaction), ``rho``
    (diffusion-reaction) and ``fin_time`` (any); None or absent: PDEBench's value. Returns the
    file written (named as PDEBench names it), written aside and renamed into place when whole.
    """
    out = Path(out)
    nx = DEFAULT_RESOLUTION if resolution is None else int(resolution)
    s = settings(family, **params) if family in DEFAULTS else {}
    _check(out, family, int(n_train), int(n_test), nx, s, workers)
    n = int(n_train) + int(n_test)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MonaError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    u = _solve_all(family, seed, n, nx, s, workers or os.cpu_count() or 1, progress)
    fam = FAMILIES[family]
    path = out / fam.filename(s)
    x = solvers_1d.cell_centres(nx)
    if fam.layout == "groups":
        n_t = u.shape[1]
        t = solvers_1d.diffusion_sorption_times(s["fin_time"], n_t)
        config = (f"sim:\n  t: {s['fin_time']:g}\n  tdim: {n_t}\n  xdim: {nx}\n  seed: {seed}\n"
                  f"generator: mona-tune\n")
        files_1d.write_groups(path, iter(u), x, t, config)
    else:
        t = solvers_1d.save_times(s["fin_time"], DT_SAVE)
        attrs = {a: s[p] for p, a in zip(fam.params, fam.attrs)}
        files_1d.write_tensor(path, u, x, t, attrs)
    return [path]
