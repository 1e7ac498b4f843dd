"""Shared fixtures: a private cache, a local Ray (the cluster tests), and small Darcy files in the
real formats.

The file writers use plain scipy/h5py, independently of ``mona_tune.tasks.generate``, so that the
loaders are checked against the formats themselves and not against our own writer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SHARED_CACHE = "MONA_TUNE_TEST_SHARED_CACHE"
MATLAB_73_HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
                    b"HDF5 schema 1.00 .")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread avoids OpenMP overhead and oversubscribing shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fast_epochs() -> dict:
    """The embedded source model's epochs per source data set in the tests (:func:`fast_source`)."""
    return {"fractals": 2, "digits": 2, "cifar10": 1}


@pytest.fixture(scope="module")
def fast_source(one_thread, fast_epochs):
    """A 2-epoch embedded source model (its own cache key), for tests of the trainer around it."""
    from mona_tune.models import source as source_mod
    from mona_tune.train import loaded

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(source_mod.EMBEDDED_RECIPE, "epochs", dict(fast_epochs))
        loaded.clear()
        yield
        loaded.clear()


@pytest.fixture(scope="session", autouse=True)
def mona_cache(tmp_path_factory) -> Path:
    """Point ``$MONA_TUNE_CACHE`` at a session directory: tests never touch the user's cache.

    ``$MONA_TUNE_TEST_SHARED_CACHE`` (set by ``make mutation``, where every mutant is a new pytest
    session) keeps the trained source models and the empty MLflow store (:func:`empty_mlflow_store`)
    in one folder across sessions; neither is made by a mutated module. Generated data stays per
    session.
    """
    path = tmp_path_factory.mktemp("mona-cache")
    shared = os.environ.get(SHARED_CACHE)
    if shared:
        (Path(shared) / "source").mkdir(parents=True, exist_ok=True)
        (path / "source").symlink_to((Path(shared) / "source").resolve(), target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MONA_TUNE_CACHE", str(path))
        yield path


@dataclass(frozen=True)
class LocalRay:
    gcs: str  # host:port of its GCS
    node_id: str
    ip: str  # the node's address
    token: str  # its authentication token (token authentication is on)


_RAY: dict = {}  # the local Ray while it runs: "info" (LocalRay), "undo", "temp"


@pytest.fixture
def local_ray(mona_cache, fast_epochs) -> LocalRay:
    """A new one-node Ray in this process (never a cluster already running on this machine:
    ``address="local"``, its own temporary folder): 2 CPUs and 1 GPU declared (so that GPU
    requests are scheduled; no GPU is used), token authentication with a token of its own. Its
    workers see this session's cache and train the embedded source model with the tests' epochs
    (:func:`fast_source`). Started by the first test that asks for it and shut down when the tests
    leave its folder (:func:`pytest_runtest_teardown`), environment restored."""
    if "info" not in _RAY:
        _start_local_ray(fast_epochs)
    return _RAY["info"]


def _start_local_ray(fast_epochs: dict) -> None:
    import ray

    from mona_tune import ray_compat

    def fast_recipe():  # runs in each worker process (pickled by value)
        from mona_tune.models import source

        source.EMBEDDED_RECIPE["epochs"] = dict(fast_epochs)

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # socket paths must stay short
    token = secrets.token_hex(32)
    mp = pytest.MonkeyPatch()
    mp.delenv("RAY_ADDRESS", raising=False)
    mp.setenv("RAY_AUTH_MODE", "token")
    mp.setenv("RAY_AUTH_TOKEN", token)
    _RAY.update(undo=mp, temp=temp)
    ray_compat.reload_token_auth()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
             logging_level="WARNING", _temp_dir=temp,
             runtime_env={"worker_process_setup_hook": fast_recipe})
    ctx = ray.get_runtime_context()
    _RAY["info"] = LocalRay(ctx.gcs_address, ctx.get_node_id(), ray.util.get_node_ip_address(),
                            token)


def _stop_local_ray() -> None:
    import ray

    from mona_tune import ray_compat

    ray.shutdown()
    shutil.rmtree(_RAY["temp"], ignore_errors=True)
    _RAY.pop("undo").undo()
    _RAY.clear()
    ray_compat.reload_token_auth()


def pytest_runtest_teardown(item, nextitem):
    """Shut the local Ray down when the tests leave the folder of one that used it (unless the
    next one uses it too): the tests after them expect no Ray in this process."""
    if "temp" in _RAY and (nextitem is None or (nextitem.path.parent != item.path.parent
                                                and "local_ray" not in nextitem.fixturenames)):
        _stop_local_ray()


def empty_mlflow_store(path: Path) -> str:
    """The URI of a new, empty SQLite MLflow store at ``path``: a copy of one that MLflow made
    once per session (or once in ``$MONA_TUNE_TEST_SHARED_CACHE``). Creating the tables takes
    seconds; a copy takes a tenth of one."""
    import mlflow
    from mlflow import MlflowClient

    folder = Path(os.environ.get(SHARED_CACHE) or os.environ["MONA_TUNE_CACHE"])
    template = folder / f"mlflow-{mlflow.__version__}-empty.db"
    if not template.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{template.name}.{os.getpid()}"
        MlflowClient(f"sqlite:///{part}").search_experiments()
        assert not Path(f"{part}-wal").exists(), "the store's journal would be left behind"
        os.replace(part, template)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def cosine_basis(s: int) -> np.ndarray:
    """Orthonormal Neumann cosine basis on s cell-centred points: row k is c_k cos(πk(i + ½)/s)
    (the DCT-II basis of the generator's random fields)."""
    i = np.arange(s) + 0.5
    basis = np.cos(np.pi * np.arange(s)[:, None] * i[None, :] / s)
    basis[0] *= np.sqrt(1.0 / s)
    basis[1:] *= np.sqrt(2.0 / s)
    return basis


def darcy_arrays(n: int, r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plausible (coeff, sol) of shape (n, r, r): two-valued a, u vanishing on the boundary.

    Not solutions of the PDE; asymmetric in the two grid axes so that a transposed read shows.
    """
    rng = np.random.default_rng(seed)
    a = np.where(rng.standard_normal((n, r, r)) >= 0, 12.0, 3.0)
    x = np.linspace(0.0, 1.0, r)
    bump = np.sin(np.pi * x)[:, None] * np.sin(np.pi * x)[None, :] * (1 + x[:, None])
    u = bump[None] * (0.01 + 0.001 * rng.random((n, 1, 1))) + 1e-4 * x[None, :, None] * x[None]
    u[:, 0, :] = u[:, -1, :] = u[:, :, 0] = u[:, :, -1] = 0.0
    return a, u


def write_mat_v5(path: Path, fields: dict[str, np.ndarray]) -> Path:
    import scipy.io

    scipy.io.savemat(str(path), fields, format="5")
    return path


def write_mat_v73(path: Path, fields: dict[str, np.ndarray]) -> Path:
    """An HDF5 .mat as MATLAB -v7.3 writes it: 512-byte userblock header, axes reversed."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in fields.items():
            ds = f.create_dataset(name, data=np.ascontiguousarray(np.asarray(arr).T))
            ds.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(MATLAB_73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")
    return path


def write_pdebench(path: Path, nu: np.ndarray, u: np.ndarray, beta: float = 0.1,
                   skip: tuple[str, ...] = ()) -> Path:
    """PDEBench 2D Darcy layout: nu (N,R,R), tensor (N,1,R,R), cell-centre coordinates, beta."""
    import h5py

    r = nu.shape[-1]
    xc = ((np.arange(r) + 0.5) / r).astype(np.float32)
    data = {"nu": nu.astype(np.float32), "tensor": u.astype(np.float32)[:, None],
            "x-coordinate": xc, "y-coordinate": xc}
    with h5py.File(path, "w") as f:
        for name, arr in data.items():
            if name not in skip:
                f.create_dataset(name, data=arr)
        f.attrs["beta"] = np.float32(beta)
    return path


@pytest.fixture
def fno_dir(tmp_path) -> Path:
    """A directory with a v5 smooth1 (8 samples) and smooth2 (4 samples) pair at 85×85."""
    d = tmp_path / "fno"
    d.mkdir()
    a, u = darcy_arrays(12, 85)
    write_mat_v5(d / "piececonst_r85_N8_smooth1.mat", {"coeff": a[:8], "sol": u[:8]})
    write_mat_v5(d / "piececonst_r85_N4_smooth2.mat", {"coeff": a[8:], "sol": u[8:]})
    return d


@pytest.fixture
def pdebench_path(tmp_path) -> Path:
    """A PDEBench-layout file of 20 samples at 32×32, β = 0.1 (first 2 = test)."""
    d = tmp_path / "pdebench"
    d.mkdir()
    a, u = darcy_arrays(20, 32, seed=1)
    return write_pdebench(d / "2D_DarcyFlow_beta0.1_Train.hdf5", np.where(a > 5, 1.0, 0.1), u)


@pytest.fixture
def h5py_reads(monkeypatch) -> list[int]:
    """The number of values each h5py dataset read returns, in order: what a reader took of a
    file."""
    import h5py

    reads: list[int] = []
    original = h5py.Dataset.__getitem__

    def counting(self, key):
        out = original(self, key)
        reads.append(np.asarray(out).size)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    return reads
