"""MLflow bookkeeping on a real store: concurrent writers on SQLite, child-run continuation, the
registry alias, `mona-tune best --export`, `mona-tune ui`, and a real tracking server."""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import empty_mlflow_store
from mona_tune.tracking import mlflow_runs as mr
from mona_tune.tracking.best import best_command, rank_trials


def _uri(tmp_path: Path) -> str:
    return empty_mlflow_store(tmp_path / "mlflow.db")


def _fake_embedder(d: Path, tag: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "embedder.json").write_text(json.dumps({"kind": "conv2d", "tag": tag}))
    (d / "embedder.safetensors").write_bytes(b"\0" * 64)
    return d


def test_retrying_backs_off_on_locked_database_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert mr.retrying(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        mr.retrying(lambda: (_ for _ in ()).throw(ValueError("other")))


def test_tracking_uri_defaults_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mr.default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert mr.normalize_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path.resolve()}/x.db"
    assert mr.normalize_tracking_uri("store.db") == f"sqlite:///{tmp_path.resolve()}/store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mr.default_tracking_uri() == "http://127.0.0.1:5999"
    assert mr.artifact_root("http://127.0.0.1:5999") is None


def _writer(uri, exp, parent, k, epochs, q):
    try:
        child = mr.open_child_run(uri, exp, parent, trial_id=f"t{k}", trial_name=f"trial{k}",
                                  search_name="conc", task="darcy", params={"lam": k / 10})
        for e in range(1, epochs + 1):
            mr.log_metrics(uri, child.run_id, {"val_rel_l2": 1.0 / e, "global_epoch": e}, step=e)
        mr.set_tags(uri, child.run_id, {mr.TAG_OUTCOME: "completed"})
        mr.end_run(uri, child.run_id)
        q.put(("ok", child.run_id))
    except Exception as e:  # surfaced in the parent
        q.put(("error", repr(e)))


def test_concurrent_trials_on_one_sqlite_store_lose_nothing(tmp_path):
    uri = _uri(tmp_path)
    exp = mr.ensure_experiment(uri, "darcy")
    parent = mr.start_parent_run(uri, exp, name="conc", task="darcy", params={"a": 1},
                                 space_yaml="searched: {}\n")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    n, epochs = 4, 25
    procs = [ctx.Process(target=_writer, args=(uri, exp, parent, k, epochs, q)) for k in range(n)]
    for p in procs:
        p.start()
    out = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(s == "ok" for s, _ in out), out
    runs = mr.child_runs(uri, exp, parent)
    assert len(runs) == n
    client = mr.get_client(uri)
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_rel_l2")]
        assert sorted(steps) == list(range(1, epochs + 1))


def test_child_run_is_continued_not_duplicated_and_registry_alias(tmp_path, capsys, monkeypatch):
    uri = _uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the registry follows the tracking store
    exp = mr.ensure_experiment(uri, "darcy")
    parent = mr.start_parent_run(uri, exp, name="s1", task="darcy",
                                 params={"metric": "val_rel_l2", "mode": "min"},
                                 space_yaml="searched: {}\n")
    kw = dict(trial_name="t", search_name="s1", task="darcy", params={"lam": 0.1})
    first = mr.open_child_run(uri, exp, parent, trial_id="a_00000", **kw)
    mr.log_metrics(uri, first.run_id, {"global_epoch": 1, "val_rel_l2": 0.5}, step=1)
    mr.log_metrics(uri, first.run_id, {"global_epoch": 2, "val_rel_l2": 0.4}, step=2)
    again = mr.open_child_run(uri, exp, parent, trial_id="a_00000", **kw)  # a retry
    assert again.run_id == first.run_id and again.logged_up_to == 2
    other = mr.open_child_run(uri, exp, parent, trial_id="a_00001",
                              **{**kw, "params": {"lam": 0.9}})
    mr.log_metrics(uri, other.run_id, {"global_epoch": 1, "val_rel_l2": 0.3,
                                       "source_probe_error": 0.2}, step=1)
    assert len(mr.child_runs(uri, exp, parent)) == 2

    for child, tag in ((first, "first"), (other, "other")):
        with __import__("tempfile").TemporaryDirectory() as d:
            mr.log_artifacts(uri, child.run_id, _fake_embedder(Path(d) / "e", tag), "embedder")
    v1 = mr.register_embedder(uri, "darcy", first.run_id)
    v2 = mr.register_embedder(uri, "darcy", other.run_id)
    client = mr.get_client(uri)
    assert client.get_model_version_by_alias("mona-darcy-embedder", "best").version == v2.version
    assert v1.version != v2.version

    import mlflow

    local = mlflow.artifacts.download_artifacts("models:/mona-darcy-embedder@best",
                                                dst_path=str(tmp_path / "dl"))
    assert json.loads((Path(local) / "embedder.json").read_text())["tag"] == "other"

    ranked, metric, mode, _ = rank_trials(uri, name="s1")
    assert [r.run_id for r in ranked] == [other.run_id, first.run_id]
    assert metric == "val_rel_l2" and mode == "min"
    out_dir = tmp_path / "export"
    assert best_command(name="s1", task=None, top=2, export=out_dir, tracking_uri=uri) == 0
    text = capsys.readouterr().out
    assert other.run_id in text and "exported" in text
    assert json.loads((out_dir / "embedder.json").read_text())["tag"] == "other"
    assert json.loads((out_dir / "mona_best.json").read_text())["run_id"] == other.run_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.mark.slow
def test_ui_serves_the_store_on_localhost_and_a_tracking_server_works_the_same(tmp_path):
    """`mona-tune ui` binds 127.0.0.1; the same server used as a remote tracking URI takes child
    runs, embedders and the registry alias exactly like SQLite."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    mr.ensure_experiment(uri, "darcy")  # the store exists
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mona_tune.cli", "ui", "--tracking-uri", uri,
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health")
        out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout \
            if Path("/usr/bin/ss").exists() or Path("/bin/ss").exists() else ""
        for line in out.splitlines():
            if f":{port} " in line:
                assert "127.0.0.1" in line, line
        server = f"http://127.0.0.1:{port}"
        exp = mr.ensure_experiment(server, "darcy")
        parent = mr.start_parent_run(server, exp, name="remote", task="darcy",
                                     params={"metric": "val_rel_l2", "mode": "min"},
                                     space_yaml="searched: {}\n")
        child = mr.open_child_run(server, exp, parent, trial_id="r_00000", trial_name="t",
                                  search_name="remote", task="darcy", params={"lam": 0.2})
        mr.log_metrics(server, child.run_id, {"val_rel_l2": 0.25, "global_epoch": 1}, step=1)
        mr.log_artifacts(server, child.run_id, _fake_embedder(tmp_path / "emb", "remote"),
                         "embedder")
        mv = mr.register_embedder(server, "darcy", child.run_id)
        assert mr.get_client(server).get_model_version_by_alias(
            "mona-darcy-embedder", "best").version == mv.version
        again = mr.open_child_run(server, exp, parent, trial_id="r_00000", trial_name="t",
                                  search_name="remote", task="darcy", params={"lam": 0.2})
        assert again.run_id == child.run_id
        assert best_command(name="remote", task=None, top=1, export=tmp_path / "x",
                            tracking_uri=server) == 0
        assert json.loads((tmp_path / "x" / "embedder.json").read_text())["tag"] == "remote"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_params_logged_again_keep_their_first_value(tmp_path):
    """A trial continued elsewhere logs its provenance again; a value that differs (a node's own
    cache path) cannot change an MLflow param: the first stays, the later one is a tag."""
    from mlflow.tracking import MlflowClient

    uri = _uri(tmp_path)
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("params-again"))
    mr.log_params(uri, run.info.run_id, {"data.train_file": "/node-a/f.mat", "data.n_train": 10})
    mr.log_params(uri, run.info.run_id, {"data.train_file": "/node-b/f.mat", "data.n_train": 10,
                                         "source.model": "embedded"})
    data = client.get_run(run.info.run_id).data
    assert data.params == {"data.train_file": "/node-a/f.mat", "data.n_train": "10",
                           "source.model": "embedded"}
    assert data.tags["mona.later.data.train_file"] == "/node-b/f.mat"
    assert "mona.later.data.n_train" not in data.tags
