"""The size of a generated file: the smallest one whose split holds what a run asks for."""

from __future__ import annotations

import pytest

from mona_tune.tasks.embedded import file_size_for


def tenth(n: int) -> int:  # a layout that keeps int(n / 10) samples for the test
    return n // 10


@pytest.mark.parametrize("n_train, n_test, total", [
    (None, None, 250),  # the default file
    (100, None, 250),   # the default's 25 test samples need 250 in all
    (300, None, 333),   # 333 // 10 = 33 test, 300 training; 332 holds only 299
    (10, 2, 20),        # 2 test samples first appear at 20
    (None, 40, 400),    # 400 // 10 = 40; the default's 225 training fit
    (500, 5, 555),      # 555 - 55 = 500 training; 554 holds 499
])
def test_file_size_for(n_train, n_test, total):
    assert file_size_for(n_train, n_test, 250, tenth) == total
