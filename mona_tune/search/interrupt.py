"""SIGINT and SIGTERM on a running search, and a full storage: the trials stop, Tune saves the
experiment's state and the command that continues the search is printed.

Ray Tune stops gracefully on SIGINT and SIGUSR1 inside ``Tuner.fit()`` (it saves a last snapshot
of the experiment); SIGTERM, what schedulers and ``kill`` send, would end the driver at once. Here
both SIGINT and SIGTERM are turned into Tune's SIGUSR1 stop, and the search ends with
:class:`SearchInterrupted`, which names the resume command. A second signal aborts at once.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
from contextlib import contextmanager
from pathlib import Path

from ray.tune import Callback

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped on a signal after saving its state; ``resume`` continues it."""

    def __init__(self, signum: int, resume: str):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.resume = signum, resume


def resume_command(name: str, storage: str, address: str | None) -> str:
    """The command line a user pastes to continue the search (the tracking store, the space and
    every setting are read back from the search's own folder)."""
    argv = ["mona-tune", "search", "--name", name, "--resume", "--storage", storage]
    if address:
        argv += ["--address", address]
    return shlex.join(argv)


def _placeholder(signum, frame) -> None:  # SIGUSR1 before Tune installs its own handler
    pass


@contextmanager
def graceful_stop(resume: str):
    """Around ``Tuner.fit()``: the first SIGINT/SIGTERM asks Tune to stop and save, and
    :class:`SearchInterrupted` is raised when ``fit`` returns."""
    got: list[int] = []
    previous = {s: signal.getsignal(s) for s in (*STOP_SIGNALS, signal.SIGUSR1)}

    def on_signal(signum, frame) -> None:
        if got:  # a second signal (Tune puts this handler back for SIGINT): abort
            raise KeyboardInterrupt
        got.append(signum)
        for s in STOP_SIGNALS:  # a second signal: what it did before (abort)
            signal.signal(s, previous[s] if previous[s] is not None else signal.SIG_DFL)
        if signal.getsignal(signal.SIGUSR1) is _placeholder:  # Tune has not started yet
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGUSR1)  # Tune's graceful stop

    before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT is handled here, like SIGTERM
    signal.signal(signal.SIGUSR1, _placeholder)
    for s in STOP_SIGNALS:
        signal.signal(s, on_signal)
    try:
        yield
    except KeyboardInterrupt:
        if got:
            raise SearchInterrupted(got[0], resume) from None
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before
    if got:
        raise SearchInterrupted(got[0], resume)


# ---------------------------------------------------------------- a full storage
FULL_STORAGE = ("No space left on device", "Disk quota exceeded")  # ENOSPC, EDQUOT
RESERVE_FILE = ".mona_reserve"
RESERVE_BYTES = 16 << 20
_full: list[tuple[str, str]] = []  # (what could not be written, the error's line)
_reserve: list[Path] = []  # the reserve file of the running search (local storage)


def _full_line(text: str) -> str | None:
    return next((ln.strip()[:300] for ln in reversed(text.splitlines())
                 if any(m in ln for m in FULL_STORAGE)), None)


def _on_full(what: str, line: str) -> None:
    """The first write that found the storage full: free the reserve, so that Tune's last
    snapshot fits, and stop the search the way a signal does (Tune's graceful stop)."""
    first = not _full
    _full.append((what, line))
    if not first:
        return
    for path in _reserve:
        path.unlink(missing_ok=True)
    logger.error("%s: the storage is full (%s); stopping the search", what, line)
    signal.raise_signal(signal.SIGUSR1)


class StopWhenStorageFull(Callback):
    """A trial that cannot write its checkpoint to a full storage fails; every other trial would
    fail the same way at its next checkpoint, and each retry too. The first such failure stops
    the search (:func:`_on_full`) and the driver names the storage and the resume command
    (:func:`storage_full`). The trial's error file is read from the driver's own staging folder,
    not from the full storage."""

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)

    def _check(self, trial) -> None:
        try:
            line = _full_line(Path(trial.error_file).read_text()) if trial.error_file else None
        except OSError:
            return
        if line:
            _on_full(f"trial {trial.trial_id} could not save its checkpoint", line)


class _SnapshotFailures(logging.Handler):
    """Tune logs (and otherwise ignores) an experiment snapshot it could not upload; on a full
    storage that upload has already cut the previous snapshot short."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            line = _full_line(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
            if line:
                _on_full("Tune could not save the experiment state", line)


@contextmanager
def storage_watch(experiment_path: str | None):
    """Around ``Tuner.fit()``: keep ``RESERVE_BYTES`` in a file in the experiment's folder (local
    storage), freed when a write finds the storage full, so that Tune's last snapshot is written
    whole; watch Tune's snapshot uploads. An object store has no reserve to keep (and a full
    quota there is not watched for)."""
    _full.clear()
    _reserve.clear()
    if experiment_path:
        path = Path(experiment_path, RESERVE_FILE)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(0)
                f.write(bytes(RESERVE_BYTES))  # written, not sparse: the space is taken
            _reserve.append(path)
        except OSError as e:
            path.unlink(missing_ok=True)
            logger.warning("could not keep %d MiB in reserve in %s (%s): a storage that fills "
                           "up may cut Tune's last snapshot short", RESERVE_BYTES >> 20,
                           experiment_path, e)
    handler = _SnapshotFailures(logging.ERROR)
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(handler)
    try:
        yield
    finally:
        ray_logger.removeHandler(handler)
        for path in _reserve:
            path.unlink(missing_ok=True)


def storage_full() -> tuple[str, str] | None:
    """(what could not be written, the error's line) of the first write in this search that
    found the storage full."""
    return _full[0] if _full else None
