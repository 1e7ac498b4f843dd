"""`mona-tune search` end to end on a real local Ray cluster and a real MLflow SQLite store.

One Ray cluster serves the module. The search in `test_search_asha_mlflow_registry_best` is made
deterministic: random sampling with a fixed seed over a learning rate that is either sensible
(3e-3) or useless (1e-7). The first two trials sampled are sensible and fill ASHA's first rung
before any other trial starts (two at a time), so every useless trial after them is stopped at its
first rung.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mona_tune.cli import main
from mona_tune.tracking import mlflow_runs as mr

pytestmark = pytest.mark.slow

TINY = """
searched:
  lam: {uniform: [0.0, 1.0]}
  lr: {choice: [3.0e-3, 1.0e-7]}
fixed:
  warmup_epochs: 1
  epochs: 4
  batch_size: 16
  n_train: 60
  n_test: 16
  resolution: 29
  device: cpu
budget: {num_samples: 6, max_concurrent: 2}
scheduler: {grace_period: 1, reduction_factor: 2}
"""
GOOD_LR = 3.0e-3
SEED = 10  # lr sequence: good, good, useless, useless, good, useless

RESUME_EPOCHS = 8
RESUME = """
searched:
  lam: {uniform: [0.0, 1.0]}
  inner_lr: {loguniform: [1.0e-4, 1.0e-2]}
  warmup_epochs: {randint: [1, 3]}
fixed:
  epochs: 8
  batch_size: 4      # epochs slow enough that the driver can be killed mid-search
  n_train: 200
  n_test: 16
  resolution: 29
  device: cpu
budget: {num_samples: 6, max_concurrent: 2}
scheduler: {kind: fifo}
"""


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _space(tmp_path: Path, text: str, name: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _runs(uri: str, search: str):
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    parents = client.search_runs([exp.experiment_id],
                                 filter_string=f"tags.`mona.search_name` = '{search}' and "
                                               "tags.`mona.role` = 'search'")
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mona.search_name` = '{search}' and "
                                                "tags.`mona.role` = 'trial'")
    return client, parents, children


def _result_grid(exp_path: Path):
    """Ray's own view of the experiment (what `Tuner.fit()` returned)."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    return ResultGrid(ExperimentAnalysis(str(exp_path), default_metric="val_rel_l2",
                                         default_mode="min"))


def test_search_asha_mlflow_registry_best(ray_address, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space(tmp_path, TINY, "tiny.yaml")
    t0 = time.time()
    code = main(["search", "--task", "darcy", "--space", str(space), "--name", "e2e",
                 "--search", "random", "--seed", str(SEED), "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", uri, "--max-t", "4", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    print(f"search took {time.time() - t0:.1f}s")

    grid = _result_grid(tmp_path / "runs" / "e2e")
    assert len(grid) == 6 and not grid.errors
    ordered = sorted(grid, key=lambda r: r.metrics["trial_id"])
    lrs = ["good" if r.config["lr"] == GOOD_LR else "useless" for r in ordered]
    assert lrs[:3] == ["good", "good", "useless"], lrs
    stage2 = {r.metrics["trial_id"]: r.metrics["stage2_epoch"] for r in grid}
    # every useless trial met a rung already holding the two good ones: stopped there
    for r in grid:
        if r.config["lr"] != GOOD_LR:
            assert r.metrics["stage2_epoch"] < 4, (lrs, stage2)
    stopped = [t for t, e in stage2.items() if e < 4]
    assert len(stopped) >= lrs.count("useless")

    client, parents, children = _runs(uri, "e2e")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.params["task"] == "darcy" and parent.data.params["scheduler"] == "asha"
    assert parent.data.params["seed"] == str(SEED)
    assert "mona_tune_version" in parent.data.params
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"space.yaml",
                                                                          "curves.png"}
    # exactly one child per trial, each with both stages' metrics and an outcome
    by_trial = {c.data.tags["ray_trial_id"]: c for c in children}
    assert len(children) == 6 and set(by_trial) == set(stage2)
    for trial_id, c in by_trial.items():
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_rel_l2")]
        assert steps == sorted(set(steps)), "an epoch was logged twice"
        assert steps[0] == 1 and len(steps) == 1 + stage2[trial_id]  # stage 1 + stage 2 epochs
        stage = [m.value for m in client.get_metric_history(c.info.run_id, "stage")]
        assert stage[0] == 1 and stage[-1] == 2
        assert "embedder/embedder.json" in {
            a.path for a in client.list_artifacts(c.info.run_id, "embedder")}
        outcome = c.data.tags["mona.outcome"]
        if trial_id in stopped:
            assert outcome == "stopped_early"
        else:
            assert outcome == "completed"
            assert "test_rel_l2" in c.data.metrics and "source_probe_error" in c.data.metrics

    # the best: Ray's ResultGrid, the registry alias and `mona-tune best` agree
    best = grid.get_best_result(metric="val_rel_l2", mode="min")
    best_run = best.metrics["mlflow_run_id"]
    assert by_trial[best.metrics["trial_id"]].info.run_id == best_run
    mv = client.get_model_version_by_alias("mona-darcy-embedder", "best")
    assert mv.run_id == best_run
    assert parent.data.tags["mona.best_run_id"] == best_run
    assert f"best trial {best.metrics['trial_id']}" in out and best_run in out

    export = tmp_path / "exported"
    assert main(["best", "--name", "e2e", "--tracking-uri", uri, "--top", "3", "--export",
                 str(export)]) == 0
    listing = capsys.readouterr().out.splitlines()
    first_row = next(line for line in listing if line.startswith("1 "))
    assert best_run in first_row
    meta = json.loads((export / "embedder.json").read_text())
    assert meta["lam"] == pytest.approx(best.config["lam"])
    assert json.loads((export / "mona_best.json").read_text())["run_id"] == best_run
    assert (tmp_path / "runs" / "e2e" / "curves.png").stat().st_size > 10_000


def _sql(db: Path, query: str):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _child_state(db: Path) -> dict[str, tuple]:
    """run uuid -> (outcome, status, end_time, epochs logged) of the trials in the store."""
    rows = _sql(db, """
        select r.run_uuid, r.status, r.end_time,
               (select value from tags t where t.run_uuid = r.run_uuid and t.key = 'mona.outcome'),
               (select count(*) from metrics m where m.run_uuid = r.run_uuid
                                                and m.key = 'global_epoch')
        from runs r join tags t on t.run_uuid = r.run_uuid
        where t.key = 'mona.role' and t.value = 'trial'""")
    return {u: (o, s, e, n) for u, s, e, o, n in rows}


def _running_trials(db: Path) -> dict[str, int]:
    """ray trial id -> global epochs logged, of the trials whose child run is RUNNING."""
    rows = _sql(db, """
        select t.value, (select count(*) from metrics m where m.run_uuid = r.run_uuid
                                                         and m.key = 'global_epoch')
        from runs r join tags t on t.run_uuid = r.run_uuid
        where r.status = 'RUNNING' and t.key = 'ray_trial_id'""")
    return {v: n for v, n in rows}


def _snapshotted_checkpoint(exp: Path, trial_ids: set[str]) -> bool:
    """Some running trial has a checkpoint older than Tune's latest experiment snapshot."""
    snaps = [p.stat().st_mtime for p in exp.glob("experiment_state-*.json")]
    if not snaps:
        return False
    for tid in trial_ids:
        made = [c.stat().st_mtime for c in (exp / f"trial_{tid}").glob("checkpoint_*")]
        if made and min(made) < max(snaps) - 0.5:
            return True
    return False


def test_driver_killed_then_resumed(ray_address, tmp_path, capsys, monkeypatch):
    """SIGKILL the driver once a trial has completed and others run; --resume finishes the search
    with one child run per trial, completed trials untouched, the Optuna state restored."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    space = _space(tmp_path, RESUME, "resume.yaml")
    args = ["search", "--task", "darcy", "--space", str(space), "--name", "killed",
            "--storage", str(tmp_path / "runs"), "--tracking-uri", uri, "--seed", "1"]
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mona_tune.cli", *args, "--address",
                             ray_address], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1",
                                      "TUNE_GLOBAL_CHECKPOINT_S": "1"})
    completed_at_kill: dict[str, tuple] = {}
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            if not db.exists():
                continue
            try:
                state = _child_state(db)
            except sqlite3.OperationalError:
                continue
            done = {u: v for u, v in state.items() if v[0] == "completed"}
            # a running trial, several epochs from its end, whose checkpoint is in Tune's latest
            # snapshot (written every second here): resume must continue it from that checkpoint
            early = {t for t, n in _running_trials(db).items() if n <= RESUME_EPOCHS - 2}
            if done and _snapshotted_checkpoint(tmp_path / "runs" / "killed", early):
                completed_at_kill = done
                break
        assert completed_at_kill, "no trial completed in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()

    code = main([*args, "--resume"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "resuming" in out and "OptunaSearch" in out

    grid = _result_grid(tmp_path / "runs" / "killed")
    assert len(grid) == 6 and not grid.errors
    assert all(r.metrics["stage2_epoch"] == RESUME_EPOCHS and "test_rel_l2" in r.metrics
               for r in grid)

    client, parents, children = _runs(uri, "killed")
    assert len(parents) == 1
    by_trial: dict[str, list] = {}
    for c in children:
        by_trial.setdefault(c.data.tags["ray_trial_id"], []).append(c)
    assert set(by_trial) == {r.metrics["trial_id"] for r in grid}
    assert all(len(v) == 1 for v in by_trial.values()), "a trial has two child runs"
    for (c,) in by_trial.values():
        assert c.data.tags["mona.outcome"] == "completed"
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "global_epoch")]
        assert steps == sorted(set(steps)), f"epochs logged twice in {c.info.run_id}: {steps}"
        assert len(steps) == int(c.data.params["warmup_epochs"]) + RESUME_EPOCHS
    # trials completed before the kill were not trained again
    after = {c.info.run_id: c for c in children}
    for run_id, (_, _, end_time, _) in completed_at_kill.items():
        c = after[run_id]
        assert c.info.end_time == end_time
        assert c.data.tags.get("mona.attempts") == "1"
    # unfinished trials continued from their checkpoints
    restored = [c for c in children if c.data.tags.get("mona.restored_from_global_epoch")]
    assert restored, "no trial continued from a checkpoint"
    # the Optuna study holds every trial: its state came back from the experiment directory
    m = __import__("re").search(r"the study holds (\d+) trials", out)
    assert m and int(m.group(1)) >= 6, out[-2000:]
