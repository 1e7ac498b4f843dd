"""The CPU memory guard of ``mona-tune plan``: a trial larger than the memory the machine has
available fails with one line naming it, instead of being killed by the kernel."""

from __future__ import annotations

import resource

import pytest
import torch

from mona_tune.errors import MonaError
from mona_tune.train.footprint import cpu_memory_guard


def test_an_allocation_beyond_the_available_memory_is_one_line():
    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(MonaError, match=r"does not fit in the 0.2 GiB this machine has available"):
        with cpu_memory_guard("cpu", available=256 * 2**20):
            torch.empty(2**30, dtype=torch.uint8).fill_(1)
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the limit is put back
    with cpu_memory_guard("cpu", available=256 * 2**20):
        torch.empty(2**20, dtype=torch.uint8).fill_(1)  # what fits runs


def test_other_errors_pass_through_and_gpus_are_not_capped():
    with pytest.raises(ValueError, match="not memory"):
        with cpu_memory_guard("cpu", available=2**30):
            raise ValueError("not memory")
    before = resource.getrlimit(resource.RLIMIT_AS)
    with cpu_memory_guard("cuda:0", available=1):
        assert resource.getrlimit(resource.RLIMIT_AS) == before
