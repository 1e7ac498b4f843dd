"""The node cache of FNO arrays: the second read maps the cached .npy without opening the source,
a changed file is read again, and racing processes leave one whole file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import darcy_arrays, write_mat_v5, write_mat_v73

import mona_tune
from mona_tune.config import TrainConfig
from mona_tune.tasks import fno_cache, get_task, readers

WRITERS = {"v5": write_mat_v5, "v73": write_mat_v73}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test alone, so that its entries can be counted."""
    monkeypatch.setenv("MONA_TUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / fno_cache.KIND


def _garble_keeping_stat(path: Path) -> None:
    """Overwrite the file with bytes no reader accepts, keeping its size and mtime: the cache key
    stays the same, and any read of the source would now fail."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(b"\xff" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_second_read_maps_the_cache_without_opening_the_source(tmp_path, cache, version):
    a, u = darcy_arrays(6, 29, seed=7)
    path = WRITERS[version](tmp_path / "piececonst_r29_N6_smooth1.mat", {"coeff": a, "sol": u})
    head = fno_cache.fno_header(path)
    assert (head.version, head.n, head.resolution) == (f"fno-{version}", 6, 29)
    coeff, sol = fno_cache.read_fno(path, 4, 2, start=1)
    np.testing.assert_allclose(sol, u[1:5, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(coeff, a[1:5, ::2, ::2], rtol=1e-6)
    assert len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.json"))) == 1

    _garble_keeping_stat(path)
    with pytest.raises(readers.MonaError):
        readers.fno_header(path)  # the source itself can no longer be read
    assert fno_cache.fno_header(path) == head
    coeff2, sol2 = fno_cache.read_fno(path, 4, 2, start=1)
    assert isinstance(sol2.base, np.memmap) and not sol2.flags.writeable  # mapped, read-only
    np.testing.assert_array_equal(sol2, sol)
    np.testing.assert_array_equal(coeff2, coeff)
    assert len(list(cache.glob("*.npy"))) == 1


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_a_later_trial_loads_the_task_without_the_sources(tmp_path, cache, version):
    a, u = darcy_arrays(14, 29, seed=8)
    files = [WRITERS[version](tmp_path / "piececonst_r29_N8_smooth1.mat",
                              {"coeff": a[:8], "sol": u[:8]}),
             WRITERS[version](tmp_path / "piececonst_r29_N6_smooth2.mat",
                              {"coeff": a[8:], "sol": u[8:]})]
    cfg = TrainConfig(task="darcy", data_dir=str(tmp_path), n_train=8, n_test=4, resolution=15,
                      val_fraction=0.25)
    first = get_task("darcy").load(cfg)
    for path in files:
        _garble_keeping_stat(path)
    again = get_task("darcy").load(cfg)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        torch.testing.assert_close(getattr(again, name), getattr(first, name), rtol=0, atol=0)
    np.testing.assert_allclose(again.y_val[:, 0], u[12:14, ::2, ::2], rtol=1e-6)  # smooth2 4-5
    assert again.info == first.info
    again.y_train.add_(1.0)  # the tensors own their memory: the mapped entry is read-only


def test_the_entry_is_invalidated_when_the_file_changes(tmp_path, cache):
    a, u = darcy_arrays(6, 17, seed=1)
    path = write_mat_v5(tmp_path / "f.mat", {"coeff": a, "sol": u})
    np.testing.assert_allclose(fno_cache.read_fno(path, 3, 1)[1], u[:3], rtol=1e-6)
    # same size, new values: the timestamp tells (set one second on, as the filesystem's clock
    # may be coarser than two writes in a row)
    a2, u2 = darcy_arrays(6, 17, seed=2)
    mtime = path.stat().st_mtime_ns
    write_mat_v5(path, {"coeff": a2, "sol": u2})
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    np.testing.assert_allclose(fno_cache.read_fno(path, 3, 1)[1], u2[:3], rtol=1e-6)
    # another size: more samples, read without touching the timestamp
    a3, u3 = darcy_arrays(7, 17, seed=3)
    write_mat_v5(path, {"coeff": a3, "sol": u3})
    assert fno_cache.fno_header(path).n == 7
    np.testing.assert_allclose(fno_cache.read_fno(path, 3, 1)[1], u3[:3], rtol=1e-6)
    assert len(list(cache.glob("*.npy"))) == 3


def test_a_damaged_entry_is_read_again(tmp_path, cache):
    a, u = darcy_arrays(4, 17, seed=4)
    path = write_mat_v73(tmp_path / "f.mat", {"coeff": a, "sol": u})
    fno_cache.fno_header(path)
    fno_cache.read_fno(path, 2, 4)
    entry = next(cache.glob("*.npy"))
    entry.write_bytes(entry.read_bytes()[:100])  # as a disk that failed would leave it
    np.testing.assert_allclose(fno_cache.read_fno(path, 2, 4)[1], u[:2, ::4, ::4], rtol=1e-6)
    next(cache.glob("*.json")).write_text("{")
    assert fno_cache.fno_header(path).n == 4
    assert json.loads(next(cache.glob("*.json")).read_text())["n"] == 4  # written again


def test_v73_reads_only_the_samples_and_nodes_asked_for(tmp_path, cache, h5py_reads):
    a, u = darcy_arrays(20, 29, seed=6)
    path = write_mat_v73(tmp_path / "f.mat", {"coeff": a, "sol": u})
    coeff, sol = fno_cache.read_fno(path, 3, 4, start=2)
    np.testing.assert_allclose(sol, u[2:5, ::4, ::4], rtol=1e-6)
    assert sum(h5py_reads) == 2 * 3 * 8 * 8  # 2 fields, 3 samples of 8 x 8 nodes; not 2 x 20 x 29²


RACER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mona_tune.tasks import fno_cache, readers

    path, me, other, locked = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    reads, original = [], readers.read_fno

    def slow_read(*args, **kw):
        reads.append(1)
        time.sleep(0.5)  # both processes are inside the fill at once
        return original(*args, **kw)

    readers.read_fno = slow_read
    if locked == "0":  # atomic renames alone
        import contextlib
        fno_cache.file_lock = lambda _path: contextlib.nullcontext()
    me.touch()
    while not other.exists():  # start together
        time.sleep(0.005)
    coeff, sol = fno_cache.read_fno(path, 5, 2)
    print(json.dumps({"reads": len(reads), "sol": sol.tolist()}))
""")


@pytest.mark.parametrize("locked", [True, False], ids=["lock", "rename-only"])
def test_two_processes_racing_leave_one_whole_file(tmp_path, cache, locked):
    a, u = darcy_arrays(6, 29, seed=9)
    path = write_mat_v5(tmp_path / "f.mat", {"coeff": a, "sol": u})
    env = {**os.environ, "PYTHONPATH": str(Path(mona_tune.__file__).parents[1])}
    flags = [tmp_path / "ready-0", tmp_path / "ready-1"]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(path), str(flags[i]),
                               str(flags[1 - i]), "1" if locked else "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in (0, 1)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    for r in results:
        np.testing.assert_allclose(r["sol"], u[:5, ::2, ::2], rtol=1e-6)
    # with the lock one process reads the source and the other maps its file; without it both
    # read, and the later rename replaces the earlier whole file with another whole one
    assert sorted(r["reads"] for r in results) == ([0, 1] if locked else [1, 1])
    entries = list(cache.glob("*.npy"))
    assert len(entries) == 1 and not list(cache.glob("*.part"))
    np.testing.assert_allclose(np.load(entries[0])[1], u[:5, ::2, ::2], rtol=1e-6)
