"""Process pools whose workers start with the default signal dispositions.

``mona-tune``'s CLI turns SIGTERM into ``KeyboardInterrupt`` so that a command's cleanup runs. A
forked worker would inherit that handler: ``Pool.terminate()``'s SIGTERM would then be an
exception the worker can swallow while it waits for a queue lock the terminating parent holds, and
the parent's ``join`` would wait for ever. Here the parent blocks SIGTERM and SIGINT while the pool
forks (the pool's own threads, which fork replacement workers, are created then and inherit the
mask), and each worker restores the default dispositions before it unblocks them: a signal sent to a
worker at any moment, its first instant included, ends it.

A normal end closes the pool and joins its workers; only an error or an interrupt terminates it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import signal
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _start_worker(initializer: Callable[[], None] | None) -> None:
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if initializer is not None:
        initializer()


def one_blas_thread() -> None:
    """An initializer for workers that already use every core: nested BLAS threads would contend."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def start_method(prefer_fork: bool = True) -> str:
    """``fork`` where the platform has it and the caller wants it, else ``spawn``."""
    return "fork" if prefer_fork and "fork" in multiprocessing.get_all_start_methods() else "spawn"


@contextlib.contextmanager
def worker_pool(processes: int, initializer: Callable[[], None] | None = None,
                method: str | None = None) -> Iterator[multiprocessing.pool.Pool]:
    """A ``multiprocessing`` pool of ``processes`` workers with default signal dispositions,
    closed and joined when the block ends normally, terminated (then joined) when it raises."""
    ctx = multiprocessing.get_context(method or start_method())
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pool = ctx.Pool(processes, initializer=_start_worker, initargs=(initializer,))
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    try:
        # a signal that came while the pool forked is delivered here, and terminates the pool
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
