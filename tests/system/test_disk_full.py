"""A search whose storage fills up mid-search: it stops with one line naming the storage and the
resume command, and after space is freed ``--resume`` completes with every trial tracked once.

The storage is a 64 MiB tmpfs in a private mount namespace (``unshare -m``) that holds the driver,
its own local Ray and so every trial; the test reaches that filesystem through
``/proc/<pid>/root``. Both trials wait at the start of stage-2 epoch 2 (their checkpoints of global
epochs 1 and 2 written) until the test has filled the tmpfs, so the next checkpoint, whatever the
machine's speed, finds no space. The tracking store lives outside the tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import services
from services import wait_for

from mona_tune.search.trial import TRIAL_STATE, _whole
from mona_tune.tracking import mlflow_runs as mr

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not services.private_mounts_work(),
                       reason="no private mount namespace here (`unshare -m` needs root)"),
]

SPACE = """
searched:
  lam: {uniform: [0.0, 1.0]}
fixed:
  warmup_epochs: 1
  epochs: 3
  batch_size: 16
  n_train: 60
  n_test: 16
  resolution: 29
  device: cpu
budget: {num_samples: 2, max_concurrent: 2}
scheduler: {kind: fifo}
"""


def _fill(folder: Path) -> int:
    """Write zeros into ``folder`` until the filesystem refuses a byte; returns bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            block = bytes(chunk)
            while True:
                try:
                    n = f.write(block)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
                written += n or 0
                if not n:
                    break
    return written


def test_storage_full_then_resumed(tmp_path):
    storage = tmp_path / "storage"  # the tmpfs, seen only inside the namespace
    storage.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "space.yaml").write_text(textwrap.dedent(SPACE))
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([
        {"at": [2, 2], "kind": "touch", "path": f"{marks}/paused_{{run}}"},
        {"at": [2, 2], "kind": "pause", "until": f"{marks}/go"},
    ]))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search = [sys.executable, "-m", "mona_tune.cli", "search"]
    first = [*search, "--task", "darcy", "--space", str(tmp_path / "space.yaml"), "--name",
             "full", "--storage", str(storage), "--tracking-uri", uri, "--quiet"]
    resume = [*search, "--name", "full", "--resume", "--storage", str(storage)]
    q = " ".join
    script = (f"mount -t tmpfs -o size=64m tmpfs {storage} && "
              f"{{ {q(first)} > {tmp_path}/first.log 2>&1; echo $? > {tmp_path}/first.rc; }}; "
              f"while [ ! -e {marks}/resume ]; do sleep 0.2; done; "
              f"{q(resume)} > {tmp_path}/resume.log 2>&1; echo $? > {tmp_path}/resume.rc")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MONA_TUNE_FAULT": str(faults)}
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            env=env, start_new_session=True)
    inside = Path(f"/proc/{proc.pid}/root") / str(storage).lstrip("/")
    first_log = tmp_path / "first.log"
    try:
        wait_for(lambda: len(list(marks.glob("paused_*"))) == 2, 600, "both trials paused",
                 proc, first_log)
        assert _fill(inside) > 0
        (marks / "go").touch()
        wait_for(lambda: (tmp_path / "first.rc").exists(), 300, "the first driver's end", proc,
                 first_log)
        out = first_log.read_text()
        assert (tmp_path / "first.rc").read_text().strip() == "2", out[-4000:]
        last = out.strip().splitlines()[-1]
        assert last.startswith("mona-tune: error: the storage ") and str(storage) in last, last
        assert q(resume[3:]) in last and "is full" in last, last
        # what the stop left in the storage: checkpoints, some maybe cut short
        partial = [d for d in inside.glob("full/trial_*/checkpoint_*")
                   if not (d / TRIAL_STATE).is_file()
                   or not _whole(d, json.loads((d / TRIAL_STATE).read_text() or "{}"))]
        whole: dict[str, set[str]] = {}  # trial id -> global epochs of its whole checkpoints
        for d in inside.glob("full/trial_*/checkpoint_*"):
            state = json.loads((d / TRIAL_STATE).read_text() or "{}") \
                if (d / TRIAL_STATE).is_file() else {}
            if d not in partial and "trial_id" in state:  # a state file cut short is no state
                whole.setdefault(state["trial_id"], set()).add(str(state["global_epoch"]))

        (inside / "filler").unlink()
        (marks / "resume").touch()
        proc.wait(timeout=600)  # the namespace's shell ends with the resumed driver
        out = (tmp_path / "resume.log").read_text()
        assert (tmp_path / "resume.rc").read_text().strip() == "0", out[-4000:]
    finally:
        (marks / "go").touch()
        (marks / "resume").touch()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()

    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`mona.search_name` = 'full'")
    children = [r for r in runs if r.data.tags.get("mona.role") == "trial"]
    by_trial: dict[str, list] = {}
    for c in children:
        by_trial.setdefault(c.data.tags["ray_trial_id"], []).append(c)
    assert len(by_trial) == 2 and all(len(v) == 1 for v in by_trial.values()), by_trial
    restored = []
    for (c,) in by_trial.values():
        assert c.data.tags["mona.outcome"] == "completed", c.data.tags
        steps = [int(m.step) for m in client.get_metric_history(c.info.run_id, "global_epoch")]
        assert steps == [1, 2, 3, 4], steps  # 1 stage-1 + 3 stage-2 epochs, each once
        trial = c.data.tags["ray_trial_id"]
        restored.append((trial, c.data.tags.get("mona.restored_from_global_epoch")))
    # the trials continued from a checkpoint that was whole when the disk filled (global epoch 2,
    # written before the fill, or 3 where a trial's next one still found room once the other's
    # failed write was cleaned up), never from one the full disk cut short
    assert any(r is not None for _, r in restored), restored
    assert all(r is None or r in whole.get(t, set()) for t, r in restored), (restored, whole,
                                                                            partial)
