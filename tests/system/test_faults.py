"""The fault suite: real faults injected into small searches, and what survived them.

Real parts only: one local Ray cluster for the module (its workers read the faults from a file
named by ``$MONA_TUNE_FAULT``, the trainer's test-only hook), a real ``mona-tune tracking-server``
that is stopped and restarted, drivers in their own processes killed with SIGKILL, real files.

- ``test_trial_faults_and_a_tracking_outage``: in one search, a trial's worker SIGKILLed at the
  start of a stage-2 epoch (retried from its latest checkpoint), a trial whose loss becomes NaN
  (``diverged``, not retried), an exception inside one trial (``failed`` with the message), and the
  tracking server down for a while (the trials wait it out); every metric row once, Optuna never
  told a step twice;
- ``test_driver_killed_then_resumed_asha``: the driver SIGKILLed while trials run and write
  checkpoints, Tune's experiment snapshots only those it takes on adding a trial; ``--resume``
  completes with one run per trial (none lost, none run twice) and ASHA stops the trials an
  uninterrupted search stops (the seeded search of tests/system/test_search_e2e.py);
- ``test_resume_continues_from_checkpoints_the_snapshot_missed``: the driver killed after the
  trial checkpointed epochs its one snapshot does not know; ``--resume`` continues from the
  newest of them;
- ``test_read_only_storage``: a read-only storage folder is one line on stderr, exit status 2.

The module ends with one line: faults injected, survived, runs lost, duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from services import start_tracking_server, wait_for
from test_search_e2e import (  # noqa: F401 (the fixtures: one Ray per module, as there)
    SEED,
    GOOD_LR,
    TINY,
    _result_grid,
    _runs,
    asha_faults,
    check_asha_stops,
    faults_file,
    ray_address,
)

from mona_tune.cli import main
from mona_tune.search.trial import checkpoint_states

pytestmark = pytest.mark.slow

FAULTS = """
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
budget: {num_samples: 3, max_concurrent: 2}
scheduler: {kind: fifo}
checkpoint: {every: 2}   # global epoch 3 is reported without one: a retry reports it again
"""
OUTAGE_S = 10
OPTUNA_TWICE = "The reported value is ignored"


class Tally:
    """What the module's faults did: injected, survived, trials without their MLflow run, metric
    rows missing, duplicates (rows logged twice, trials with two runs)."""

    def __init__(self) -> None:
        self.injected: list[str] = []
        self.survived: list[str] = []
        self.runs_lost = 0
        self.lost = 0
        self.duplicates = 0

    def runs(self, grid, children) -> dict[str, list]:
        """Trial id -> its child runs; counts trials without one and trials with several."""
        by_trial: dict[str, list] = {}
        for c in children:
            by_trial.setdefault(c.data.tags["ray_trial_id"], []).append(c)
        self.runs_lost += len({r.metrics["trial_id"] for r in grid} - set(by_trial))
        self.duplicates += sum(len(v) - 1 for v in by_trial.values())
        return by_trial

    def rows(self, client, run, expected: int | None = None) -> list[int]:
        """The run's logged global epochs; counts steps logged twice and, with ``expected``,
        epochs missing."""
        steps = [int(m.step) for m in client.get_metric_history(run.info.run_id, "global_epoch")]
        self.duplicates += len(steps) - len(set(steps))
        if expected is not None:
            self.lost += len(set(range(1, expected + 1)) - set(steps))
        return steps

    def line(self) -> str:
        return (f"fault suite: {len(self.injected)} faults injected, {len(self.survived)} "
                f"survived, {self.runs_lost} runs lost, {self.lost} metric rows lost, "
                f"{self.duplicates} duplicates")


class _SummaryLine:
    """Prints the tally as the last line of pytest's terminal summary."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_line(self.tally.line())


@pytest.fixture(scope="module")
def tally(request):
    t = Tally()
    request.config.pluginmanager.register(_SummaryLine(t), "mona-fault-suite-tally")
    return t


def _space(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def _driver(args: list[str], log: Path, **env) -> subprocess.Popen:
    """``mona-tune search`` in its own process (and session), output to ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "mona_tune.cli", *args], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


def _wait_file(pattern: Path, proc: subprocess.Popen, log: Path, timeout: float = 900) -> Path:
    return wait_for(lambda: next(iter(sorted(pattern.parent.glob(pattern.name))), None),
                    timeout, f"{pattern.name}", proc, log)


def test_trial_faults_and_a_tracking_outage(ray_address, faults_file, tally, tmp_path):
    marks, claims = tmp_path / "marks", tmp_path / "marks" / "claims"
    faults_file.write_text(json.dumps([
        {"at": [2, 1], "kind": "raise", "claim": f"{claims}/raise"},
        {"at": [2, 2], "kind": "nan", "claim": f"{claims}/nan"},
        {"at": [2, 3], "kind": "kill", "claim": f"{claims}/kill", "once": f"{marks}/killed"},
        {"at": [2, 1], "kind": "touch", "path": f"{marks}/stage2_{{run}}"},
    ]))
    tally.injected += ["worker SIGKILL", "NaN loss", "exception in a trial", "tracking outage"]
    db, artifacts = tmp_path / "mlflow.db", tmp_path / "artifacts"
    server = start_tracking_server(f"sqlite:///{db}", artifacts, tmp_path / "server.log")
    log = tmp_path / "driver.log"
    try:
        proc = _driver(["search", "--task", "darcy", "--space", str(_space(tmp_path, FAULTS)),
                        "--name", "faults", "--storage", str(tmp_path / "runs"), "--seed", "3",
                        "--max-failures", "1",
                        "--tracking-uri", server.url, "--address", ray_address],
                       log, PYTHONWARNINGS=f"error:{OPTUNA_TWICE}")
        try:
            _wait_file(marks / "stage2_*", proc, log)  # a trial is in stage 2: the outage
            server.stop()
            time.sleep(OUTAGE_S)
            server = start_tracking_server(f"sqlite:///{db}", artifacts,
                                           tmp_path / "server.log", port=server.port)
            code = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out = log.read_text()
        assert code == 0, out[-4000:]
        assert OPTUNA_TWICE not in out
        assert "tracking server unreachable" in out  # the outage reached the trials

        grid = _result_grid(tmp_path / "runs" / "faults")
        client, parents, children = _runs(server.url, "faults")
        assert len(parents) == 1 and len(grid) == 3
        by_trial = {t: c for t, (c, *_) in tally.runs(grid, children).items()}
        assert len(children) == 3 and set(by_trial) == {r.metrics["trial_id"] for r in grid}
        outcome = {t: c.data.tags["mona.outcome"] for t, c in by_trial.items()}
        assert sorted(outcome.values()) == ["completed", "diverged", "failed"]
        epochs = 1 + 3
        for trial, run in by_trial.items():
            steps = tally.rows(client, run, epochs if outcome[trial] == "completed" else None)
            assert steps == list(range(1, len(steps) + 1)), (trial, steps)

        (failed,) = [c for t, c in by_trial.items() if outcome[t] == "failed"]
        assert "injected fault at stage 2 epoch 1" in failed.data.tags["mona.outcome_detail"]
        assert failed.info.status == "FAILED"
        tally.survived.append("exception in a trial")

        (diverged,) = [c for t, c in by_trial.items() if outcome[t] == "diverged"]
        detail = diverged.data.tags["mona.outcome_detail"]
        assert "training diverged: the training loss is nan at stage 2 epoch 2" in detail
        assert diverged.data.tags["mona.attempts"] == "1"  # not retried
        trial = diverged.data.tags["ray_trial_id"]
        assert f"diverged {trial}: " in out and "1 diverged" in out
        tally.survived.append("NaN loss")

        (restored,) = [c for t, c in by_trial.items() if outcome[t] == "completed"]
        assert restored.data.tags.get("mona.restored_from_global_epoch") == "2"
        assert restored.data.tags["mona.attempts"] == "2"
        tally.survived.append("worker SIGKILL")

        # the best is a finite, completed trial; the runs are whole after the outage
        best = parents[0].data.tags["mona.best_run_id"]
        assert outcome[client.get_run(best).data.tags["ray_trial_id"]] == "completed"
        for trial, run in by_trial.items():
            if outcome[trial] == "completed":
                assert run.info.status == "FINISHED" and "test_rel_l2" in run.data.metrics
        tally.survived.append("tracking outage")
    finally:
        server.stop()


def test_driver_killed_then_resumed_asha(ray_address, faults_file, tally, tmp_path,
                                         monkeypatch, capsys):
    """The seeded ASHA search of tests/system/test_search_e2e.py, its driver SIGKILLed while the
    first useless trial waits before its first rung (and the others train and checkpoint):
    ``--resume`` gives what the uninterrupted search gives."""
    monkeypatch.chdir(tmp_path)
    marks = tmp_path / "marks"
    useless = asha_faults(marks)[1]["match"]
    faults_file.write_text(json.dumps([
        *asha_faults(marks),
        {"at": [2, 1], "kind": "touch", "match": useless, "path": f"{marks}/waiting_{{run}}"},
        {"at": [2, 1], "kind": "pause", "match": useless, "until": f"{marks}/go"},
    ]))
    tally.injected.append("driver SIGKILL")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["search", "--task", "darcy", "--space", str(_space(tmp_path, TINY)), "--name",
            "killed", "--search", "random", "--seed", str(SEED), "--max-t", "4",
            "--num-samples", "3",
            "--storage", str(tmp_path / "runs"), "--tracking-uri", uri]
    log = tmp_path / "driver.log"
    # no periodic snapshots: only those Tune takes on adding a trial (search/resumable.py), so a
    # trial the resumed search does not know would show as a lost run or a second run
    proc = _driver([*args, "--address", ray_address], log, TUNE_GLOBAL_CHECKPOINT_S="600")
    try:
        _wait_file(marks / "waiting_*", proc, log)
        # a trial tags its run completed, then ends it (two writes): read the runs again until
        # none is between the two, so that every completed run has its end time
        deadline = time.time() + 30
        while True:
            client, _, children = _runs(uri, "killed")
            finishing = [c.info.run_id for c in children if c.info.end_time is None
                         and c.data.tags.get("mona.outcome") == "completed"]
            if not finishing or time.time() > deadline:
                break
            time.sleep(0.2)
        assert not finishing, f"runs tagged completed but never ended: {finishing}"
        done = {c.info.run_id: c.info.end_time for c in children
                if c.data.tags.get("mona.outcome") == "completed"}
        training = {c.info.run_id for c in children if c.info.status == "RUNNING"
                    and float(c.data.params["lr"]) == GOOD_LR}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # runs with a whole checkpoint on the storage now (their workers may add more, never fewer)
    checkpointed = {state["run_id"] for folder in (tmp_path / "runs" / "killed").glob("trial_*")
                    for _, state in checkpoint_states(folder)}
    assert done, "no trial completed before the kill"
    (marks / "go").touch()

    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "lost trial" not in out

    grid = _result_grid(tmp_path / "runs" / "killed")
    check_asha_stops(grid, trials=3)  # the trials stopped without the interruption
    client, parents, children = _runs(uri, "killed")
    by_trial = tally.runs(grid, children)
    assert set(by_trial) == {r.metrics["trial_id"] for r in grid}
    assert len(children) == len(grid) and "mona.lost_runs" not in parents[0].data.tags
    stage2 = {r.metrics["trial_id"]: int(r.metrics["stage2_epoch"]) for r in grid}
    for trial, (c,) in by_trial.items():
        steps = tally.rows(client, c, 1 + stage2[trial])
        assert steps == list(range(1, 2 + stage2[trial])), (trial, steps)
    after = {c.info.run_id: c for c in children}
    for run_id, end_time in done.items():  # finished before the kill: not trained again
        assert after[run_id].info.end_time == end_time
        assert after[run_id].data.tags["mona.attempts"] == "1"
    for run_id in training - set(done):  # killed while training: continued from a checkpoint
        if after[run_id].data.tags["mona.attempts"] != "1" and run_id in checkpointed:
            # (attempts 1: it completed before the kill; not checkpointed: killed in epoch 1)
            assert after[run_id].data.tags.get("mona.restored_from_global_epoch"), run_id
    tally.survived.append("driver SIGKILL")


LATE = """
searched:
  lr: {choice: [3.0e-3]}
fixed:
  lam: 0.37
  warmup_epochs: 1
  epochs: 3
  batch_size: 16
  n_train: 60
  n_test: 16
  resolution: 29
  device: cpu
budget: {num_samples: 1, max_concurrent: 1}
scheduler: {kind: fifo}
"""


def test_resume_continues_from_checkpoints_the_snapshot_missed(ray_address, faults_file, tally,
                                                              tmp_path, monkeypatch, capsys):
    """The driver's one snapshot was taken when the trial was added, before any checkpoint (no
    periodic ones); the trial then checkpoints global epochs 1-3 and the driver is SIGKILLed.
    ``--resume`` continues from the global-epoch-3 checkpoint in the trial's folder instead of
    training from scratch: every epoch is trained and recorded once."""
    monkeypatch.chdir(tmp_path)
    marks = tmp_path / "marks"
    match = {"lam": 0.37}
    faults_file.write_text(json.dumps([
        {"at": [2, 3], "kind": "touch", "match": match, "path": f"{marks}/waiting"},
        {"at": [2, 3], "kind": "pause", "match": match, "until": f"{marks}/go"},
    ]))
    tally.injected.append("driver SIGKILL after its snapshot")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["search", "--task", "darcy", "--space", str(_space(tmp_path, LATE)), "--name", "late",
            "--search", "random", "--seed", "3", "--storage", str(tmp_path / "runs"),
            "--tracking-uri", uri]
    log = tmp_path / "driver.log"
    proc = _driver([*args, "--address", ray_address], log, TUNE_GLOBAL_CHECKPOINT_S="600")

    def checkpointed() -> list[int]:  # global epochs of the trial's checkpoints on the storage
        states = (tmp_path / "runs" / "late").glob("trial_*/checkpoint_*/mona_trial.json")
        return sorted(json.loads(p.read_text())["global_epoch"] for p in states)

    try:
        _wait_file(marks / "waiting", proc, log)
        assert checkpointed() == [1, 2, 3]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (marks / "go").touch()

    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "lost trial" not in out
    (result,) = _result_grid(tmp_path / "runs" / "late")
    # the resumed attempt trained the last epoch only
    assert result.metrics["training_iteration"] == 4, result.metrics
    assert result.metrics["iterations_since_restore"] == 1, result.metrics
    client, _, (child,) = _runs(uri, "late")
    assert child.data.tags["mona.attempts"] == "2"
    assert child.data.tags["mona.restored_from_global_epoch"] == "3"
    assert child.data.tags["mona.outcome"] == "completed"
    assert tally.rows(client, child, 4) == [1, 2, 3, 4]
    tally.survived.append("driver SIGKILL after its snapshot")


def test_read_only_storage(ray_address, tally, tmp_path):
    """The storage folder is a read-only mount (a tmpfs in a private mount namespace: root
    writes through chmod): one line on stderr, exit status 2, within seconds."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here")
    tally.injected.append("read-only storage")
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = [sys.executable, "-m", "mona_tune.cli", "search", "--task", "darcy", "--space",
           str(_space(tmp_path, TINY)), "--name", "ro", "--storage", str(ro / "runs"),
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--address", ray_address]
    t0 = time.time()
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f'mount -t tmpfs -o ro,size=1m tmpfs {ro} && exec "$@"', "sh", *cmd],
                         capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1 and "--storage" in lines[0] and "Traceback" not in res.stderr, lines
    assert time.time() - t0 < 60
    tally.survived.append("read-only storage")


@pytest.mark.filterwarnings(f"error:{OPTUNA_TWICE}")
def test_optuna_hears_each_step_once():
    """A trial restored from a checkpoint reports the steps after it again: the searcher passes
    each step to Optuna once, where plain OptunaSearch makes Optuna warn (and ignore it)."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from mona_tune.search.resumable import OnceOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def report(cls, steps=(1, 2, 3, 2, 3, 4)):  # restored from its step-1 checkpoint
        searcher = cls(space={"lam": tune.uniform(0, 1)}, metric="val", mode="min", seed=0)
        searcher.suggest("t1")
        for step in steps:
            searcher.on_trial_result("t1", {"val": 1.0 / step, "training_iteration": step})
        return searcher

    once = report(OnceOptunaSearch)
    assert once._ot_study.trials[0].intermediate_values == {1: 1.0, 2: 0.5, 3: 1 / 3, 4: 0.25}
    with pytest.warns(UserWarning, match=OPTUNA_TWICE):
        report(OptunaSearch)
