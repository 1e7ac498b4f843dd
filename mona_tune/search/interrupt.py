"""SIGINT and SIGTERM on a running search: the trials stop, Tune saves the experiment's state and
the command that continues the search is printed.

Ray Tune stops gracefully on SIGINT and SIGUSR1 inside ``Tuner.fit()`` (it saves a last snapshot
of the experiment); SIGTERM, what schedulers and ``kill`` send, would end the driver at once. Here
both SIGINT and SIGTERM are turned into Tune's SIGUSR1 stop, and the search ends with
:class:`SearchInterrupted`, which names the resume command. A second signal aborts at once.
"""

from __future__ import annotations

import os
import shlex
import signal
from contextlib import contextmanager

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
