"""The planner's arithmetic: trials per device, the fractional-GPU check, spreading trials over
GPUs, ASHA's expected epochs and the projected device-hours."""

from __future__ import annotations

import pytest

from mona_tune.errors import MonaError
from mona_tune.search import capacity
from mona_tune.train.footprint import Footprint

GIB = 2**30


def footprint(reserved_gib: float, total_gib: float = 80.0, kind: str = "cuda", **kw) -> Footprint:
    base = dict(device="cuda:0", memory_kind=kind, peak_bytes=int(reserved_gib * GIB),
                reserved_bytes=int(reserved_gib * GIB), device_total_bytes=int(total_gib * GIB),
                stage1_step_s=0.3, stage2_step_s=0.1, eval_sample_s=0.01, steps_per_epoch=250,
                n_val=100, batch_size=4, source_batch_size=32)
    return Footprint(**{**base, **kw})


def test_trials_per_device_keeps_a_margin_and_the_cuda_context():
    # 80 GiB x 0.9 = 72 GiB; 17.4 + 0.6 = 18 GiB per trial -> 4
    assert capacity.trials_per_device(footprint(17.4)) == 4
    assert capacity.trials_per_device(footprint(17.5)) == 3
    # on the CPU the resident memory is the whole trial, no context added
    assert capacity.trials_per_device(footprint(9.0, total_gib=24, kind="rss")) == 2


def test_a_fraction_that_does_not_fit_is_one_line_with_advice():
    capacity.check_gpus_per_trial(footprint(17.4), 0.25)  # 18 GiB <= 0.25 x 72
    with pytest.raises(MonaError, match=r"^--gpus-per-trial 0.25: one trial needs 20.6 GiB .*"
                                        r"use --gpus-per-trial 0.3333 or more \(3 per GPU\)$"):
        capacity.check_gpus_per_trial(footprint(20.0), 0.25)
    with pytest.raises(MonaError, match="--grad-checkpointing, --precision bf16"):
        capacity.check_gpus_per_trial(footprint(75.0), 0.5)
    capacity.check_gpus_per_trial(footprint(75.0), 1.0)  # a whole GPU is the user's to judge
    capacity.check_gpus_per_trial(footprint(75.0, kind="rss"), 0.5)  # no GPU measured


@pytest.mark.parametrize("asked,concurrent,gpus,share", [
    (0.25, 4, 4, 1.0),     # one trial per GPU instead of four on the first
    (0.25, 8, 4, 0.5),     # two per GPU
    (0.25, 3, 2, 0.5),     # two per GPU: 3 at once still fit
    (0.5, 8, 2, 0.5),      # already spread as far as it can be
    (0.25, 4, 1, 0.25),    # one GPU: nothing to spread over
    (1.0, 4, 4, 1.0),      # whole GPUs are left alone
    (0.25, 3, 8, 1.0),     # more GPUs than trials: never more than one
])
def test_fractional_trials_spread_over_every_gpu(asked, concurrent, gpus, share):
    got = capacity.spread_gpus_per_trial(asked, concurrent, gpus)
    assert got == pytest.approx(share, abs=1e-4)
    assert got >= asked
    per_gpu = int(1 // got) if got < 1 else 1
    assert per_gpu * gpus >= min(concurrent, per_gpu * gpus)


def test_asha_expected_epochs():
    # rungs 10, 30, 90 below 100, η = 3: all run 10, a third 20 more, a ninth 60, 1/27 the rest
    assert capacity.asha_stage2_epochs(100, 10, 3) == pytest.approx(10 + 20 / 3 + 60 / 9 + 10 / 27)
    assert capacity.asha_stage2_epochs(6, 1, 2) == pytest.approx(1 + 1 / 2 + 2 / 4 + 2 / 8)
    assert capacity.asha_stage2_epochs(5, 5, 2) == 5  # grace period at max_t: no rung


def test_projected_hours_with_and_without_asha():
    fp = footprint(10.0)  # stage-1 epoch 250 x 0.3 + 100 x 0.01 = 76 s; stage-2 26 s
    fifo = capacity.projected_hours(fp, 2, 100, 32, 0.25, None)
    assert fifo["trial_hours"] == pytest.approx((2 * 76 + 100 * 26) / 3600)
    assert fifo["device_hours"] == pytest.approx(32 * 0.25 * fifo["trial_hours"])
    asha = capacity.projected_hours(fp, 2, 100, 32, 0.25, (10, 3))
    assert asha["stage2_epochs_per_trial"] == pytest.approx(capacity.asha_stage2_epochs(100, 10, 3))
    assert asha["device_hours"] < fifo["device_hours"] / 3
