"""Checkpoint retention done by the trials themselves on local storage (no Ray needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mona_tune.search.trial import TRAINER_DIR, TRIAL_STATE, newest_checkpoint, prune_checkpoints


def _checkpoints(trial_dir: Path, scores: list, epochs: list | None = None) -> list[Path]:
    """Checkpoint folders in Tune's layout; global epochs 1, 2, ... unless given (None: the state
    has none)."""
    out = []
    for i, score in enumerate(scores):
        d = trial_dir / f"checkpoint_{i:06d}"
        (d / TRAINER_DIR).mkdir(parents=True)
        (d / TRAINER_DIR / "trainer.pt").write_bytes(b"state")
        state = {"score": score}
        epoch = i + 1 if epochs is None else epochs[i]
        if epoch is not None:
            state["global_epoch"] = epoch
        (d / TRIAL_STATE).write_text(json.dumps(state))
        out.append(d)
    return out


def _with_state(ckpts: list[Path]) -> list[str]:
    return [d.name for d in ckpts if (d / TRAINER_DIR).is_dir()]


def test_keeps_newest_and_best_folders_stay(tmp_path):
    ckpts = _checkpoints(tmp_path, [0.5, 0.2, 0.4, 0.3, 0.6])
    prune_checkpoints(tmp_path, keep=2, mode="min")
    with_state = [d.name for d in ckpts if (d / TRAINER_DIR).is_dir()]
    # the newest (epoch 5) and the best (score 0.2) keep their state
    assert with_state == ["checkpoint_000001", "checkpoint_000004"]
    assert all(d.is_dir() and (d / TRIAL_STATE).is_file() for d in ckpts)  # folders stay for Tune


def test_max_mode_keeps_the_highest(tmp_path):
    ckpts = _checkpoints(tmp_path, [0.9, 0.1, 0.5])
    prune_checkpoints(tmp_path, keep=2, mode="max")
    assert [d.name for d in ckpts if (d / TRAINER_DIR).is_dir()] == ["checkpoint_000000",
                                                                     "checkpoint_000002"]


def test_restore_takes_the_newest_checkpoint_with_a_state(tmp_path):
    ckpts = _checkpoints(tmp_path, [0.5, 0.2, 0.4, 0.3])
    prune_checkpoints(tmp_path, keep=2, mode="min")
    # a stale snapshot names an emptied checkpoint: the newest complete one is restored instead
    assert newest_checkpoint(ckpts[0]) == ckpts[3]
    assert newest_checkpoint(ckpts[3]) == ckpts[3]


def test_a_half_copied_checkpoint_is_never_restored(tmp_path):
    """A process killed while its checkpoint was copied into the storage leaves a trainer state
    shorter than the one recorded beside it: the restore takes the newest whole one."""
    ckpts = _checkpoints(tmp_path, [0.5, 0.4, 0.3])
    for d in ckpts:
        state = json.loads((d / TRIAL_STATE).read_text())
        state["trainer_files"] = {"trainer.pt": len(b"state")}
        (d / TRIAL_STATE).write_text(json.dumps(state))
    (ckpts[2] / TRAINER_DIR / "trainer.pt").write_bytes(b"sta")  # cut short
    assert newest_checkpoint(ckpts[2]) == ckpts[1]
    (ckpts[1] / TRAINER_DIR / "trainer.pt").unlink()  # not copied at all
    assert newest_checkpoint(ckpts[2]) == ckpts[0]


def test_newest_means_the_highest_global_epoch_not_the_folder_name(tmp_path):
    # a state without a global epoch counts as the oldest
    ckpts = _checkpoints(tmp_path, [0.5, 0.4, 0.3, 0.2], epochs=[3, 5, 4, None])
    assert newest_checkpoint(ckpts[0]) == ckpts[1]
    prune_checkpoints(tmp_path, keep=1, mode="min")
    assert _with_state(ckpts) == ["checkpoint_000001"]
    # older than global epoch 1, the first there is
    first = _checkpoints(tmp_path / "first", [0.5, 0.4], epochs=[None, 1])
    assert newest_checkpoint(first[0]) == first[1]
    prune_checkpoints(tmp_path / "first", keep=1, mode="min")
    assert _with_state(first) == ["checkpoint_000001"]


def test_no_checkpoint_is_emptied_while_there_are_at_most_keep(tmp_path):
    ckpts = _checkpoints(tmp_path, [0.5, 0.4])
    prune_checkpoints(tmp_path, keep=2, mode="min")
    assert _with_state(ckpts) == ["checkpoint_000000", "checkpoint_000001"]
    ckpts += _checkpoints(tmp_path / "other", [0.5, 0.4, 0.3])
    prune_checkpoints(tmp_path / "other", keep=3, mode="max")
    assert len(_with_state(ckpts)) == 5


def test_a_checkpoint_without_a_finite_score_is_never_kept_as_the_best(tmp_path):
    for mode, scores in (("min", [None, 0.5, float("nan"), 0.7, 0.9]),
                         ("max", [None, 0.5, float("nan"), 0.1, 0.05])):
        ckpts = _checkpoints(tmp_path / mode, scores)
        prune_checkpoints(tmp_path / mode, keep=2, mode=mode)
        assert _with_state(ckpts) == ["checkpoint_000001", "checkpoint_000004"], mode


def test_emptied_and_unreadable_checkpoints_are_passed_over(tmp_path):
    ckpts = _checkpoints(tmp_path, [0.5, 0.4, 0.3, 0.2])
    (ckpts[0] / TRIAL_STATE).write_text("{not json")
    shutil.rmtree(ckpts[3] / TRAINER_DIR)  # emptied by the retention
    # the unreadable one comes first and does not end the search; the emptied newest is skipped
    assert newest_checkpoint(ckpts[0]) == ckpts[2]
    prune_checkpoints(tmp_path, keep=1, mode="min")
    assert _with_state(ckpts) == ["checkpoint_000000", "checkpoint_000002"]
