"""The cluster package's plumbing without a cluster: the storage paths, what the preflight checks
on a node and what it leaves behind, where a Ray token is looked for, what the dashboard line
says, and which nodes can hold a trial. (The same code on a real two-node cluster:
tests/system/test_two_nodes.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from mona_tune.cluster import join, node_cache, nodes, preflight, storage
from mona_tune.errors import MonaError

# ---------------------------------------------------------------- storage


def test_storage_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.is_uri("s3://b/x") and storage.is_uri("file:///x") and not storage.is_uri("/x")
    assert storage.storage_path(None) == str(tmp_path / "runs")
    assert storage.storage_path("a/../b") == str(tmp_path / "b")
    assert storage.storage_path("~/r") == str(Path.home() / "r")
    assert storage.storage_path("s3://bucket/p") == "s3://bucket/p"
    assert storage.join("s3://b/x/", "y", "z.json") == "s3://b/x/y/z.json"
    assert storage.join("/a", "b") == "/a/b"


def test_storage_read_write_exists_delete(tmp_path):
    path = str(tmp_path / "deep" / "f.txt")
    assert storage.read_text(path) is None and not storage.exists(path)
    storage.write_bytes(path, b"hello", make_parent=True)
    assert storage.read_text(path) == "hello" and storage.exists(path)
    storage.write_bytes(path, b"again")
    assert Path(path).read_text() == "again"
    storage.delete(path)
    assert not Path(path).exists()
    storage.delete(path)  # gone already: fine
    uri = f"file://{tmp_path}/u.txt"
    storage.write_bytes(uri, b"via uri")
    assert storage.read_text(uri) == "via uri" and (tmp_path / "u.txt").read_text() == "via uri"


# ---------------------------------------------------------------- preflight on one node


class _Runtime:
    def __init__(self, node_id):
        self.node_id = node_id

    def get_node_id(self):
        return self.node_id


@pytest.fixture
def on_node(monkeypatch):
    """check_node as Ray runs it on the node named ``node_id``."""
    import ray

    def run(spec, node_id="n" * 56):
        monkeypatch.setattr(ray, "get_runtime_context", lambda: _Runtime(node_id))
        return preflight.check_node(spec)

    return run


def _spec(tmp_path, **kw):
    return preflight.PreflightSpec(storage=str(tmp_path / "runs"),
                                   tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", **kw)


def test_a_node_that_sees_everything_has_no_fault_and_writes_its_marker(tmp_path, on_node):
    shared = tmp_path / "shared"
    data = tmp_path / "data.h5"
    data.write_bytes(b"x")
    spec = _spec(tmp_path, shared_dirs=[("the store's folder", str(shared))],
                 inputs=[("--data-dir", str(data))])
    written, created = [], []
    preflight._driver_writes(spec, written, created)
    assert (tmp_path / "runs" / spec.marker).read_text() == spec.marker
    assert (shared / spec.marker).read_text() == spec.marker
    assert on_node(spec, "n1") == []
    assert (tmp_path / "runs" / f"{spec.marker}.n1").read_text() == "n1"
    preflight._clean([*written, str(tmp_path / "runs" / f"{spec.marker}.n1")], created)
    assert not (tmp_path / "runs").exists() and not shared.exists()  # made for the check only


def test_a_node_without_the_drivers_files_names_each_fault(tmp_path, on_node):
    spec = _spec(tmp_path, shared_dirs=[("the MLflow artifact root", str(tmp_path / "art"))],
                 inputs=[("--weights", str(tmp_path / "no.pt"))])
    faults = on_node(spec)  # the driver wrote nothing here: another machine's disk
    assert faults == [
        f"--storage {spec.storage} is not the driver's: a file the driver wrote there is missing "
        "on this node (use a filesystem every node mounts, or s3:// / gs://)",
        f"the MLflow artifact root {tmp_path / 'art'} is on the driver's disk only (a file the "
        "driver wrote there is missing on this node)",
        f"--weights {tmp_path / 'no.pt'} does not exist on this node"]


def test_a_node_that_cannot_reach_the_tracking_server_says_so(tmp_path, on_node):
    from proc_net import free_port

    spec = preflight.PreflightSpec(storage=str(tmp_path),
                                   tracking_uri=f"http://127.0.0.1:{free_port()}")
    preflight._driver_writes(spec, [], [])
    (fault,) = on_node(spec)
    assert "127.0.0.1" in fault and "tracking" in fault.lower()


def test_the_driver_cannot_create_its_storage_is_its_own_fault(tmp_path):
    (tmp_path / "file").write_text("x")
    spec = preflight.PreflightSpec(storage=str(tmp_path / "file" / "runs"),
                                   tracking_uri="sqlite:///m.db")
    with pytest.raises(MonaError, match=r"^--storage .*/file/runs: cannot create it"):
        preflight._driver_writes(spec, [], [])


def test_preflight_names_the_node_at_fault_and_leaves_nothing(tmp_path, monkeypatch):
    """preflight() with each node's check run here (the real Ray tasks: tests/system/test_two_nodes.py):
    the first fault is one line naming its node; the markers and folders made are removed."""
    good, bad = nodes.Node("a" * 56, "10.0.0.1", 2, 0), nodes.Node("b" * 56, "10.0.0.2", 2, 0)

    class Call:
        def __init__(self, node):
            self.node = node

        def remote(self, spec):
            if self.node is bad:
                return ["--data-dir /d does not exist on this node", "second fault"]
            storage.write_bytes(preflight._storage_marker(spec, "." + self.node.node_id),
                                self.node.node_id.encode())
            return []

    monkeypatch.setattr(preflight, "pinned", lambda fn, node, **kw: Call(node))
    monkeypatch.setattr(preflight, "gather", lambda refs, timeout, what: refs)
    spec = _spec(tmp_path)
    with pytest.raises(MonaError) as err:
        preflight.preflight(spec, [good, bad])
    assert str(err.value) == ("node 10.0.0.2 (bbbbbbbb): --data-dir /d does not exist on this "
                              "node (and 1 more faults)")
    assert not (tmp_path / "runs").exists()
    assert preflight.preflight(_spec(tmp_path), [good]) == []
    assert list((tmp_path / "runs").iterdir()) == []  # the folder stays, the markers go
    warn = preflight.preflight(_spec(tmp_path), [good, good])
    assert len(warn) == 1 and "2 Ray nodes share a SQLite tracking store" in warn[0]


# ---------------------------------------------------------------- joining


def test_where_a_ray_token_is_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert join._token_source({}) is None
    default = tmp_path / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("  \n")
    assert join._token_source({}) is None  # an empty file is no token
    default.write_text("tok")
    assert join._token_source({}) == str(default)
    other = tmp_path / "t"
    assert join._token_source({"RAY_AUTH_TOKEN_PATH": str(other)}) is None  # named, missing
    other.write_text("tok")
    assert join._token_source({"RAY_AUTH_TOKEN_PATH": str(other)}) == str(other)
    assert join._token_source({"RAY_AUTH_TOKEN": "x", "RAY_AUTH_TOKEN_PATH": str(other)}) == \
        "$RAY_AUTH_TOKEN"


def test_the_dashboard_line_names_where_the_token_is_never_the_token(monkeypatch):
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    assert "not running" in join.dashboard_help(None)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert join.dashboard_help("http://127.0.0.1:8265") == \
        "Ray dashboard: http://127.0.0.1:8265 (while the search runs)"
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cr3t-token")
    text = join.dashboard_help("http://127.0.0.1:8265")
    assert "s3cr3t-token" not in text
    assert "`ray get-auth-token` (it is kept in $RAY_AUTH_TOKEN)" in text
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert "(it is kept in ~/.ray/auth_token)" in join.dashboard_help("http://h:1")


# ---------------------------------------------------------------- node caches


def test_the_nodes_that_can_hold_a_trial():
    cpu = nodes.Node("c" * 56, "10.0.0.1", 4, 0)
    gpu = nodes.Node("g" * 56, "10.0.0.2", 2, 1)
    small = nodes.Node("s" * 56, "10.0.0.3", 1, 0)
    assert node_cache.trial_nodes([cpu, gpu, small], 2, 0) == [cpu, gpu]
    assert node_cache.trial_nodes([cpu, gpu, small], 1, 0.5) == [gpu]
    assert node_cache.trial_nodes([cpu, gpu, small], 1, 0) == [cpu, gpu, small]
    with pytest.raises(MonaError, match=r"no Ray node can hold a trial of 8 CPU and 0 GPU "
                                        r"\(node 10.0.0.1 \(cccccccc\): 4 CPU, 0 GPU, "):
        node_cache.trial_nodes([cpu, gpu, small], 8, 0)
