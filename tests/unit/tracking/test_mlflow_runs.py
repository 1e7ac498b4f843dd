"""Unit tests of the MLflow bookkeeping helpers (``mona_tune.tracking.mlflow_runs`` and
``mona_tune.tracking.best``), one behaviour at a time:

- tracking-URI handling: normalisation, redaction, scheme, SQLite path, artifact roots;
- the retry loop: what counts as a locked store or a server outage, the back-off delays, the
  attempt limit and the outage time bound (a fake clock and sleep, no real waiting);
- the code version (a throw-away git repository);
- experiments, parent and child runs, params, tags, metrics, artifacts, the registry, the
  embedder's location and download, on a real SQLite MLflow store (and a file store where a
  store that is not SQLite is needed);
- ``mona-tune best``: finding a search, ranking, number formatting, the table, JSON, export and
  its errors.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import empty_mlflow_store
from mona_tune.errors import MonaError
from mona_tune.tracking import best as bt
from mona_tune.tracking import mlflow_runs as mr


# ---------------------------------------------------------------- URIs
def test_normalize_tracking_uri_makes_sqlite_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    here = tmp_path.resolve()
    assert mr.normalize_tracking_uri("sub/x.db") == f"sqlite:///{here}/sub/x.db"
    assert mr.normalize_tracking_uri("~/x.db") == f"sqlite:///{here}/home/x.db"
    assert mr.normalize_tracking_uri("sqlite:///rel/y.db") == f"sqlite:///{here}/rel/y.db"
    assert mr.normalize_tracking_uri("sqlite:///~/y.db") == f"sqlite:///{here}/home/y.db"


def test_normalize_tracking_uri_leaves_other_uris_alone():
    for uri in ("sqlite:////abs/x.db", "sqlite:///:memory:", "sqlite:///", "http://h:5000/x.db",
                "postgresql://u@h/db", "notadb", "x.dbx", "file:///a/b"):
        assert mr.normalize_tracking_uri(uri) == uri


def test_redact_hides_only_the_password():
    assert mr.redact("http://user:secret@host:5000/p") == "http://user:***@host:5000/p"
    assert (mr.redact("postgresql+psycopg://me:pw@db.example:5432/mlflow")
            == "postgresql+psycopg://me:***@db.example:5432/mlflow")
    assert mr.redact("https://user:@host") == "https://user:***@host"
    for uri in ("http://host:5000/p", "http://user@host/p", "sqlite:////a/b.db",
                "/plain/path:x@y"):
        assert mr.redact(uri) == uri


def test_uri_scheme_is_the_lowercase_scheme_without_driver():
    assert mr.uri_scheme("postgresql+psycopg://u@h/db") == "postgresql"
    assert mr.uri_scheme("MySQL+PyMySQL://u@h/db") == "mysql"
    assert mr.uri_scheme("HTTP://h") == "http"
    assert mr.uri_scheme("sqlite:////a.db") == "sqlite"
    assert mr.uri_scheme("/plain/path+x") == ""
    assert mr.uri_scheme("store.db") == ""


def test_is_sqlite_only_for_sqlite_uris():
    assert mr.is_sqlite("sqlite:///x.db") is True
    assert mr.is_sqlite("sqlite:") is True
    assert mr.is_sqlite("SQLITE:///x.db") is False
    assert mr.is_sqlite("postgresql://h/db") is False
    assert mr.is_sqlite("x/sqlite:") is False


def test_sqlite_path_of_three_and_four_slash_uris():
    assert mr.sqlite_path("sqlite:////abs/dir/x.db") == Path("/abs/dir/x.db")
    assert mr.sqlite_path("sqlite:///abs/x.db") == Path("/abs/x.db")
    assert mr.sqlite_path("sqlite://host/x.db") is None
    assert mr.sqlite_path("http://h/x.db") is None
    assert mr.sqlite_path("/x.db") is None


def test_artifact_root_beside_sqlite_in_cwd_for_databases_none_for_servers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = tmp_path.resolve()
    assert mr.artifact_root("sqlite:////data/s/mlflow.db") == "file:///data/s/mlartifacts"
    for uri in ("postgresql://u@h/db", "postgresql+psycopg://u@h/db", "MYSQL://h/db",
                "mssql+pyodbc://h/db"):
        assert mr.artifact_root(uri) == f"file://{here}/mlartifacts"
    for uri in ("http://h:5000", "https://h", "file:///a/mlruns", "databricks", "oracle://h/db"):
        assert mr.artifact_root(uri) is None


def test_planned_artifact_location_on_sqlite_is_beside_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/never/created.db"
    assert mr.planned_artifact_location(uri, "darcy") == (
        f"file://{tmp_path}/never/mlartifacts/mona-tune-darcy")
    assert not (tmp_path / "never" / "created.db").exists()  # no store is opened


@pytest.fixture(scope="module")
def file_store(tmp_path_factory) -> str:
    """A store that is not SQLite (MLflow's file store), for the branches that ask the store."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path_factory.mktemp("filestore") / "mlruns").as_uri()
        mr.get_client(uri)  # the store is opened here, while allowed
        yield uri


def test_planned_artifact_location_asks_a_non_sqlite_store(file_store, tmp_path):
    uri = file_store
    assert mr.planned_artifact_location(uri, "darcy") is None  # not there: the store decides
    where = (tmp_path / "elsewhere").as_uri()
    mr.get_client(uri).create_experiment("mona-tune-darcy", artifact_location=where)
    assert mr.planned_artifact_location(uri, "darcy") == where
    assert mr.planned_artifact_location(uri, "pdebench-darcy") is None


def test_registered_model_name():
    assert mr.registered_model_name("darcy") == "mona-darcy-embedder"


# ---------------------------------------------------------------- error classification
class OperationalError(Exception):
    """Named like sqlalchemy's / sqlite3's error class."""


def test_is_locked_recognises_sqlite_lock_errors():
    assert mr._is_locked(sqlite3.OperationalError("database is locked"))
    assert mr._is_locked(RuntimeError("(x) Database Table Is Locked"))
    assert mr._is_locked(ValueError("DATABASE IS LOCKED"))
    assert mr._is_locked(OperationalError("the table was LOCKED by another writer"))
    assert not mr._is_locked(OperationalError("disk I/O error"))
    assert not mr._is_locked(RuntimeError("the account is locked"))
    assert not mr._is_locked(RuntimeError("database is busy"))


@pytest.mark.parametrize("text", ["Connection refused", "Max retries exceeded with url",
                                  "Failed to establish a new connection",
                                  "Connection aborted.", "RemoteDisconnected('closed')",
                                  "Connection reset by peer", "Read timed out. (read timeout=30)",
                                  "Service Temporarily Unavailable"])
def test_is_outage_recognises_each_outage_text(text):
    assert mr._is_outage(RuntimeError(f"API request failed: {text}"))


def test_is_outage_by_type_name_and_5xx_codes_only():
    assert mr._is_outage(ConnectionError("x"))
    assert mr._is_outage(RuntimeError("API request failed with error code 503 != 200"))
    assert mr._is_outage(RuntimeError("ERROR CODE 500"))
    assert not mr._is_outage(RuntimeError("API request failed with error code 404 != 200"))
    assert not mr._is_outage(RuntimeError("error code 5"))
    assert not mr._is_outage(RuntimeError("database is locked"))
    assert not mr._is_outage(ValueError("bad value"))


# ---------------------------------------------------------------- retrying
class Clock:
    """A fake monotonic clock that advances by what is slept; records the sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(mr.time, "sleep", c.sleep)
    monkeypatch.setattr(mr.time, "monotonic", c.monotonic)
    monkeypatch.setattr(mr.random, "random", lambda: 0.5)
    monkeypatch.setattr(mr, "_outage_bound_s", 0.0)
    return c


def failing(errors: list[BaseException], result="ok"):
    calls = []

    def fn(*args, **kwargs):
        calls.append((args, kwargs))
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return fn, calls


def test_retrying_passes_arguments_and_returns_the_result(clock):
    fn, calls = failing([])
    assert mr.retrying(fn, 1, "b", key=3) == "ok"
    assert calls == [((1, "b"), {"key": 3})] and clock.sleeps == []


def test_retrying_backs_off_exponentially_with_jitter_up_to_eight_seconds(clock):
    locked = sqlite3.OperationalError("database is locked")
    fn, calls = failing([locked] * 9, result=42)
    assert mr.retrying(fn, attempts=10) == 42
    assert len(calls) == 10
    assert clock.sleeps == pytest.approx([x * 1.5 for x in
                                          (0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 8.0, 8.0, 8.0)])


def test_retrying_gives_up_on_a_locked_store_after_the_attempts(clock):
    locked = sqlite3.OperationalError("database is locked")
    fn, calls = failing([locked] * 20)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        mr.retrying(fn, attempts=3)
    assert len(calls) == 3 and len(clock.sleeps) == 2
    fn, calls = failing([locked] * 20)
    with pytest.raises(sqlite3.OperationalError):
        mr.retrying(fn)
    assert len(calls) == 8  # the default


def test_retrying_raises_other_errors_at_once(clock):
    fn, calls = failing([ValueError("no")])
    with pytest.raises(ValueError, match="no"):
        mr.retrying(fn)
    assert len(calls) == 1 and clock.sleeps == []


def test_retrying_does_not_ride_out_outages_unless_told(clock):
    fn, calls = failing([ConnectionError("Connection refused")])
    with pytest.raises(ConnectionError):
        mr.retrying(fn)
    assert len(calls) == 1 and clock.sleeps == []


def test_ride_out_outages_bounds_the_retries_in_time(clock):
    mr.ride_out_outages(3.0)
    assert mr._outage_bound_s == 3.0
    down = ConnectionError("Connection refused")
    fn, calls = failing([down] * 2)
    assert mr.retrying(fn) == "ok"  # back after two failures
    assert clock.sleeps == pytest.approx([0.3, 0.6])
    # waited 0.3 + 0.6, the next delay 0.8: 1.7 s in all, at the bound exactly -> give up
    mr.ride_out_outages((0.2 * 1.5 + 0.4 * 1.5) + 0.8)
    clock.sleeps.clear()
    fn, calls = failing([down] * 10)
    with pytest.raises(ConnectionError):
        mr.retrying(fn)
    assert len(calls) == 3 and clock.sleeps == pytest.approx([0.3, 0.6])
    # outages do not count against the locked-store attempts
    mr.ride_out_outages(1000.0)
    fn, calls = failing([down] * 9)
    assert mr.retrying(fn, attempts=2) == "ok" and len(calls) == 10


def test_ride_out_outages_default_is_two_minutes(monkeypatch):
    monkeypatch.setattr(mr, "_outage_bound_s", 0.0)
    mr.ride_out_outages()
    assert mr._outage_bound_s == 120.0


# ---------------------------------------------------------------- code version
def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_code_version_reports_the_commit_and_a_dirty_tree(tmp_path, monkeypatch):
    from mona_tune import __version__

    root = tmp_path / "checkout"
    (root / "mona_tune" / "tracking").mkdir(parents=True)
    _git(root, "init", "-q")
    (root / "a.txt").write_text("1")
    _git(root, "add", "a.txt")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    head = _git(root, "rev-parse", "HEAD")
    monkeypatch.setattr(mr, "__file__", str(root / "mona_tune" / "tracking" / "mlflow_runs.py"))
    (root / "untracked.txt").write_text("x")  # untracked files do not make it dirty
    assert mr.code_version() == {"mona_tune_version": __version__, "git_commit": head}
    (root / "a.txt").write_text("2")
    assert mr.code_version() == {"mona_tune_version": __version__, "git_commit": head + "+dirty"}


def test_code_version_without_git(tmp_path, monkeypatch):
    from mona_tune import __version__

    monkeypatch.setattr(mr, "__file__", str(tmp_path / "pkg" / "tracking" / "mlflow_runs.py"))
    assert mr.code_version() == {"mona_tune_version": __version__}  # no .git
    (tmp_path / ".git").write_text("not a repository")
    assert mr.code_version() == {"mona_tune_version": __version__}  # git finds no commit
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert mr.code_version() == {"mona_tune_version": __version__}  # no git program


# ---------------------------------------------------------------- a real store
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    d = tmp_path_factory.mktemp("units") / "store"
    d.mkdir()
    return empty_mlflow_store(d / "mlflow.db"), d


def client(uri):
    return mr.get_client(uri)


def test_ensure_experiment_creates_it_beside_the_store(store):
    uri, d = store
    exp_id = mr.ensure_experiment(uri, "units-a")
    exp = client(uri).get_experiment(exp_id)
    assert exp.name == "mona-tune-units-a"
    assert exp.artifact_location == f"file://{d}/mlartifacts/mona-tune-units-a"
    assert exp.tags["mona.task"] == "units-a"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert mr.ensure_experiment(uri, "units-a") == exp_id  # found, not created again


def test_ensure_experiment_restores_a_deleted_one_and_marks_unmarked_ones(store):
    uri, _ = store
    c = client(uri)
    plain = c.create_experiment("mona-tune-units-plain")
    assert mr.ensure_experiment(uri, "units-plain") == plain
    assert c.get_experiment(plain).tags["mlflow.experimentKind"] == "custom_model_development"
    mine = c.create_experiment("mona-tune-units-mine",
                               tags={"mlflow.experimentKind": "genai_development"})
    c.delete_experiment(mine)
    assert mr.ensure_experiment(uri, "units-mine") == mine
    exp = c.get_experiment(mine)
    assert exp.lifecycle_stage == "active"
    assert exp.tags["mlflow.experimentKind"] == "genai_development"


class RacyClient:
    """A real client whose first ``n`` look-ups of an experiment by name miss: what a process
    sees when another one creates the experiment between its look-up and its create."""

    def __init__(self, real, n: int):
        self.real, self.n = real, n

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_experiment_by_name(self, name):
        if self.n > 0:
            self.n -= 1
            return None
        return self.real.get_experiment_by_name(name)


def test_ensure_experiment_created_concurrently_is_found_after_all(store, monkeypatch):
    uri, _ = store
    real = client(uri)
    theirs = real.create_experiment("mona-tune-units-race")
    monkeypatch.setattr(mr, "get_client", lambda u: RacyClient(real, 1))
    assert mr.ensure_experiment(uri, "units-race") == theirs
    monkeypatch.setattr(mr, "get_client", lambda u: RacyClient(real, 2))
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="already exists"):  # still not found: the error
        mr.ensure_experiment(uri, "units-race")


def test_start_parent_run_tags_params_code_version_and_space(store, tmp_path):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-p")
    many = {f"p{i:03d}": i for i in range(230)}
    run_id = mr.start_parent_run(uri, exp, name="srch", task="units-p",
                                 params={**many, "none": None, "long": "x" * 7000},
                                 space_yaml="searched:\n  lam: [0.1, 1]\n")
    run = client(uri).get_run(run_id)
    assert run.info.run_name == "srch" and run.info.experiment_id == exp
    assert run.info.status == "RUNNING"
    assert {k: run.data.tags[k] for k in ("mona.role", "mona.search_name", "mona.task")} == {
        "mona.role": "search", "mona.search_name": "srch", "mona.task": "units-p"}
    expected = {k: str(v) for k, v in many.items()}
    expected.update({"none": "", "long": "x" * 6000}, **mr.code_version())
    assert run.data.params == expected
    local = client(uri).download_artifacts(run_id, "space.yaml", str(tmp_path))
    assert Path(local).read_text() == "searched:\n  lam: [0.1, 1]\n"
    assert [a.path for a in client(uri).list_artifacts(run_id)] == ["space.yaml"]


def test_end_and_reopen_run(store):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-p")
    run_id = client(uri).create_run(exp).info.run_id
    mr.end_run(uri, run_id)
    info = client(uri).get_run(run_id).info
    assert info.status == "FINISHED" and info.end_time is not None
    mr.reopen_run(uri, run_id)
    assert client(uri).get_run(run_id).info.status == "RUNNING"
    mr.end_run(uri, run_id, "KILLED")
    assert client(uri).get_run(run_id).info.status == "KILLED"


def test_set_tags_stringifies_and_truncates(store):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-p")
    run_id = client(uri).create_run(exp).info.run_id
    mr.set_tags(uri, run_id, {"n": 3, "f": 0.5, "long": "y" * 6000, "none": None})
    tags = client(uri).get_run(run_id).data.tags
    assert (tags["n"], tags["f"], tags["none"]) == ("3", "0.5", "None")
    assert tags["long"] == "y" * 5000


def test_log_metrics_keeps_numbers_only_at_the_step(store):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-p")
    run_id = client(uri).create_run(exp).info.run_id
    before = int(time.time() * 1000)
    mr.log_metrics(uri, run_id, {"i": 3, "f": 0.25, "inf": math.inf, "nan": math.nan,
                                 "flag": True, "s": "text", "none": None}, step=4.0)
    after = int(time.time() * 1000)
    mr.log_metrics(uri, run_id, {"nan": math.nan, "flag": False}, step=5)  # nothing to log
    mr.log_metrics(uri, run_id, {"i": 7}, step=6)
    c = client(uri)
    got = c.get_run(run_id).data.metrics
    assert sorted(got) == ["f", "i", "inf"] and (got["i"], got["f"]) == (7.0, 0.25)
    assert got["inf"] >= 1e308  # kept (SQLite stores the largest float for inf)
    hist = c.get_metric_history(run_id, "i")
    assert [(m.step, m.value) for m in hist] == [(4, 3.0), (6, 7.0)]
    assert isinstance(hist[0].step, int)
    (f,) = c.get_metric_history(run_id, "f")
    assert before <= f.timestamp <= after


def test_log_artifact_and_log_artifacts(store, tmp_path):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-p")
    run_id = client(uri).create_run(exp).info.run_id
    (tmp_path / "f.txt").write_text("file")
    mr.log_artifact(uri, run_id, tmp_path / "f.txt")
    mr.log_artifact(uri, run_id, tmp_path / "f.txt", "sub")
    src = tmp_path / "dir"
    src.mkdir()
    (src / "a.txt").write_text("a")
    mr.log_artifacts(uri, run_id, src, "tree")
    c = client(uri)
    assert sorted(a.path for a in c.list_artifacts(run_id)) == ["f.txt", "sub", "tree"]
    assert [a.path for a in c.list_artifacts(run_id, "sub")] == ["sub/f.txt"]
    assert [a.path for a in c.list_artifacts(run_id, "tree")] == ["tree/a.txt"]


# ---------------------------------------------------------------- child runs
def _child(uri, exp, parent, trial_id, **params):
    return mr.open_child_run(uri, exp, parent, trial_id=trial_id, trial_name=f"name-{trial_id}",
                             search_name="cs", task="units-c", params=params)


@pytest.fixture(scope="module")
def family(store):
    """Two parents of experiment units-c; trial 't1' under both."""
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-c")
    p1 = mr.start_parent_run(uri, exp, name="cs", task="units-c", params={}, space_yaml="")
    p2 = mr.start_parent_run(uri, exp, name="cs2", task="units-c", params={}, space_yaml="")
    return uri, exp, p1, p2


def test_open_child_run_creates_a_tagged_run_with_params(family):
    uri, exp, p1, _ = family
    ch = _child(uri, exp, p1, "new", lam=0.5, name=None, n=3)
    assert ch == mr.ChildRun(ch.run_id, logged_up_to=-1, outcome=None, metrics={})
    run = client(uri).get_run(ch.run_id)
    assert run.info.run_name == "name-new" and run.info.experiment_id == exp
    assert run.data.tags["mlflow.parentRunId"] == p1
    assert {k: run.data.tags[k] for k in ("ray_trial_id", "mona.role", "mona.search_name",
                                          "mona.task", "mona.attempts")} == {
        "ray_trial_id": "new", "mona.role": "trial", "mona.search_name": "cs",
        "mona.task": "units-c", "mona.attempts": "1"}
    assert run.data.params == {"lam": "0.5", "name": "", "n": "3"}


def test_find_child_run_by_trial_and_parent(family):
    uri, exp, p1, p2 = family
    a = _child(uri, exp, p1, "t1").run_id
    b = _child(uri, exp, p2, "t1").run_id
    assert a != b
    assert mr.find_child_run(uri, exp, p1, "t1").info.run_id == a
    assert mr.find_child_run(uri, exp, p2, "t1").info.run_id == b
    assert mr.find_child_run(uri, exp, p1, "t9") is None
    assert _child(uri, exp, p2, "t1").run_id == b  # continued, not duplicated


def test_open_child_run_continues_an_interrupted_run(family):
    uri, exp, p1, _ = family
    first = _child(uri, exp, p1, "cont", lam=1)
    for e in (1, 2, 3):
        mr.log_metrics(uri, first.run_id, {"global_epoch": e, "val": 1 / e}, step=e)
    mr.set_tags(uri, first.run_id, {mr.TAG_OUTCOME: "stopped_early"})
    mr.end_run(uri, first.run_id, "FAILED")
    again = _child(uri, exp, p1, "cont", lam=1)
    assert again == mr.ChildRun(first.run_id, logged_up_to=3, outcome="stopped_early")
    run = client(uri).get_run(first.run_id)
    assert run.info.status == "RUNNING" and run.data.tags["mona.attempts"] == "2"
    third = _child(uri, exp, p1, "cont", lam=1)  # still running: continued as it is
    assert third == mr.ChildRun(first.run_id, logged_up_to=3, outcome="stopped_early")
    run = client(uri).get_run(first.run_id)
    assert run.info.status == "RUNNING" and run.data.tags["mona.attempts"] == "3"


def test_open_child_run_without_logged_epochs_and_without_attempts_tag(family):
    uri, exp, p1, _ = family
    c = client(uri)
    run = c.create_run(exp, tags={"ray_trial_id": "bare", "mlflow.parentRunId": p1})
    c.set_terminated(run.info.run_id, "KILLED")
    ch = _child(uri, exp, p1, "bare")
    assert ch == mr.ChildRun(run.info.run_id, logged_up_to=-1, outcome=None)
    got = c.get_run(run.info.run_id)
    assert got.info.status == "RUNNING" and got.data.tags["mona.attempts"] == "2"


def test_open_child_run_returns_a_completed_run_untouched(family):
    uri, exp, p1, _ = family
    first = _child(uri, exp, p1, "done")
    mr.log_metrics(uri, first.run_id, {"global_epoch": 4, "val": 0.5}, step=4)
    mr.set_tags(uri, first.run_id, {mr.TAG_OUTCOME: "completed"})
    mr.end_run(uri, first.run_id)
    again = _child(uri, exp, p1, "done")
    assert again == mr.ChildRun(first.run_id, logged_up_to=-1, outcome="completed",
                                metrics={"global_epoch": 4.0, "val": 0.5})
    run = client(uri).get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mona.attempts"] == "1"


def test_child_runs_and_iter_metric_keys(store):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-k")
    p1 = mr.start_parent_run(uri, exp, name="k1", task="units-k", params={}, space_yaml="")
    p2 = mr.start_parent_run(uri, exp, name="k2", task="units-k", params={}, space_yaml="")
    mine = []
    for i, metrics in enumerate(({"b": 1, "a": 2}, {"c": 3}, {})):
        ch = mr.open_child_run(uri, exp, p1, trial_id=f"k{i}", trial_name=f"k{i}",
                               search_name="k1", task="units-k", params={})
        mr.log_metrics(uri, ch.run_id, metrics, step=0)
        mine.append(ch.run_id)
    other = mr.open_child_run(uri, exp, p2, trial_id="k0", trial_name="k0", search_name="k2",
                              task="units-k", params={})
    mr.log_metrics(uri, other.run_id, {"zz": 1}, step=0)
    runs = mr.child_runs(uri, exp, p1)
    assert sorted(r.info.run_id for r in runs) == sorted(mine)
    assert mr.iter_metric_keys(runs) == ["a", "b", "c"]
    assert mr.iter_metric_keys([]) == []


# ---------------------------------------------------------------- registry and embedder
def _embedder(d: Path, tag: str) -> Path:
    (d / "sub").mkdir(parents=True)
    (d / "embedder.json").write_text(json.dumps({"tag": tag}))
    (d / "sub" / "w.bin").write_bytes(tag.encode())
    return d


def test_register_embedder_versions_and_alias(store):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-r")
    c = client(uri)
    r1 = c.create_run(exp).info.run_id
    r2 = c.create_run(exp).info.run_id
    v1 = mr.register_embedder(uri, "units-r", r1, tags={"val": 0.5, "search": "s1"})
    assert (v1.name, int(v1.version), v1.run_id) == ("mona-units-r-embedder", 1, r1)
    assert v1.source == f"runs:/{r1}/embedder"
    assert c.get_model_version("mona-units-r-embedder", "1").tags == {"val": "0.5",
                                                                      "search": "s1"}
    model = c.get_registered_model("mona-units-r-embedder")
    assert model.description == ("Stage-1 target embedders of mona-tune searches "
                                 "(load with `mona-tune best --export DIR`).")
    assert c.get_model_version_by_alias("mona-units-r-embedder", "best").version == 1
    v2 = mr.register_embedder(uri, "units-r", r2)  # the model exists already
    assert int(v2.version) == 2 and c.get_model_version("mona-units-r-embedder", "2").tags == {}
    assert c.get_model_version_by_alias("mona-units-r-embedder", "best").version == 2
    again = mr.register_embedder(uri, "units-r", r1)  # registered before: its version, no alias
    assert (int(again.version), again.run_id) == (1, r1)
    assert c.get_model_version_by_alias("mona-units-r-embedder", "best").version == 2
    assert len(c.search_model_versions("name = 'mona-units-r-embedder'")) == 2
    r3 = c.create_run(exp).info.run_id
    v3 = mr.register_embedder(uri, "units-r", r3, alias="champion")
    assert c.get_model_version_by_alias("mona-units-r-embedder", "champion").version == v3.version
    assert c.get_model_version_by_alias("mona-units-r-embedder", "best").version == 2


def test_register_embedder_raises_other_registry_errors(store):
    from mlflow.exceptions import MlflowException

    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-r")
    run_id = client(uri).create_run(exp).info.run_id
    with pytest.raises(MlflowException, match="Invalid model name 'mona-a/b-embedder'"):
        mr.register_embedder(uri, "a/b", run_id)


def test_embedder_location_is_a_local_path_for_sqlite_and_the_uri_otherwise(store):
    uri, d = store
    exp = mr.ensure_experiment(uri, "units-e")
    run_id = client(uri).create_run(exp).info.run_id
    assert mr.embedder_location(uri, run_id) == (
        f"{d}/mlartifacts/mona-tune-units-e/{run_id}/artifacts/embedder")
    remote = client(uri).create_experiment("units-remote", artifact_location="s3://bkt/x/")
    rid = client(uri).create_run(remote).info.run_id
    assert mr.embedder_location(uri, rid) == f"s3://bkt/x/{rid}/artifacts/embedder"


def test_download_embedder_into_new_and_existing_directories(store, tmp_path):
    uri, _ = store
    exp = mr.ensure_experiment(uri, "units-e")
    run_id = client(uri).create_run(exp).info.run_id
    mr.log_artifacts(uri, run_id, _embedder(tmp_path / "src", "T"), "embedder")
    dst = tmp_path / "new" / "deep"
    assert mr.download_embedder(uri, run_id, str(dst)) == dst
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == [
        "embedder.json", "sub", "sub/w.bin"]
    assert json.loads((dst / "embedder.json").read_text()) == {"tag": "T"}
    old = tmp_path / "old"
    (old / "sub").mkdir(parents=True)
    (old / "sub" / "stale.bin").write_bytes(b"stale")
    (old / "embedder.json").write_text("stale")
    (old / "keep.txt").write_text("keep")
    assert mr.download_embedder(uri, run_id, old) == old
    assert sorted(str(p.relative_to(old)) for p in old.rglob("*")) == [
        "embedder.json", "keep.txt", "sub", "sub/w.bin"]
    assert (old / "sub" / "w.bin").read_bytes() == b"T"
    assert json.loads((old / "embedder.json").read_text()) == {"tag": "T"}


# ---------------------------------------------------------------- mona-tune best
def test_store_exists_only_checks_sqlite_files(tmp_path):
    bt._store_exists("http://127.0.0.1:1")  # a server: nothing to check
    (tmp_path / "there.db").write_bytes(b"")
    bt._store_exists(f"sqlite:///{tmp_path}/there.db")
    with pytest.raises(MonaError) as e:
        bt._store_exists(f"sqlite:///{tmp_path}/none.db")
    assert str(e.value) == (f"--tracking-uri sqlite:///{tmp_path}/none.db: no MLflow store at "
                            f"{tmp_path}/none.db (run a search first, or point --tracking-uri "
                            "at the store)")


@pytest.fixture(scope="module")
def searches(store, tmp_path_factory):
    """On the module's store: task 'darcy' with search 'alpha' twice (the later one has trials
    a1, a2, a3, a4), 'beta' (metric param missing; b1); task 'pdebench-darcy' with 'alpha'
    (max; p1, p2); an unrelated experiment."""
    uri, _ = store
    d = tmp_path_factory.mktemp("best")
    c = mr.get_client(uri)
    c.create_experiment("unrelated")
    exp = mr.ensure_experiment(uri, "darcy")
    old = mr.start_parent_run(uri, exp, name="alpha", task="darcy",
                              params={"metric": "val_rel_l2", "mode": "min"}, space_yaml="")
    time.sleep(0.01)
    alpha = mr.start_parent_run(uri, exp, name="alpha", task="darcy",
                                params={"metric": "val_rel_l2", "mode": "min"}, space_yaml="")
    ids = {}

    def trial(exp_id, parent, tid, search, task, metrics, outcome=None, **params):
        ch = mr.open_child_run(uri, exp_id, parent, trial_id=tid, trial_name=tid,
                               search_name=search, task=task, params=params)
        for k, v in metrics.items():
            c.log_metric(ch.run_id, k, v, step=1)
        if outcome:
            mr.set_tags(uri, ch.run_id, {mr.TAG_OUTCOME: outcome})
        ids[tid] = ch.run_id

    trial(exp, old, "o1", "alpha", "darcy", {"val_rel_l2": 0.01})
    trial(exp, alpha, "a1", "alpha", "darcy",
          {"val_rel_l2": 0.25, "test_rel_l2": 0.3, "source_probe_error": 2.0},
          outcome="completed", lam=0.5, inner_lr=0.001, searched="lam,,inner_lr")
    trial(exp, alpha, "a2", "alpha", "darcy", {"val_rel_l2": 0.125, "test_rel_l2": 0.2},
          outcome="stopped_early", lam=1234567, searched="lam")
    trial(exp, alpha, "a3", "alpha", "darcy", {"val_rel_l2": math.nan})
    trial(exp, alpha, "a4", "alpha", "darcy", {"other": 1.0})
    beta = mr.start_parent_run(uri, exp, name="beta", task="darcy", params={}, space_yaml="")
    trial(exp, beta, "b1", "beta", "darcy", {"val_rel_l2": 0.5})
    gamma = mr.start_parent_run(uri, exp, name="gamma", task="darcy",
                                params={"metric": "val_interval_err"}, space_yaml="")
    trial(exp, gamma, "g1", "gamma", "darcy", {"val_interval_err": 0.4, "test_interval_err": 0.5})
    trial(exp, gamma, "g2", "gamma", "darcy", {"val_interval_err": 0.2, "test_interval_err": 0.3})
    # not a trial: never ranked, whatever it logged
    other = c.create_run(exp, tags={"mona.role": "search"})
    c.log_metric(other.info.run_id, "val_rel_l2", 0.001)
    # a search without the task tag and params (no metric): the task given decides the metric
    c.create_run(exp, tags={"mona.role": "search", "mona.search_name": "legacy"})
    # a search whose mode was logged empty (None): minimised
    mr.start_parent_run(uri, exp, name="eps", task="darcy",
                        params={"metric": "val_interval_err", "mode": None}, space_yaml="")
    exp2 = mr.ensure_experiment(uri, "pdebench-darcy")
    pal = mr.start_parent_run(uri, exp2, name="alpha", task="pdebench-darcy",
                              params={"metric": "val_score", "mode": "max"}, space_yaml="")
    trial(exp2, pal, "p1", "alpha", "pdebench-darcy", {"val_score": 0.2})
    trial(exp2, pal, "p2", "alpha", "pdebench-darcy", {"val_score": 0.7})
    # a trial run without the bookkeeping tags (only its role) and a failed status
    bare = c.create_run(exp, tags={"mona.role": "trial"})
    c.log_metric(bare.info.run_id, "val_rel_l2", 0.75)
    c.set_terminated(bare.info.run_id, "FAILED")
    ids["bare"] = bare.info.run_id
    emb = _embedder(d / "emb", "a2")
    mr.log_artifacts(uri, ids["a2"], emb, "embedder")
    assert math.isnan(c.get_run(ids["a3"]).data.metrics["val_rel_l2"])
    return uri, ids, {"old": old, "alpha": alpha, "beta": beta, "pal": pal}


def test_experiments_by_task_or_all_of_mona_tune(searches):
    uri, _, _ = searches
    c = mr.get_client(uri)
    assert [e.name for e in bt._experiments(c, "darcy")] == ["mona-tune-darcy"]
    assert bt._experiments(c, "nope") == []
    every = [e.name for e in c.search_experiments()]
    ours = sorted(n for n in every if n.startswith("mona-tune-"))
    assert {"unrelated", "mona-tune-darcy", "mona-tune-pdebench-darcy"} <= set(every)
    assert sorted(e.name for e in bt._experiments(c, None)) == ours
    assert sorted(e.name for e in bt._experiments(c, "")) == ours


def test_find_search_takes_the_latest_of_that_name(searches):
    uri, _, parents = searches
    assert bt.find_search(uri, "alpha", "darcy").info.run_id == parents["alpha"]
    assert bt.find_search(uri, "alpha", "pdebench-darcy").info.run_id == parents["pal"]
    assert bt.find_search(uri, "alpha").info.run_id == parents["pal"]  # latest of all tasks
    assert bt.find_search(uri, "beta").info.run_id == parents["beta"]


def test_find_search_errors(searches, tmp_path):
    uri, _, _ = searches
    with pytest.raises(MonaError) as e:
        bt.find_search(uri, "delta")
    assert str(e.value) == f"--name delta: no search of that name in {uri}"
    with pytest.raises(MonaError) as e:
        bt.find_search(uri, "alpha", "nope")
    assert str(e.value) == f"--name alpha: no mona-tune experiment in {uri}"


def test_rank_trials_of_a_search(searches):
    uri, ids, parents = searches
    ranked, metric, mode, parent = bt.rank_trials(uri, name="alpha", task="darcy")
    assert (metric, mode, parent.info.run_id) == ("val_rel_l2", "min", parents["alpha"])
    assert [r.run_id for r in ranked] == [ids["a2"], ids["a1"]]  # a3: nan, a4: no metric
    a2, a1 = ranked
    assert a1 == bt.Ranked(run_id=ids["a1"], trial_id="a1", search="alpha", outcome="completed",
                           metric=0.25, metrics={"val_rel_l2": 0.25, "test_rel_l2": 0.3,
                                                 "source_probe_error": 2.0},
                           params={"lam": "0.5", "inner_lr": "0.001",
                                   "searched": "lam,,inner_lr"},
                           searched=["lam", "inner_lr"])
    assert (a2.outcome, a2.metric, a2.searched) == ("stopped_early", 0.125, ["lam"])
    ranked, metric, mode, _ = bt.rank_trials(uri, name="alpha", task="pdebench-darcy")
    assert (metric, mode) == ("val_score", "max")
    assert [r.run_id for r in ranked] == [ids["p2"], ids["p1"]]


def test_rank_trials_of_a_search_without_metric_uses_the_task_default(searches):
    uri, ids, parents = searches
    ranked, metric, mode, parent = bt.rank_trials(uri, name="beta")
    assert (metric, mode, parent.info.run_id) == ("val_rel_l2", "min", parents["beta"])
    assert [(r.trial_id, r.outcome, r.metric, r.searched) for r in ranked] == [
        ("b1", "running", 0.5, [])]


def test_rank_trials_of_a_search_without_mode_is_minimised(searches, capsys):
    uri, ids, _ = searches
    ranked, metric, mode, _ = bt.rank_trials(uri, name="gamma")
    assert (metric, mode) == ("val_interval_err", "min")
    assert [r.trial_id for r in ranked] == ["g2", "g1"]
    assert bt.rank_trials(uri, name="eps")[:3] == ([], "val_interval_err", "min")
    assert bt.rank_trials(uri, name="legacy", task="darcy")[:3] == ([], "val_rel_l2", "min")
    # the test metric of val_interval_err is test_interval_err (only the prefix is replaced)
    assert bt.best_command(name="gamma", task=None, top=1, export=None, tracking_uri=uri,
                           as_json=True) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["val_interval_err"], row["test_interval_err"]) == (0.2, 0.3)


def test_rank_trials_of_a_task_over_all_its_searches(searches):
    uri, ids, _ = searches
    for task in ("darcy", None):
        ranked, metric, mode, parent = bt.rank_trials(uri, task=task)
        assert (metric, mode, parent) == ("val_rel_l2", "min", None)
        assert [r.run_id for r in ranked] == [ids[t] for t in ("o1", "a2", "a1", "b1", "bare")]
    bare = ranked[-1]
    assert (bare.trial_id, bare.search, bare.outcome, bare.searched) == ("?", "?", "failed", [])
    ranked, metric, mode, _ = bt.rank_trials(uri, task="pdebench-darcy")
    assert (metric, mode) == ("val_nrmse", "min")
    assert ranked == []
    with pytest.raises(MonaError) as e:
        bt.rank_trials(uri, task="nope")
    assert str(e.value) == f"--task nope: no searches of that task in {uri}"


def test_fmt_numbers_for_the_table():
    cases = {None: "-", "abc": "abc", 3: "3", "3": "3", -7: "-7", 3.0: "3", 0.123456: "0.1235",
             "0.5": "0.5", 999999: "999999", 1000000: "1e+06", "12345.0": "1.234e+04",
             "12345e0": "1.234e+04", "12345E0": "1.234e+04", 1.5e-7: "1.5e-07", "nan": "nan",
             -999999: "-999999", (1, 2): "(1, 2)"}
    assert {k: bt._fmt(k) for k in cases} == cases


def test_export_best_writes_the_embedder_and_its_record(searches, tmp_path, monkeypatch):
    uri, ids, _ = searches
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    best = bt.Ranked(run_id=ids["a2"], trial_id="a2", search="alpha", outcome="completed",
                     metric=0.125, metrics={"val_rel_l2": 0.125},
                     params={"lam": "1", "searched": "lam"}, searched=["lam"])
    out = tmp_path / "empty"
    out.mkdir()
    assert bt.export_best(uri, best, str(out), "val_rel_l2") == out
    import os

    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    record = {"run_id": ids["a2"], "trial_id": "a2", "search": "alpha", "metric": "val_rel_l2",
              "value": 0.125, "metrics": {"val_rel_l2": 0.125},
              "train_config_params": {"lam": "1"}}
    assert (out / "mona_best.json").read_text() == json.dumps(record, indent=2)
    assert json.loads((out / "embedder.json").read_text()) == {"tag": "a2"}


def test_export_best_errors(searches, tmp_path):
    uri, ids, _ = searches
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    best = bt.Ranked(run_id=ids["a1"], trial_id="a1", search="alpha", outcome="completed",
                     metric=0.25)
    with pytest.raises(MonaError) as e:
        bt.export_best(uri, best, full, "val_rel_l2")
    assert str(e.value) == f"--export {full}: directory exists and is not empty"
    with pytest.raises(MonaError) as e:  # a1 has no embedder
        bt.export_best(uri, best, tmp_path / "out", "val_rel_l2")
    assert str(e.value) == f"--export: run {ids['a1']} has no embedder/ artifact (MlflowException)"


def test_best_command_table(searches):
    import io

    uri, ids, _ = searches
    out = io.StringIO()
    assert bt.best_command(name="alpha", task="darcy", top=5, export=None, tracking_uri=uri,
                           out=out) == 0
    a1, a2 = ids["a1"], ids["a2"]
    assert out.getvalue().splitlines() == [
        f"best trials of search alpha by val_rel_l2 (min), 2 ranked, store {uri}",
        "#  run id" + " " * 28 + "trial  outcome        val_rel_l2  test_rel_l2  probe_err  "
        "inner_lr  lam      ",
        f"1  {a2}  a2     stopped_early  0.125       0.2          -          -         "
        "1.235e+06",
        f"2  {a1}  a1     completed      0.25        0.3          2          0.001     0.5"
        "      ",
    ]
    out = io.StringIO()
    assert bt.best_command(name=None, task=None, top=1, export=None, tracking_uri=uri,
                           out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"best trials of all searches of task darcy by val_rel_l2 (min), 5 ranked, store {uri}"
    assert lines[2].split() == ["1", ids["o1"], "o1", "running", "0.01", "-", "-"]
    assert len(lines) == 3


def test_best_command_json_and_export(searches, tmp_path, capsys):
    import io

    uri, ids, _ = searches
    out = io.StringIO()
    assert bt.best_command(name="alpha", task="darcy", top=1, export=tmp_path / "x",
                           tracking_uri=uri, as_json=True, out=out) == 0
    assert json.loads(out.getvalue()) == [{
        "rank": 1, "run_id": ids["a2"], "trial_id": "a2", "search": "alpha",
        "outcome": "stopped_early", "val_rel_l2": 0.125, "test_rel_l2": 0.2,
        "source_probe_error": None, "params": {"lam": "1234567"}}]
    assert out.getvalue() == json.dumps(json.loads(out.getvalue()), indent=2) + "\n"
    assert capsys.readouterr().err == (f"exported the embedder of run {ids['a2']} to "
                                       f"{tmp_path / 'x'} (use: mona-tune train "
                                       f"--init-embedder {tmp_path / 'x'})\n")
    assert json.loads((tmp_path / "x" / "embedder.json").read_text()) == {"tag": "a2"}
    record = json.loads((tmp_path / "x" / "mona_best.json").read_text())
    assert (record["run_id"], record["metric"], record["value"]) == (ids["a2"], "val_rel_l2", 0.125)
    out = io.StringIO()
    assert bt.best_command(name="alpha", task="darcy", top=2, export=tmp_path / "y",
                           tracking_uri=uri, out=out) == 0
    assert out.getvalue().splitlines()[-1] == (
        f"exported the embedder of run {ids['a2']} to {tmp_path / 'y'} "
        f"(use: mona-tune train --init-embedder {tmp_path / 'y'})")
    assert capsys.readouterr().err == ""


def test_best_command_json_rows_of_several_trials(searches, capsys):
    uri, ids, _ = searches
    assert bt.best_command(name="alpha", task="darcy", top=2, export=None, tracking_uri=uri,
                           as_json=True) == 0  # default out: stdout
    got = json.loads(capsys.readouterr().out)
    assert [(r["rank"], r["run_id"]) for r in got] == [(1, ids["a2"]), (2, ids["a1"])]
    assert got[1]["params"] == {"lam": "0.5", "inner_lr": "0.001"}
    assert got[1]["source_probe_error"] == 2.0 and got[1]["test_rel_l2"] == 0.3


def test_best_command_finds_the_store_from_environment_and_relative_paths(searches, monkeypatch,
                                                                          capsys):
    uri, ids, _ = searches
    path = mr.sqlite_path(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert bt.best_command(name="beta", task=None, top=3, export=None, tracking_uri=None,
                           as_json=True) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [ids["b1"]]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(path.parent)
    assert bt.best_command(name="beta", task=None, top=3, export=None, tracking_uri=path.name,
                           as_json=True) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [ids["b1"]]


def test_best_command_without_task_or_name_on_a_store_without_trials(file_store):
    mr.ensure_experiment(file_store, "darcy")
    with pytest.raises(MonaError) as e:
        bt.best_command(name=None, task=None, top=1, export=None, tracking_uri=file_store)
    assert str(e.value) == f"task darcy: no trial in {file_store} reported val_rel_l2"


def test_best_command_errors(searches):
    uri, _, _ = searches
    with pytest.raises(MonaError) as e:
        bt.best_command(name="alpha", task=None, top=0, export=None, tracking_uri=uri)
    assert str(e.value) == "--top 0: must be at least 1"
    with pytest.raises(MonaError) as e:
        bt.best_command(name=None, task="pdebench-darcy", top=1, export=None, tracking_uri=uri)
    assert str(e.value) == f"task pdebench-darcy: no trial in {uri} reported val_nrmse"
    exp = mr.ensure_experiment(uri, "darcy")
    mr.start_parent_run(uri, exp, name="empty", task="darcy", params={}, space_yaml="")
    with pytest.raises(MonaError) as e:
        bt.best_command(name="empty", task=None, top=1, export=None, tracking_uri=uri)
    assert str(e.value) == f"search empty: no trial in {uri} reported val_rel_l2"
