"""How many trials a device holds and what a search will cost, from one trial's measured
footprint (:mod:`mona_tune.train.footprint`): the arithmetic behind ``mona-tune plan`` and the
check ``search`` makes of a fractional ``--gpus-per-trial`` on a GPU machine.

Ray's fractional GPUs share a device's memory without isolating it (packed trials that exceed the
GPU fail with out-of-memory), and Ray fills one GPU with fractional trials before it uses the
next: :func:`spread_gpus_per_trial` asks each trial for enough of a GPU that the trials running
at once are spread over all of them.
"""

from __future__ import annotations

import math

from mona_tune.errors import MonaError
from mona_tune.train.footprint import Footprint

GIB = 2**30
# each trial process's CUDA context, kernels and cuDNN/cuBLAS workspaces beyond its tensors
CUDA_CONTEXT_BYTES = int(0.6 * GIB)
MARGIN = 0.10  # of a device's memory kept free (fragmentation, a longer batch, the driver)


def bytes_per_trial(fp: Footprint) -> int:
    """What one trial process holds on its device: the allocator's reserve (and the CUDA
    context) on a GPU, the resident memory on the CPU."""
    if fp.memory_kind == "cuda":
        return fp.reserved_bytes + CUDA_CONTEXT_BYTES
    return fp.peak_bytes


def trials_per_device(fp: Footprint, margin: float = MARGIN) -> int:
    """Trials that fit in one device's memory with ``margin`` of it kept free."""
    return int(fp.device_total_bytes * (1 - margin) // bytes_per_trial(fp))


def fraction_fits(fp: Footprint, gpus_per_trial: float, margin: float = MARGIN) -> bool:
    return gpus_per_trial * fp.device_total_bytes * (1 - margin) >= bytes_per_trial(fp)


def check_gpus_per_trial(fp: Footprint, gpus_per_trial: float) -> None:
    """One line when trials at ``gpus_per_trial`` of a GPU would not fit its memory."""
    if fp.memory_kind != "cuda" or not 0 < gpus_per_trial < 1 or fraction_fits(fp, gpus_per_trial):
        return
    need, total = bytes_per_trial(fp) / GIB, fp.device_total_bytes / GIB
    fit = trials_per_device(fp)
    advice = (f"--gpus-per-trial {1 / fit:.4g} or more ({fit} per GPU)" if fit >= 1 else
              "--grad-checkpointing, --precision bf16 or a smaller batch")
    raise MonaError(f"--gpus-per-trial {gpus_per_trial:g}: one trial needs {need:.1f} GiB "
                    f"(measured peak with its CUDA context), {gpus_per_trial:g} of the "
                    f"{total:.0f} GiB GPU with {MARGIN:.0%} kept free is "
                    f"{gpus_per_trial * total * (1 - MARGIN):.1f} GiB; use {advice}")


def spread_gpus_per_trial(gpus_per_trial: float, max_concurrent: int, gpus: float) -> float:
    """The GPU share to ask Ray for so that ``max_concurrent`` fractional trials spread over
    ``gpus`` GPUs: at least 1/k, k = ⌈max_concurrent / gpus⌉ trials per GPU, never less than
    asked and never more than one GPU. Whole GPUs, no GPUs and one GPU are left as they are."""
    if not 0 < gpus_per_trial < 1 or gpus < 2:
        return gpus_per_trial
    per_gpu = math.ceil(max_concurrent / int(gpus))
    share = math.floor(10_000 / per_gpu) / 10_000  # Ray keeps 4 decimals: k shares must fit
    return min(1.0, max(gpus_per_trial, share))


def asha_stage2_epochs(max_t: int, grace: int, eta: float) -> float:
    """Expected stage-2 epochs of one trial under ASHA when each rung promotes 1/η of the trials
    reaching it: rungs at grace·η^k below ``max_t``; a trial runs to the first rung, and on past
    rung k with probability η^-(k+1)."""
    rungs = []
    r = float(grace)
    while r < max_t:
        rungs.append(r)
        r *= eta
    if not rungs:
        return float(max_t)
    expected, bounds = rungs[0], [*rungs[1:], float(max_t)]
    for k, (start, end) in enumerate(zip(rungs, bounds)):
        expected += (end - start) * eta ** -(k + 1)
    return expected


def projected_hours(fp: Footprint, stage1_epochs: int, epochs: int, num_samples: int,
                    device_share: float, asha: tuple[int, float] | None) -> dict:
    """Device-hours of ``num_samples`` trials: each trial's epochs at the measured step and
    evaluation times, times the share of a device it holds (``device_share``: its GPU fraction,
    or its CPUs over the machine's). ``asha``: (grace period, reduction factor), or None (FIFO:
    every trial runs all its epochs). Stage 1 is never stopped early (ASHA's rungs count stage-2
    epochs)."""
    stage1 = stage1_epochs * fp.epoch_seconds(1)
    stage2_epochs = (asha_stage2_epochs(epochs, *asha) if asha else float(epochs))
    per_trial = stage1 + stage2_epochs * fp.epoch_seconds(2)
    return {"trial_hours": per_trial / 3600, "stage2_epochs_per_trial": stage2_epochs,
            "device_hours": num_samples * per_trial * device_share / 3600}
