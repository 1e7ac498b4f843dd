"""Generated data in the user cache: the embedded default of every task (no ``data_dir``).

A task's generator writes the same files as the real dataset into a cache folder named after the
generator's parameters, and the task reads them back through its real-file code path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mona_tune.cache import cache_dir, config_key, file_lock


def embedded_dir(params: dict, expected: list[str], make: Callable[[Path], object],
                 version: int) -> Path:
    """The cache directory of generated data ``params``; ``make(out)`` fills it unless complete.

    ``params`` name the data (the task and every generator setting) and ``version`` the
    generator's revision, so that changed data never reuse an old entry. Every file is written
    aside and renamed into place, so a file present is a whole file; an interrupted generation
    leaves some files missing and is redone.
    """
    key = config_key({**params, "version": version})
    with file_lock(cache_dir("data") / f"{key}.lock"):  # concurrent trials generate it once
        out = cache_dir("data", key)
        if not all((out / name).is_file() for name in expected):
            make(out)
        return out


def file_size_for(n_train: int | None, n_test: int | None, default_total: int,
                  n_test_of: Callable[[int], int]) -> int:
    """Samples of the smallest generated file whose split (``n_test_of(total)`` test samples, the
    rest training) holds ≥ ``n_train`` training and ≥ ``n_test`` test samples; the default size
    when neither is asked for, and the default split's share for the one not asked for."""
    if n_train is None and n_test is None:
        return default_total
    want_train = n_train or default_total - n_test_of(default_total)
    want_test = n_test or n_test_of(default_total)
    total = want_train + want_test
    while n_test_of(total) < want_test or total - n_test_of(total) < want_train:
        total += 1
    return total

