"""The search's bookkeeping without Ray, on a real SQLite MLflow store:

- a trial's outcome from Tune's last result (``results.trial_outcome``);
- reconciliation of Tune's results with the child runs (tags, statuses, lost runs deleted);
- a trial's global epoch count (stage-1 epochs included) and its MLflow steps;
- the completed-child short-circuit: a trial whose child run completed is not reopened;
- ``mona-tune best``: ranking on the last reported value, direction, --top, --json, --export,
  and its errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path

import pytest

from conftest import empty_mlflow_store
from mona_tune.cli import main
from mona_tune.config import TrainConfig
from mona_tune.search.results import reconcile_runs, trial_outcome
from mona_tune.search.trial import (TRAINER_DIR, TRIAL_STATE, TrialSettings, _TrialRun,
                                    train_trial, trial_dir_name)
from mona_tune.tracking import mlflow_runs as mr

# ---------------------------------------------------------------- outcome classification
MAX_T = 6


def row(metrics: dict, error=None, epochs: int | None = 6, trial_id: str = "t") -> dict:
    config = {"lam": 0.5} if epochs is None else {"lam": 0.5, "epochs": epochs}
    return {"trial_id": trial_id, "config": config, "metrics": metrics, "error": error}


def test_a_trial_with_the_test_metric_completed():
    got = trial_outcome(row({"val_rel_l2": 0.2, "test_rel_l2": 0.21, "stage2_epoch": 6}),
                   "test_rel_l2", MAX_T)
    assert got == ("completed", "completed 6 stage-2 epochs")


def test_a_trial_without_the_test_metric_was_stopped_early():
    got = trial_outcome(row({"val_rel_l2": 0.4, "stage2_epoch": 2}, epochs=4), "test_rel_l2", MAX_T)
    assert got == ("stopped_early", "stopped by ASHA at stage-2 epoch 2 of 4")
    # the epoch budget falls back to max_t; the scheduler's name is the caller's
    got = trial_outcome(row({"val_rel_l2": 0.4, "stage2_epoch": 1}, epochs=None), "test_rel_l2",
                   MAX_T, "the time budget")
    assert got == ("stopped_early", "stopped by the time budget at stage-2 epoch 1 of 6")
    # a test metric of another task does not make a trial completed
    assert trial_outcome(row({"test_nrmse": 0.1, "stage2_epoch": 6}), "test_rel_l2", MAX_T)[0] \
        == "stopped_early"


def test_a_trial_with_an_error_failed_with_its_last_line():
    err = "Traceback (most recent call last):\n  File x\nRuntimeError: out of memory\n"
    got = trial_outcome(row({"val_rel_l2": 0.3, "test_rel_l2": 0.3}, error=err), "test_rel_l2", MAX_T)
    assert got == ("failed", "RuntimeError: out of memory")
    assert trial_outcome(row({}, error="   "), "test_rel_l2", MAX_T) == ("failed", "error")
    assert len(trial_outcome(row({}, error="x" * 900), "test_rel_l2", MAX_T)[1]) == 500


def test_a_diverged_trial_is_diverged_with_its_reason():
    m = {"val_rel_l2": float("inf"), "diverged": 1, "stage2_epoch": 6,
         "error": "training diverged: the training loss is nan at stage 2 epoch 1 step 3"}
    outcome, detail = trial_outcome(row(m), "test_rel_l2", MAX_T)
    assert outcome == "diverged"
    assert "the training loss is nan" in detail
    # an error (an exception in the trial) still makes it failed
    assert trial_outcome(row(m, error="ValueError: x"), "test_rel_l2", MAX_T)[0] == "failed"
    # without a reason; a long reason is cut at 500 characters
    assert trial_outcome(row({"diverged": 1}), "test_rel_l2", MAX_T) == \
        ("diverged", "training diverged")
    assert trial_outcome(row({"diverged": 1, "error": "y" * 700}), "test_rel_l2", MAX_T)[1] == "y" * 500


def test_outcomes_of_results_without_a_stage_2_epoch():
    """A result row without ``stage2_epoch``: a completed trial ran its epochs (the trial's, else
    max_t), a stopped one was stopped before stage-2 epoch 1."""
    assert trial_outcome(row({"test_rel_l2": 0.2}, epochs=4), "test_rel_l2", MAX_T) == \
        ("completed", "completed 4 stage-2 epochs")
    assert trial_outcome(row({"test_rel_l2": 0.2}, epochs=None), "test_rel_l2", MAX_T) == \
        ("completed", f"completed {MAX_T} stage-2 epochs")
    assert trial_outcome(row({"val_rel_l2": 0.3}, epochs=4), "test_rel_l2", MAX_T) == \
        ("stopped_early", "stopped by ASHA at stage-2 epoch 0 of 4")


# ---------------------------------------------------------------- a real store
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return empty_mlflow_store(tmp_path_factory.mktemp("bookkeeping") / "mlflow.db")


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


LOST_DETAIL = ("started before the driver was interrupted, after Tune's last snapshot; re-run as "
               "another trial of the resumed search")


def test_reconcile_tags_every_child_and_deletes_lost_ones(store, caplog):
    uri = store
    exp, parent = parent_run(uri, "recon", metric="val_rel_l2", mode="min")
    ids = {t: child(uri, exp, parent, t, search="recon").run_id
           for t in ("done", "early", "crash", "nan", "budget", "lost", "lost2")}
    mr.end_run(uri, ids["done"], "FINISHED")
    mr.end_run(uri, ids["lost2"], "FAILED")
    rows = [
        row({"val_rel_l2": 0.4, "stage2_epoch": 1}, trial_id="unknown"),  # no run in MLflow
        row({"val_rel_l2": 0.2, "test_rel_l2": 0.2, "stage2_epoch": 6}, trial_id="done"),
        row({"val_rel_l2": 0.5, "stage2_epoch": 2}, trial_id="early"),
        row({"stage2_epoch": 1}, error="boom\nValueError: bad", trial_id="crash"),
        row({"val_rel_l2": float("inf"), "diverged": 1, "stage2_epoch": 6,
             "error": "training diverged: lr too high"}, trial_id="nan"),
        row({}, epochs=None, trial_id="budget"),  # no epoch reported, epochs from max_t
    ]
    lost_runs: dict = {}
    with caplog.at_level("INFO", logger="mona_tune.search.results"):
        out = reconcile_runs(uri, exp, parent, rows, "test_rel_l2", MAX_T, "the time budget",
                             lost=lost_runs)
    assert out == {
        "done": ("completed", "completed 6 stage-2 epochs", ids["done"]),
        "early": ("stopped_early", "stopped by the time budget at stage-2 epoch 2 of 6",
                  ids["early"]),
        "crash": ("failed", "ValueError: bad", ids["crash"]),
        "nan": ("diverged", "training diverged: lr too high", ids["nan"]),
        "budget": ("stopped_early", f"stopped by the time budget at stage-2 epoch 0 of {MAX_T}",
                   ids["budget"]),
        "unknown": ("stopped_early", "stopped by the time budget at stage-2 epoch 1 of 6", None),
    }
    want = {"done": ("completed", "FINISHED", "6"), "early": ("stopped_early", "FINISHED", "2"),
            "crash": ("failed", "FAILED", "1"), "nan": ("diverged", "FAILED", "6"),
            "budget": ("stopped_early", "FINISHED", "0")}
    for trial, (outcome, status, last) in want.items():
        r = run_of(uri, ids[trial])
        assert r.data.tags[mr.TAG_OUTCOME] == outcome
        assert r.data.tags[mr.TAG_OUTCOME_DETAIL] == out[trial][1]
        assert r.data.tags["mona.last_stage2_epoch"] == last
        assert r.info.status == status
        assert r.info.lifecycle_stage == "active"
    for trial, status in (("lost", "KILLED"), ("lost2", "FAILED")):
        lost = run_of(uri, ids[trial])
        assert lost.data.tags[mr.TAG_OUTCOME] == "lost"
        assert lost.data.tags[mr.TAG_OUTCOME_DETAIL] == LOST_DETAIL
        assert lost.info.status == status and lost.info.lifecycle_stage == "deleted"
        assert f"deleted run {ids[trial]} of lost trial {trial}" in caplog.messages
    assert lost_runs == {"lost": ids["lost"], "lost2": ids["lost2"]}
    assert sorted(run_of(uri, parent).data.tags["mona.lost_runs"].split(",")) == \
        sorted([ids["lost"], ids["lost2"]])
    assert sorted(r.info.run_id for r in mr.child_runs(uri, exp, parent)) == \
        sorted(ids[t] for t in ("done", "early", "crash", "nan", "budget"))


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
    assert r.data.tags[mr.TAG_OUTCOME_DETAIL] == "stopped by the scheduler"
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


def test_tagging_a_stopped_or_failed_trial_never_raises(store, tmp_path, caplog):
    """The store is gone when a trial ends: the trial's own exit is not masked (the driver tags
    its run after the search); the reason is logged for debugging."""
    exp, parent = parent_run(store, "gone")
    run = _TrialRun(settings(store, exp, parent, "gone"), TrainConfig(method="ft", epochs=2),
                    "x_1", "x_1")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    run.s = dataclasses.replace(run.s, tracking_uri=f"sqlite:///{blocked}/mlflow.db")
    with caplog.at_level("DEBUG", logger="mona_tune.search.trial"):
        run.stopped()
        run.failed(RuntimeError("boom"))
    logged = [(r.getMessage(), r.exc_info is not None) for r in caplog.records
              if r.name == "mona_tune.search.trial"]
    assert logged == [("could not tag a stopped trial", True),
                      ("could not tag a failed trial", True)]
    assert run_of(store, run.run_id).info.status == "RUNNING"


def test_a_long_divergence_reason_is_cut_for_tune_and_mlflow(store, monkeypatch):
    import ray.tune

    from mona_tune.train.trainer import TrainingDiverged

    reports = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kw: reports.append(metrics))
    exp, parent = parent_run(store, "long")
    run = _TrialRun(settings(store, exp, parent, "long"), TrainConfig(method="ft", epochs=2),
                    "l_1", "l_1")
    reason = "training diverged: " + "x" * 600
    run.diverged(TrainingDiverged(reason), "min")
    assert [m["error"] for m in reports] == [reason[:300]]
    detail = run_of(store, run.run_id).data.tags[mr.TAG_OUTCOME_DETAIL]
    assert detail == f"TrainingDiverged: {reason}"[:500]


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


def test_ranking_a_task_reads_every_page_of_runs(ranked_store, monkeypatch):
    from mona_tune.tracking import best as bt

    uri, runs = ranked_store
    whole = [r.run_id for r in bt.rank_trials(uri, task="darcy")[0]]
    monkeypatch.setattr(bt, "SEARCH_PAGE", 1)
    assert [r.run_id for r in bt.rank_trials(uri, task="darcy")[0]] == whole
    assert {runs["a"], runs["b"]} <= set(whole)  # two pages of one run at least


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


# ---------------------------------------------------------------- one trial attempt (train_trial)
class TuneSession:
    """Stands in for the Tune session around the function trainable, with no Ray running: records
    each ``tune.report``, copies its checkpoint into ``folder/checkpoint_<n>`` as Tune's storage
    does, and raises what a test planned at a given report (``SystemExit``: the scheduler stops
    the trial there; another exception: the worker is lost)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.reports: list[tuple[dict, Path | None]] = []
        self.raise_at: dict[int, BaseException] = {}

    def report(self, metrics, *, checkpoint=None):
        n = len(self.reports)
        saved = None
        if checkpoint is not None:
            saved = self.folder / f"checkpoint_{len(list(self.folder.glob('checkpoint_*'))):06d}"
            shutil.copytree(checkpoint.path, saved)
        self.reports.append((dict(metrics), saved))
        if n in self.raise_at:
            raise self.raise_at[n]

    def metrics(self, key: str) -> list:
        return [m.get(key) for m, _ in self.reports]


TRIAL = dict(method="mona", n_train=24, n_test=8, batch_size=32, source_batch_size=8,
             warmup_epochs=1, epochs=2, probe_samples=40, device="cpu", lam=0.3, inner_lr=0.05)


@pytest.fixture
def attempt(store, tmp_path, monkeypatch, fast_source):
    """``attempt(trial_id, **settings)`` runs one trial attempt through ``train_trial`` on a real
    tiny trainer and the real store; returns (the session's record, the trial's settings).
    ``expect``: the exception the attempt must end with."""
    import ray.tune

    exp, parent = parent_run(store, tmp_path.name)

    def go(trial_id, config=None, checkpoint=None, raise_at=None, expect=None, **kw):
        s = TrialSettings(tracking_uri=store, experiment_id=exp, parent_run_id=parent,
                          search_name=tmp_path.name, task="darcy", metric="rel_l2",
                          searched=("lam", "inner_lr"), experiment_path=str(tmp_path), **kw)
        folder = tmp_path / trial_dir_name(trial_id)
        folder.mkdir(exist_ok=True)
        session = TuneSession(folder)
        session.raise_at = raise_at or {}
        monkeypatch.setattr(ray.tune, "report", session.report)
        with pytest.raises(expect) if expect else contextlib.nullcontext():
            train_trial(dict(config or TRIAL), s, trial_id=trial_id,
                        trial_name=f"name_{trial_id}", checkpoint=checkpoint,
                        node_tags={mr.TAG_NODE_IP: "10.1.2.3"})
        return session, s

    return go


def history(uri, run_id, key) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mr.get_client(uri).get_metric_history(run_id, key))


def test_a_trial_logs_and_reports_every_epoch_and_completes(attempt, store):
    session, s = attempt("new", checkpoint_every=2)
    run_id = session.reports[0][0]["mlflow_run_id"]
    # global epochs 1 (stage 1), 2 (stage-2 epoch 1), 3 (the last, reported with the results)
    assert session.metrics("global_epoch") == [1, 2, 3]
    assert session.metrics("stage") == [1, 2, 2]
    assert session.metrics("stage2_epoch") == [0, 1, 2]
    assert set(session.metrics("mlflow_run_id")) == {run_id}
    # checkpoints every 2nd global epoch, and with the final report
    assert [c is not None for _, c in session.reports] == [False, True, True]
    final = session.reports[-1][0]
    assert math.isfinite(final["test_rel_l2"]) and final["trial_setup_s"] > 0
    assert final["trial_callback_s"] > 0 and "seed" not in final and "epochs" not in final
    # MLflow holds every epoch once, at its global epoch, with the values Tune got
    assert history(store, run_id, "val_rel_l2") == \
        [(g, pytest.approx(v)) for g, v in zip([1, 2, 3], session.metrics("val_rel_l2"))]
    assert history(store, run_id, "test_rel_l2") == [(3, pytest.approx(final["test_rel_l2"]))]
    r = run_of(store, run_id)
    assert "seed" not in r.data.metrics and "stage1_epochs" not in r.data.metrics
    assert r.data.metrics["trial_setup_s"] == pytest.approx(final["trial_setup_s"])
    assert r.data.tags[mr.TAG_OUTCOME] == "completed"
    assert r.data.tags[mr.TAG_OUTCOME_DETAIL] == "completed 2 stage-2 epochs"
    assert r.data.tags[mr.TAG_NODE_IP] == "10.1.2.3"
    assert r.data.tags[mr.TAG_TRIAL_ID] == "new" and r.info.status == "FINISHED"
    assert r.info.run_name == "name_new"
    assert r.data.params["lam"] == "0.3" and r.data.params["searched"] == "lam,inner_lr"
    assert r.data.params["num_threads"] == "1"  # from cpus_per_trial
    arts = {a.path for a in mr.get_client(store).list_artifacts(run_id, mr.EMBEDDER_ARTIFACT)}
    assert arts == {f"{mr.EMBEDDER_ARTIFACT}/embedder.json",
                    f"{mr.EMBEDDER_ARTIFACT}/embedder.safetensors"}
    # the checkpoint names its run and epoch, with the validation value as its score
    ckpt = session.reports[1][1]
    state = json.loads((ckpt / TRIAL_STATE).read_text())
    assert state["run_id"] == run_id and state["trial_id"] == "new"
    assert state["global_epoch"] == 2
    assert state["score"] == pytest.approx(session.reports[1][0]["val_rel_l2"])
    assert state["trainer_files"] == {f.name: f.stat().st_size
                                      for f in (ckpt / TRAINER_DIR).iterdir()}
    # keep_checkpoints not set (cloud storage, Tune's own retention): the trial empties none
    assert all((c / TRAINER_DIR / "trainer.pt").is_file() for _, c in session.reports if c)


def test_a_lost_attempt_is_retried_from_its_newest_checkpoint(attempt, store):
    lost = RuntimeError("worker lost")
    first, s = attempt("retry", raise_at={1: lost}, expect=RuntimeError, keep_checkpoints=2)
    run_id = first.reports[0][0]["mlflow_run_id"]
    r = run_of(store, run_id)
    assert r.data.tags[mr.TAG_OUTCOME] == "failed" and r.info.status == "FAILED"
    assert r.data.tags[mr.TAG_OUTCOME_DETAIL] == "RuntimeError: worker lost"
    # Tune hands back the first checkpoint; the trial takes the newest whole one (global epoch 2)
    oldest = first.reports[0][1]
    again, _ = attempt("retry", checkpoint=tune_checkpoint(oldest), keep_checkpoints=2)
    assert again.metrics("global_epoch") == [3]
    assert again.reports[0][0]["mlflow_run_id"] == run_id
    r = run_of(store, run_id)
    assert r.data.tags["mona.restored_from_global_epoch"] == "2"
    assert r.data.tags["mona.attempts"] == "2"
    assert r.data.tags[mr.TAG_OUTCOME] == "completed" and r.info.status == "FINISHED"
    # no epoch logged twice; the resumed epoch continues the curve
    vals = history(store, run_id, "val_rel_l2")
    assert [g for g, _ in vals] == [1, 2, 3]
    assert vals[2][1] == pytest.approx(again.reports[0][0]["val_rel_l2"])
    # keep_checkpoints 2: of the three checkpoints the newest (the second attempt's) and the
    # better of the other two keep their trainer state
    folder = Path(s.experiment_path) / "trial_retry"
    score = {d.name: json.loads((d / TRIAL_STATE).read_text())["score"]
             for d in folder.iterdir()}
    better = min(("checkpoint_000000", "checkpoint_000001"), key=score.get)
    kept = [d.name for d in sorted(folder.iterdir()) if (d / TRAINER_DIR).is_dir()]
    assert kept == sorted([better, "checkpoint_000002"])


def tune_checkpoint(path: Path):
    from ray import tune

    return tune.Checkpoint.from_directory(str(path))


def test_a_completed_trial_is_reported_again_not_retrained(attempt, store):
    first, _ = attempt("done")
    run_id = first.reports[0][0]["mlflow_run_id"]
    before = history(store, run_id, "val_rel_l2")
    again, _ = attempt("done", checkpoint=tune_checkpoint(first.reports[1][1]))
    assert len(again.reports) == 1
    m, ckpt = again.reports[0]
    assert ckpt is None and m["mlflow_run_id"] == run_id
    assert m["stage"] == 2 and m["stage2_epoch"] == 2
    assert m["test_rel_l2"] == pytest.approx(first.reports[-1][0]["test_rel_l2"])
    assert not any(k.startswith("timing_") for k in m)
    assert history(store, run_id, "val_rel_l2") == before
    assert "mona.restored_from_global_epoch" not in run_of(store, run_id).data.tags


def test_a_trial_the_scheduler_stops_is_tagged_stopped_early(attempt, store):
    session, _ = attempt("asha", raise_at={1: SystemExit()}, expect=SystemExit)
    r = run_of(store, session.reports[0][0]["mlflow_run_id"])
    assert r.data.tags[mr.TAG_OUTCOME] == "stopped_early"
    assert r.data.tags["mona.stopped_at_global_epoch"] == "2"
    assert r.info.status == "FINISHED"
    # stopped at the final report (max_t reached): it completed
    session, _ = attempt("at-max-t", raise_at={2: SystemExit()}, expect=SystemExit)
    run_id = session.reports[0][0]["mlflow_run_id"]
    assert run_of(store, run_id).data.tags[mr.TAG_OUTCOME] == "completed"


def test_a_diverging_trial_ends_with_the_worst_value_and_no_retry(attempt, store, monkeypatch):
    monkeypatch.setenv("MONA_TUNE_FAULT", json.dumps([{"at": [2, 1], "kind": "nan"}]))
    session, s = attempt("nan", config={**TRIAL, "epochs": 3})  # returns: nothing to retry
    m, ckpt = session.reports[-1]
    assert m["val_rel_l2"] == math.inf and m["diverged"] == 1 and ckpt is None
    assert m["stage2_epoch"] == 3 and m["global_epoch"] == 4 and m["stage"] == 2
    assert "the training loss is nan" in m["error"]
    r = run_of(store, m["mlflow_run_id"])
    assert r.data.tags[mr.TAG_OUTCOME] == "diverged" and r.info.status == "FAILED"
    assert r.data.tags[mr.TAG_OUTCOME_DETAIL].startswith("TrainingDiverged: training diverged")
    # a max-mode search reports -inf, the worst there
    monkeypatch.setenv("MONA_TUNE_FAULT", json.dumps([{"at": [2, 1], "kind": "nan"}]))
    session, _ = attempt("nan-max", mode="max")
    assert session.reports[-1][0]["val_rel_l2"] == -math.inf


def test_without_warm_up_the_initial_embedder_is_logged_and_threads_follow_the_trial(
        attempt, store):
    import torch

    before = torch.get_num_threads()
    try:
        session, _ = attempt("ft", config={**TRIAL, "method": "ft"}, cpus_per_trial=2.6)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    run_id = session.reports[0][0]["mlflow_run_id"]
    assert session.metrics("global_epoch") == [1, 2]
    assert run_of(store, run_id).data.params["num_threads"] == "3"
    client = mr.get_client(store)
    assert [a.path for a in client.list_artifacts(run_id)] == [mr.EMBEDDER_ARTIFACT]
    # the trial's own num_threads wins; log_embedder False logs none
    session, _ = attempt("quiet", config={**TRIAL, "num_threads": 1}, cpus_per_trial=2,
                         log_embedder=False)
    run_id = session.reports[0][0]["mlflow_run_id"]
    assert run_of(store, run_id).data.params["num_threads"] == "1"
    assert client.list_artifacts(run_id) == []


def test_a_worker_lost_while_it_uploads_the_embedder_loses_no_embedder(attempt, store,
                                                                        monkeypatch):
    """The worker dies during the upload of the embedder at the end of stage 1 (the two-node
    test's driver kill once fell there); the next attempt starts the trial again in the same run
    and that run ends with its embedder, every epoch logged once."""
    real, calls = mr.log_artifacts, []

    def dies_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("worker lost during the upload")
        return real(*args, **kwargs)

    monkeypatch.setattr(mr, "log_artifacts", dies_once)
    first, _ = attempt("upload", expect=RuntimeError)
    assert first.reports == []  # lost before stage 1's report and checkpoint
    again, _ = attempt("upload")
    run_id = again.reports[0][0]["mlflow_run_id"]
    client = mr.get_client(store)
    runs = client.search_runs([run_of(store, run_id).info.experiment_id],
                              filter_string=f"tags.`{mr.TAG_TRIAL_ID}` = 'upload'")
    assert [r.info.run_id for r in runs] == [run_id]  # the same run, continued
    files = {a.path for a in client.list_artifacts(run_id, mr.EMBEDDER_ARTIFACT)}
    assert files == {f"{mr.EMBEDDER_ARTIFACT}/embedder.json",
                     f"{mr.EMBEDDER_ARTIFACT}/embedder.safetensors"}
    assert [g for g, _ in history(store, run_id, "global_epoch")] == [1, 2, 3]
    assert len(calls) == 2
