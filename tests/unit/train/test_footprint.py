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


def test_plan_config_keeps_a_gpu_config_and_a_given_thread_count():
    from mona_tune.config import TrainConfig
    from mona_tune.train.footprint import plan_config

    cfg = TrainConfig(device="cpu", num_threads=3, precision="fp32")
    assert plan_config(cfg, cpus_per_trial=2) == (cfg, [])
    cfg2, notes = plan_config(TrainConfig(device="cpu", precision="fp32"), cpus_per_trial=2.4)
    assert cfg2.num_threads == 2 and notes == []


def test_cpu_lacks_reads_the_cpu_flags(tmp_path):
    from mona_tune.train.trainer import cpu_lacks

    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert cpu_lacks("bf16", info) and cpu_lacks("fp16", info) and not cpu_lacks("fp32", info)
    info.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_fp16\n")
    assert not cpu_lacks("bf16", info) and not cpu_lacks("fp16", info)
    assert not cpu_lacks("bf16", tmp_path / "missing")  # flags unknown: as asked
