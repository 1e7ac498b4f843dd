"""Process pools (mona_tune/workers.py) whose workers start with the default signal dispositions,
whatever handler the parent has (the CLI turns SIGTERM into KeyboardInterrupt); a normal end joins
them, an error terminates them; the generator run in a loop and stopped by SIGTERM never hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from proc_net import alive, children

from mona_tune.cli import main
from mona_tune.workers import STOP_SIGNALS, one_blas_thread, worker_pool


def _dispositions(_=None) -> tuple[list[bool], list[int]]:
    """In a worker: which stop signals have the default disposition, and which are blocked."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return ([signal.getsignal(s) is signal.SIG_DFL for s in STOP_SIGNALS],
            sorted(int(s) for s in blocked))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@pytest.fixture
def cli_handler():
    """The parent as the CLI leaves it: SIGTERM raises KeyboardInterrupt."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_start_with_default_dispositions(cli_handler, method):
    with worker_pool(2, method=method) as pool:
        results = pool.map(_dispositions, range(4))
    assert all(r == ([True, True], []) for r in results), results
    # the parent keeps its own handler and an empty mask
    assert signal.getsignal(signal.SIGTERM) is _raise_interrupt
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_normal_end_joins_the_workers_and_an_error_terminates_them(cli_handler):
    with worker_pool(2) as pool:
        pool.map(abs, range(10))
        procs = list(pool._pool)
    assert [p.exitcode for p in procs] == [0, 0], "closed and joined, not terminated"
    with pytest.raises(ZeroDivisionError):
        with worker_pool(2) as pool:
            procs = list(pool._pool)
            pool.map(abs, range(10))
            1 / 0
    # terminated and joined (a worker may take the pool's stop sentinel before its SIGTERM)
    assert not any(p.is_alive() for p in procs)
    assert {p.exitcode for p in procs} <= {0, -signal.SIGTERM}, [p.exitcode for p in procs]


def _blas_threads(_=None) -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info()]


def test_the_blas_initializer_leaves_one_thread_per_worker():
    with worker_pool(2, one_blas_thread) as pool:
        seen = pool.map(_blas_threads, range(2))
    assert all(s and set(s) == {1} for s in seen), seen


@pytest.mark.timeout(240)
def test_data_make_in_a_loop_never_hangs(tmp_path, capsys):
    """The command of the reported hang, many times in this process (each run forks a pool)."""
    for i in range(60):
        out = tmp_path / str(i)
        rc = main(["data", "make", "darcy", "--format", "pdebench", "--n-train", "9",
                   "--n-test", "1", "--resolution", "32", "--beta", "10.0", "--seed", "5",
                   "--out", str(out), "--workers", "2"])
        assert rc == 0, capsys.readouterr().err
        assert len(list(out.iterdir())) == 1
    capsys.readouterr()


@pytest.mark.timeout(120)
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="finds the workers in /proc")
def test_sigterm_during_generation_stops_the_command_and_its_workers(tmp_path):
    out = tmp_path / "darcy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mona_tune.cli", "data", "make", "darcy", "--out", str(out),
         "--n-train", "2000", "--n-test", "200", "--resolution", "64", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(workers := children(proc.pid)) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "no workers started"
        time.sleep(0.05)
    time.sleep(0.5)  # the workers are generating
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "mona-tune: interrupted", err
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers):
        assert time.monotonic() < deadline, "workers outlived the command"
        time.sleep(0.05)
    assert not out.exists() or not list(out.iterdir()), "nothing half-written"
