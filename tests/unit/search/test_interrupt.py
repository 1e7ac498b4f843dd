"""The full-storage watch around ``Tuner.fit()`` (``search/interrupt.py``), without Ray running:
the first write that finds the storage full frees the reserve and asks Tune to stop (SIGUSR1);
other errors do neither. The whole path, on a tmpfs that fills, is tests/system/test_disk_full.py."""

from __future__ import annotations

import errno
import logging
import os
import signal
from types import SimpleNamespace

import pytest

from mona_tune.search import interrupt

ENOSPC_TEXT = "OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] " \
              "No space left on device"


@pytest.fixture
def usr1(monkeypatch):
    """SIGUSR1s received (Tune's graceful stop)."""
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    yield got
    signal.signal(signal.SIGUSR1, previous)


def _trial(tmp_path, text: str, trial_id: str = "t1"):
    path = tmp_path / f"error-{trial_id}.txt"
    path.write_text(f"Failure # 1 (occurred at 2026-12-03)\nTraceback ...\n{text}\n")
    return SimpleNamespace(trial_id=trial_id, error_file=str(path))


def test_a_trial_that_finds_the_storage_full_stops_the_search(tmp_path, usr1):
    watch = interrupt.StopWhenStorageFull()
    with interrupt.storage_watch(str(tmp_path / "exp")):
        reserve = tmp_path / "exp" / interrupt.RESERVE_FILE
        assert reserve.stat().st_size == interrupt.RESERVE_BYTES
        assert os.stat(reserve).st_blocks * 512 >= interrupt.RESERVE_BYTES  # not sparse
        watch.on_trial_recover(1, [], _trial(tmp_path, "RuntimeError: injected fault"))
        assert interrupt.storage_full() is None and not usr1 and reserve.exists()
        watch.on_trial_recover(1, [], _trial(tmp_path, ENOSPC_TEXT))
        assert not reserve.exists() and usr1 == [signal.SIGUSR1]
        watch.on_trial_error(1, [], _trial(tmp_path, ENOSPC_TEXT, "t2"))
        assert usr1 == [signal.SIGUSR1]  # stopped once
    what, line = interrupt.storage_full()
    assert what == "trial t1 could not save its checkpoint" and "No space left" in line


def test_a_snapshot_tune_could_not_upload_stops_the_search(tmp_path, usr1):
    log = logging.getLogger("ray.tune.execution.experiment_state")
    with interrupt.storage_watch(str(tmp_path / "exp")):
        try:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        except OSError:
            log.error("Saving experiment state to storage failed", exc_info=True)
        assert interrupt.storage_full() is None and not usr1
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            log.error("Saving experiment state to storage failed", exc_info=True)
        assert usr1 == [signal.SIGUSR1]
        assert not (tmp_path / "exp" / interrupt.RESERVE_FILE).exists()
    assert interrupt.storage_full()[0] == "Tune could not save the experiment state"
    # the next search starts with a clean watch and removes its reserve when it ends
    with interrupt.storage_watch(str(tmp_path / "exp")):
        assert interrupt.storage_full() is None
    assert not (tmp_path / "exp" / interrupt.RESERVE_FILE).exists()
