"""``mona-tune plan`` on the embedded space: one trial measured on the CPU, its figures in one
JSON line (or a table), and the bad flags it refuses."""

from __future__ import annotations

import json

import pytest

from mona_tune.cli import main

pytestmark = pytest.mark.usefixtures("fast_source")
SMALL = ["--set", "n_train=24", "--set", "n_test=8", "--set", "num_threads=1"]


def test_plan_measures_one_trial_of_the_space(capsys):
    assert main(["plan", "--task", "darcy", "--steps", "1", "--json", *SMALL]) == 0
    p = json.loads(capsys.readouterr().out.strip())
    assert p["device"] == "cpu" and p["memory_kind"] == "rss"
    assert p["peak_bytes"] > 100 * 2**20  # a trial process holds torch, data and models
    assert p["stage1_step_s"] > 0 and p["stage2_step_s"] > 0 and p["eval_sample_s"] > 0
    # the darcy space: batch 16, 24 - 2 validation samples -> 2 steps per epoch; its ASHA
    assert p["batch_size"] == 16 and p["steps_per_epoch"] == 2 and p["n_val"] == 2
    assert p["trials_per_device"] >= 1
    assert p["asha"]["stage2_epochs_per_trial"] < p["fifo"]["stage2_epochs_per_trial"] == 6
    assert 0 < p["asha"]["device_hours"] < p["fifo"]["device_hours"]
    assert p["device_share"] == pytest.approx(1 / __import__("os").cpu_count())


def test_plan_prints_a_table(capsys, tmp_path):
    """A table; a paper-scale plan on the embedded data set says that its epochs are those of
    that set."""
    space = tmp_path / "paper-like.yaml"
    space.write_text("searched:\n  lr: {loguniform: [1.0e-3, 1.0e-2]}\nfixed:\n  method: ft\n"
                     "  scale: paper\n  epochs: 2\n  batch_size: 16\n  num_threads: 1\n")
    assert main(["plan", "--task", "darcy", "--space", str(space), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "peak resident memory of the trial process" in out
    assert "step times: stage 1 (none), stage 2" in out  # ft has no stage 1
    assert "FIFO:" in out and "ASHA:" in out
    assert "note: epochs of the embedded generated data set: --data-dir DIR" in out


@pytest.mark.parametrize("argv,message", [
    (["--random-weights"], "--random-weights needs --source-model"),
    (["--steps", "0"], "--steps 0: at least 1"),
    (["--gpus-per-trial", "1.5"], "--gpus-per-trial 1.5: a share of one GPU, in (0, 1]"),
    (["--set", "epochs=0"], "epochs"),
])
def test_bad_plan_flags_are_one_line(capsys, argv, message):
    assert main(["plan", "--task", "darcy", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_plan_on_a_cpu_measures_with_the_trials_threads_and_names_an_emulated_precision(capsys):
    """The plan measures what a trial gets (torch threads = --cpus-per-trial) and, on a CPU
    without bf16 instructions, bf16 as fp32 (emulated, it would take many times longer), saying
    so."""
    import torch

    from mona_tune.train.trainer import cpu_lacks

    threads = torch.get_num_threads()
    argv = ["plan", "--task", "darcy", "--steps", "1", "--set", "n_train=24", "--set",
            "n_test=8", "--set", "precision=bf16", "--cpus-per-trial", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    if cpu_lacks("bf16"):
        assert "  fp32, batch 16" in out
        assert "note: precision bf16 measured as fp32: this CPU has no bf16 instructions" in out
    else:
        assert "  bf16, batch 16" in out and "note:" not in out
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)


def test_plan_of_the_paper_space_runs_here(capsys):
    """The packaged paper space plans on this machine (its batch sizes, bf16 measured as fp32
    where the CPU lacks it); the embedded source model keeps it fast."""
    from mona_tune.train.trainer import cpu_lacks

    assert main(["plan", "--task", "darcy", "--space", "darcy-paper", "--steps", "1", "--json",
                 *SMALL]) == 0
    p = json.loads(capsys.readouterr().out.strip())
    assert p["batch_size"] == 4 and p["source_batch_size"] == 32 and p["method"] == "mona"
    assert p["precision"] == ("fp32" if cpu_lacks("bf16") else "bf16")
    assert p["stage1_epochs"] == 10 and p["epochs"] == 100  # warmup_epochs' largest value
    assert p["asha"]["device_hours"] < p["fifo"]["device_hours"]
