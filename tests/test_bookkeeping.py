"""The search's bookkeeping without Ray, on a real SQLite MLflow store:

- a trial's outcome from Tune's last result (``driver._outcome``);
- reconciliation of Tune's results with the child runs (tags, statuses, lost runs deleted);
- a trial's global epoch count (stage-1 epochs included) and its MLflow steps;
- the completed-child short-circuit: a trial whose child run completed is not reopened;
- ``mona-tune best``: ranking on the last reported value, direction, --top, --json, --export,
  and its errors.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from mona_tune.cli import main
from mona_tune.config import TrainConfig
from mona_tune.search.driver import _outcome, reconcile_runs
from mona_tune.search.trial import TrialSettings, _TrialRun
from mona_tune.tracking import mlflow_runs as mr

# ---------------------------------------------------------------- outcome classification
MAX_T = 6


def row(metrics: dict, error=None, epochs: int | None = 6, trial_id: str = "t") -> dict:
    config = {"lam": 0.5} if epochs is None else {"lam": 0.5, "epochs": epochs}
    return {"trial_id": trial_id, "config": config, "metrics": metrics, "error": error}


def test_a_trial_with_the_test_metric_completed():
    got = _outcome(row({"val_rel_l2": 0.2, "test_rel_l2": 0.21, "stage2_epoch": 6}),
                   "test_rel_l2", MAX_T)
    assert got == ("completed", "completed 6 stage-2 epochs")


def test_a_trial_without_the_test_metric_was_stopped_early():
    got = _outcome(row({"val_rel_l2": 0.4, "stage2_epoch": 2}, epochs=4), "test_rel_l2", MAX_T)
    assert got == ("stopped_early", "stopped by ASHA at stage-2 epoch 2 of 4")
    # the epoch budget falls back to max_t; the scheduler's name is the caller's
    got = _outcome(row({"val_rel_l2": 0.4, "stage2_epoch": 1}, epochs=None), "test_rel_l2",
                   MAX_T, "the time budget")
    assert got == ("stopped_early", "stopped by the time budget at stage-2 epoch 1 of 6")
    # a test metric of another task does not make a trial completed
    assert _outcome(row({"test_nrmse": 0.1, "stage2_epoch": 6}), "test_rel_l2", MAX_T)[0] \
        == "stopped_early"


def test_a_trial_with_an_error_failed_with_its_last_line():
    err = "Traceback (most recent call last):\n  File x\nRuntimeError: out of memory\n"
    got = _outcome(row({"val_rel_l2": 0.3, "test_rel_l2": 0.3}, error=err), "test_rel_l2", MAX_T)
    assert got == ("failed", "RuntimeError: out of memory")
    assert _outcome(row({}, error="   "), "test_rel_l2", MAX_T) == ("failed", "error")
    assert len(_outcome(row({}, error="x" * 900), "test_rel_l2", MAX_T)[1]) == 500


def test_a_diverged_trial_is_diverged_with_its_reason():
    m = {"val_rel_l2": float("inf"), "diverged": 1, "stage2_epoch": 6,
         "error": "training diverged: the training loss is nan at stage 2 epoch 1 step 3"}
    outcome, detail = _outcome(row(m), "test_rel_l2", MAX_T)
    assert outcome == "diverged"
    assert "the training loss is nan" in detail
    # an error (an exception in the trial) still makes it failed
    assert _outcome(row(m, error="ValueError: x"), "test_rel_l2", MAX_T)[0] == "failed"


# ---------------------------------------------------------------- a real store
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bookkeeping") / "mlflow.db"
    return f"sqlite:///{path}"


def parent_run(uri: str, name: str, task: str = "darcy", **params) -> tuple[str, str]:
    exp = mr.ensure_experiment(uri, task)
    parent = mr.start_parent_run(uri, exp, name=name, task=task, params=params,
                                 space_yaml="searched: {}\n")
    return exp, parent


def child(uri, exp, parent, trial_id, search="s", **params):
    return mr.open_child_run(uri, exp, parent, trial_id=trial_id, trial_name=trial_id,
                             search_name=search, task="darcy",
                             params={**params, "searched": ",".join(params)})


def run_of(uri: str, run_id: str):
    return mr.get_client(uri).get_run(run_id)


def test_reconcile_tags_every_child_and_deletes_lost_ones(store):
    uri = store
    exp, parent = parent_run(uri, "recon", metric="val_rel_l2", mode="min")
    ids = {t: child(uri, exp, parent, t, search="recon").run_id
           for t in ("done", "early", "crash", "nan", "lost")}
    mr.end_run(uri, ids["done"], "FINISHED")
    rows = [
        row({"val_rel_l2": 0.2, "test_rel_l2": 0.2, "stage2_epoch": 6}, trial_id="done"),
        row({"val_rel_l2": 0.5, "stage2_epoch": 2}, trial_id="early"),
        row({"stage2_epoch": 1}, error="boom\nValueError: bad", trial_id="crash"),
        row({"val_rel_l2": float("inf"), "diverged": 1, "stage2_epoch": 6,
             "error": "training diverged: lr too high"}, trial_id="nan"),
        row({"val_rel_l2": 0.4, "stage2_epoch": 1}, trial_id="unknown"),  # no run in MLflow
    ]
    lost_runs: dict = {}
    out = reconcile_runs(uri, exp, parent, rows, "test_rel_l2", MAX_T, lost=lost_runs)
    assert out == {
        "done": ("completed", "completed 6 stage-2 epochs", ids["done"]),
        "early": ("stopped_early", "stopped by ASHA at stage-2 epoch 2 of 6", ids["early"]),
        "crash": ("failed", "ValueError: bad", ids["crash"]),
        "nan": ("diverged", "training diverged: lr too high", ids["nan"]),
        "unknown": ("stopped_early", "stopped by ASHA at stage-2 epoch 1 of 6", None),
    }
    want = {"done": ("completed", "FINISHED", "6"), "early": ("stopped_early", "FINISHED", "2"),
            "crash": ("failed", "FAILED", "1"), "nan": ("diverged", "FAILED", "6")}
    for trial, (outcome, status, last) in want.items():
        r = run_of(uri, ids[trial])
        assert r.data.tags[mr.TAG_OUTCOME] == outcome
        assert r.data.tags[mr.TAG_OUTCOME_DETAIL] == out[trial][1]
        assert r.data.tags["mona.last_stage2_epoch"] == last
        assert r.info.status == status
        assert r.info.lifecycle_stage == "active"
    lost = run_of(uri, ids["lost"])
    assert lost.data.tags[mr.TAG_OUTCOME] == "lost"
    assert lost.info.status == "KILLED" and lost.info.lifecycle_stage == "deleted"
    assert lost_runs == {"lost": ids["lost"]}
    assert run_of(uri, parent).data.tags["mona.lost_runs"] == ids["lost"]
    assert sorted(r.info.run_id for r in mr.child_runs(uri, exp, parent)) == \
        sorted(ids[t] for t in ("done", "early", "crash", "nan"))


# ---------------------------------------------------------------- a trial's runs
def settings(uri, exp, parent, name) -> TrialSettings:
    return TrialSettings(tracking_uri=uri, experiment_id=exp, parent_run_id=parent,
                         search_name=name, task="darcy", metric="rel_l2",
                         checkpoint_every=1000, log_embedder=False)


def test_global_epochs_count_stage_1(store):
    uri = store
    exp, parent = parent_run(uri, "epochs")
    cfg = TrainConfig(method="mona", warmup_epochs=2, epochs=3)
    run = _TrialRun(settings(uri, exp, parent, "epochs"), cfg, "g_1", "g_1")
    assert run.stage1_epochs == 2
    epochs = [(1, 1, 0), (1, 2, 0), (2, 1, 1), (2, 2, 2), (2, 3, 3)]
    with warnings.catch_warnings():  # tune.report outside a Tune session only warns
        warnings.simplefilter("ignore")
        for i, (stage, epoch, s2) in enumerate(epochs):
            run.on_epoch(None, {"stage": stage, "epoch": epoch, "stage2_epoch": s2,
                                "val_rel_l2": 1.0 - 0.1 * i})
    history = mr.get_client(uri).get_metric_history(run.run_id, "val_rel_l2")
    assert sorted((m.step, round(m.value, 6)) for m in history) == \
        [(g, round(1.0 - 0.1 * (g - 1), 6)) for g in range(1, 6)]
    assert run.last is not None and run.last["global_epoch"] == 5
    assert run.last_global == 5
    ft = _TrialRun(settings(uri, exp, parent, "epochs"), TrainConfig(method="ft", epochs=3),
                   "g_2", "g_2")
    assert ft.global_epoch({"stage": 2, "epoch": 2}) == 2
    # a retry of the first trial continues its run after the epochs already logged
    again = _TrialRun(settings(uri, exp, parent, "epochs"), cfg, "g_1", "g_1")
    assert again.run_id == run.run_id and again.logged_up_to == 5
    assert again.embedder_logged


def test_stopped_failed_and_diverged_trials_tag_their_runs(store):
    from mona_tune.train.trainer import TrainingDiverged

    uri = store
    exp, parent = parent_run(uri, "ends")
    s = settings(uri, exp, parent, "ends")
    cfg = TrainConfig(method="emb", warmup_epochs=1, epochs=2)
    stopped = _TrialRun(s, cfg, "e_1", "e_1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stopped.on_epoch(None, {"stage": 2, "epoch": 1, "stage2_epoch": 1, "val_rel_l2": 0.3})
        stopped.stopped()
        diverged = _TrialRun(s, cfg, "e_3", "e_3")
        diverged.diverged(TrainingDiverged("training diverged: loss is nan"), "min")
    r = run_of(uri, stopped.run_id)
    assert r.data.tags[mr.TAG_OUTCOME] == "stopped_early"
    assert r.data.tags["mona.stopped_at_global_epoch"] == "2"
    assert r.info.status == "FINISHED"
    failed = _TrialRun(s, cfg, "e_2", "e_2")
    failed.failed(RuntimeError("CUDA out of memory\ntraceback"))
    r = run_of(uri, failed.run_id)
    assert r.data.tags[mr.TAG_OUTCOME] == "failed"
    assert r.data.tags[mr.TAG_OUTCOME_DETAIL] == "RuntimeError: CUDA out of memory"
    assert r.info.status == "FAILED"
    r = run_of(uri, diverged.run_id)
    assert r.data.tags[mr.TAG_OUTCOME] == "diverged"
    assert r.data.tags[mr.TAG_OUTCOME_DETAIL] == "TrainingDiverged: training diverged: loss is nan"
    assert diverged.completed


def test_a_completed_child_is_not_reopened(store):
    """A trial that completed just before its driver died is reported again, not re-run: its
    child run comes back with outcome 'completed' and its metrics, and is left as it was."""
    uri = store
    exp, parent = parent_run(uri, "short")
    s = settings(uri, exp, parent, "short")
    cfg = TrainConfig(method="ft", epochs=2)
    first = _TrialRun(s, cfg, "c_1", "c_1")
    mr.log_metrics(uri, first.run_id, {"global_epoch": 2, "val_rel_l2": 0.25,
                                       "test_rel_l2": 0.3}, step=2)
    mr.set_tags(uri, first.run_id, {mr.TAG_OUTCOME: "completed"})
    mr.end_run(uri, first.run_id, "FINISHED")
    again = _TrialRun(s, cfg, "c_1", "c_1")
    assert again.run_id == first.run_id
    assert again.child.outcome == "completed"
    assert again.child.metrics == {"global_epoch": 2.0, "val_rel_l2": 0.25, "test_rel_l2": 0.3}
    r = run_of(uri, first.run_id)
    assert r.info.status == "FINISHED" and r.data.tags["mona.attempts"] == "1"
    # an interrupted one is reopened, continued after its last logged epoch, attempt counted
    other = _TrialRun(s, cfg, "c_2", "c_2")
    mr.log_metrics(uri, other.run_id, {"global_epoch": 1, "val_rel_l2": 0.5}, step=1)
    mr.end_run(uri, other.run_id, "FAILED")
    retry = _TrialRun(s, cfg, "c_2", "c_2")
    assert retry.child.outcome is None and retry.logged_up_to == 1
    r = run_of(uri, other.run_id)
    assert r.info.status == "RUNNING" and r.data.tags["mona.attempts"] == "2"


# ---------------------------------------------------------------- mona-tune best
def embedder_dir(d: Path, tag: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "embedder.json").write_text(json.dumps({"kind": "2d", "tag": tag}))
    (d / "embedder.safetensors").write_bytes(b"\0" * 16)
    return d


@pytest.fixture(scope="module")
def ranked_store(store, tmp_path_factory):
    """Search 'rank' (min): a last 0.5 after a best 0.1, b 0.3, c without the metric;
    search 'rank-max' of another task (max): d 0.2, e 0.7."""
    uri = store
    exp, parent = parent_run(uri, "rank", metric="val_rel_l2", mode="min")
    runs = {}
    for t, vals in (("a", [0.1, 0.5]), ("b", [0.3]), ("c", [])):
        runs[t] = child(uri, exp, parent, t, search="rank", lam=len(t) * 0.1, inner_lr=0.01)
        for step, v in enumerate(vals, 1):
            mr.log_metrics(uri, runs[t].run_id, {"val_rel_l2": v, "test_rel_l2": v + 0.01},
                           step=step)
        d = tmp_path_factory.mktemp(f"emb_{t}")
        mr.log_artifacts(uri, runs[t].run_id, embedder_dir(d / "embedder", t), "embedder")
    exp2, parent2 = parent_run(uri, "rank-max", task="pdebench-darcy", metric="val_score",
                               mode="max")
    for t, v in (("d", 0.2), ("e", 0.7)):
        runs[t] = mr.open_child_run(uri, exp2, parent2, trial_id=t, trial_name=t,
                                    search_name="rank-max", task="pdebench-darcy",
                                    params={"lam": 0.1, "searched": "lam"})
        mr.log_metrics(uri, runs[t].run_id, {"val_score": v}, step=1)
    return uri, {t: r.run_id for t, r in runs.items()}


def best(uri, *args) -> list[str]:
    return ["best", "--tracking-uri", uri, *args]


def test_best_ranks_on_the_last_reported_value(ranked_store, capsys):
    uri, ids = ranked_store
    assert main(best(uri, "--name", "rank", "--json")) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in got] == [ids["b"], ids["a"]]  # c reported nothing
    assert [r["rank"] for r in got] == [1, 2]
    assert got[0]["val_rel_l2"] == 0.3 and got[1]["val_rel_l2"] == 0.5
    assert got[0]["test_rel_l2"] == pytest.approx(0.31)
    assert got[0]["params"] == {"lam": "0.1", "inner_lr": "0.01"}
    assert main(best(uri, "--name", "rank", "--top", "1", "--json")) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [ids["b"]]


def test_best_follows_the_search_direction(ranked_store, capsys):
    uri, ids = ranked_store
    assert main(best(uri, "--name", "rank-max", "--json")) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in got] == [ids["e"], ids["d"]]
    # without --name: every trial of the task, in the task's direction (rel_l2: lower first)
    assert main(best(uri, "--task", "darcy", "--top", "10", "--json")) == 0
    got = [r["run_id"] for r in json.loads(capsys.readouterr().out)]
    assert got.index(ids["b"]) < got.index(ids["a"])
    assert ids["d"] not in got and ids["c"] not in got


def test_best_table_and_export(ranked_store, capsys, tmp_path):
    uri, ids = ranked_store
    out = tmp_path / "export"
    assert main(best(uri, "--name", "rank", "--top", "1", "--export", str(out))) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("best trials of search rank by val_rel_l2 (min), 2 ranked")
    assert text[1].split()[:4] == ["#", "run", "id", "trial"]
    assert text[2].split()[:5] == ["1", ids["b"], "b", "running", "0.3"]
    assert len(text) == 4 and "exported" in text[3]
    assert json.loads((out / "embedder.json").read_text())["tag"] == "b"
    meta = json.loads((out / "mona_best.json").read_text())
    assert meta["run_id"] == ids["b"] and meta["value"] == 0.3
    assert meta["metric"] == "val_rel_l2" and meta["search"] == "rank"
    assert "searched" not in meta["train_config_params"]


@pytest.mark.parametrize("args, says", [
    (["--name", "rank", "--top", "0"], "--top 0"),
    (["--name", "nope"], "--name nope: no search of that name"),
    (["--task", "no-such-task"], "--task no-such-task: no searches"),
])
def test_best_errors_are_one_line(ranked_store, capsys, args, says):
    uri, _ = ranked_store
    assert main(best(uri, *args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_best_export_refuses_a_non_empty_directory(ranked_store, capsys, tmp_path):
    uri, _ = ranked_store
    (tmp_path / "keep.txt").write_text("x")
    assert main(best(uri, "--name", "rank", "--export", str(tmp_path))) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_best_on_a_missing_store(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(best(uri, "--name", "x")) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
