"""What one trial costs, measured: a trial's model built on the device it would run on, a few
stage-1 and stage-2 steps at the configured batch sizes, their median times, an evaluation batch,
and the peak memory they reached.

Peak memory is CUDA's ``max_memory_allocated`` (plus what the caching allocator reserved) on a GPU,
and the process's resident high-water mark on the CPU (``ru_maxrss``: everything a trial process
holds, the data and the loaded source model included). ``mona-tune plan`` prints it; ``search``
checks a fractional ``--gpus-per-trial`` against it before trials start.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError


@dataclass(frozen=True)
class Footprint:
    device: str  # "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"
    memory_kind: str  # "cuda" (allocated by tensors) or "rss" (the process's resident memory)
    peak_bytes: int
    reserved_bytes: int  # CUDA: held by the caching allocator at the peak; CPU: = peak_bytes
    device_total_bytes: int  # the GPU's memory, or the machine's
    stage1_step_s: float | None  # None where the method has no stage 1
    stage2_step_s: float
    eval_sample_s: float  # one validation sample's forward pass (batched)
    steps_per_epoch: int
    n_val: int
    batch_size: int
    source_batch_size: int
    precision: str = "fp32"  # the precision measured

    def epoch_seconds(self, stage: int) -> float:
        step = self.stage1_step_s if stage == 1 else self.stage2_step_s
        return self.steps_per_epoch * (step or 0.0) + self.n_val * self.eval_sample_s

    def as_dict(self) -> dict:
        return asdict(self)


def saved_activation_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``fn`` runs (a step's
    activations: its memory above the model and optimiser states, on any device)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def median_seconds(fn, steps: int, sync=lambda: None) -> float:
    """Median wall time of ``fn`` over ``steps`` calls after one warm-up call."""
    times = []
    for i in range(steps + 1):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def _machine_memory() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@contextlib.contextmanager
def cpu_memory_guard(device: str, available: int | None = None):
    """On the CPU, cap the process's address space at what it maps now plus the memory the
    machine has available, so that a trial too large for the machine fails with an allocation
    error (named in one line) instead of being killed by the kernel's out-of-memory killer."""
    if device.startswith("cuda") or not Path("/proc/meminfo").is_file():
        yield
        return
    status = Path("/proc/self/status").read_text()
    mapped = int(status.split("VmSize:")[1].split()[0]) * 1024
    if available is None:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(meminfo.split("MemAvailable:")[1].split()[0]) * 1024
    before = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + available
    if before[1] != resource.RLIM_INFINITY:
        cap = min(cap, before[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, before[1]))
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if "alloc" not in str(e).lower() and not isinstance(e, MemoryError):
            raise
        raise MonaError(f"one trial of this configuration does not fit in the "
                        f"{available / 2**30:.1f} GiB this machine has available "
                        f"({str(e).splitlines()[0][:120]}); try --set grad_checkpointing=true, "
                        "a smaller batch or source_batch_size") from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)


def plan_config(cfg: TrainConfig, cpus_per_trial: float) -> tuple[TrainConfig, list[str]]:
    """``cfg`` as ``plan`` measures it here, and notes on what differs from ``cfg``: on the CPU
    with the torch threads a trial gets (its CPUs), and a precision this CPU has no instructions
    for measured as fp32 (emulated there, it would take many times longer than on the GPU the
    space is meant for)."""
    from mona_tune.models.source import trial_threads
    from mona_tune.train.trainer import cpu_lacks, resolve_device

    if resolve_device(cfg.device).type != "cpu":
        return cfg, []
    change, notes = {}, []
    if cfg.num_threads is None:
        change["num_threads"] = trial_threads(cpus_per_trial)
    if cpu_lacks(cfg.precision):
        change["precision"] = "fp32"
        notes.append(f"precision {cfg.precision} measured as fp32: this CPU has no "
                     f"{cfg.precision} instructions (a GPU trial runs {cfg.precision})")
    return cfg.model_copy(update=change), notes


def measure(cfg: TrainConfig, steps: int = 2) -> Footprint:
    """Build ``cfg``'s trial (data, source model, target model, optimisers) and time ``steps``
    stage-1 and stage-2 steps after a warm-up step each, at ``cfg.batch_size`` target and
    ``cfg.source_batch_size`` source samples."""
    from mona_tune.train.trainer import resolve_device

    with cpu_memory_guard(str(resolve_device(cfg.device))):
        return _measure(cfg, steps)


def _measure(cfg: TrainConfig, steps: int) -> Footprint:
    from mona_tune.train.trainer import Trainer

    t = Trainer(cfg)
    cuda = t.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(t.device)
    b = cfg.batch_size
    x, y = t.x_train[:b], t.y_train[:b]
    stage1 = None
    if cfg.stage1_epochs > 0:
        stage1 = median_seconds(lambda: t.stage1_step(x, y), steps, sync)
    stage2 = median_seconds(lambda: t.stage2_step(x, y), steps, sync)
    xv = t.x_val[:b]
    evaluate = median_seconds(lambda: t.evaluate(xv, t.y_val[:b]), steps, sync) / len(xv)
    if cuda:
        peak = torch.cuda.max_memory_allocated(t.device)
        reserved = torch.cuda.max_memory_reserved(t.device)
        total = torch.cuda.get_device_properties(t.device).total_memory
        name = f"{t.device} ({torch.cuda.get_device_name(t.device)})"
    else:
        peak = reserved = _rss_peak_bytes()
        total, name = _machine_memory(), "cpu"
    return Footprint(device=name, memory_kind="cuda" if cuda else "rss", peak_bytes=int(peak),
                     reserved_bytes=int(reserved), device_total_bytes=int(total),
                     stage1_step_s=stage1, stage2_step_s=stage2, eval_sample_s=evaluate,
                     steps_per_epoch=t.steps_per_epoch, n_val=len(t.x_val), batch_size=b,
                     source_batch_size=cfg.source_batch_size, precision=cfg.precision)
