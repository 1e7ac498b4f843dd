"""The cluster pieces that need no Ray: what travels to the trials, address and store checks,
MLflow's allowed hosts, the preflight spec of a search, the cache shipped between nodes."""

from __future__ import annotations

import socket
import time

import pytest

from mona_tune.errors import MonaError
from mona_tune.cluster import join, nodes, preflight
from mona_tune.tracking import server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def test_forwarded_env_takes_what_trials_need_and_nothing_else():
    env = {"MONA_TUNE_CACHE": "/shared/cache", "MLFLOW_TRACKING_TOKEN": "t",
           "MLFLOW_TRACKING_URI": "http://h:5000", "MLFLOW_S3_ENDPOINT_URL": "http://s3",
           "AWS_SECRET_ACCESS_KEY": "s", "AWS_PROFILE": "p", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
           "HOME": "/root", "PATH": "/bin", "RAY_AUTH_TOKEN": "x", "CUDA_VISIBLE_DEVICES": "0",
           "MLFLOW_SERVER_ALLOWED_HOSTS": "h"}
    got = join.forwarded_env(env)
    assert set(got) == {"MONA_TUNE_CACHE", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI",
                        "MLFLOW_S3_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                        "GOOGLE_APPLICATION_CREDENTIALS"}
    assert got["MONA_TUNE_CACHE"] == "/shared/cache"


@pytest.mark.parametrize("address, default, expected", [
    ("10.0.0.5:6379", 1, ("10.0.0.5", 6379)),
    ("head-node", 6379, ("head-node", 6379)),
    ("ray://head:10001", 1, ("head", 10001)),
    ("http://127.0.0.1:8265", 1, ("127.0.0.1", 8265)),
    ("[::1]:6380", 1, ("::1", 6380)),
])
def test_host_port(address, default, expected):
    assert join.host_port(address, default) == expected


def test_host_port_rejects_a_bad_port():
    with pytest.raises(MonaError, match="not a number"):
        join.host_port("head:port", 6379)


def test_no_ray_at_an_address_is_one_line_within_seconds():
    t0 = time.time()
    with pytest.raises(MonaError, match="no Ray cluster answers there"):
        join.check_address(f"127.0.0.1:{_closed_port()}")
    assert time.time() - t0 < 10


def test_store_fault_names_an_unreachable_server_and_database_quickly():
    t0 = time.time()
    fault = server.store_fault(f"http://127.0.0.1:{_closed_port()}")
    assert "not reachable (connection refused)" in fault
    fault = server.store_fault(f"postgresql://u:pw@127.0.0.1:{_closed_port()}/db")
    assert "database not reachable" in fault and "pw" not in fault and "u:***@" in fault
    assert time.time() - t0 < 15
    assert server.store_fault("sqlite:////tmp/x.db") is None  # a file: the preflight's question


def test_store_fault_names_a_missing_database_driver():
    fault = server.store_fault("mysql://u@127.0.0.1:3306/db")
    assert "database driver" in fault and "pip install 'mona-tune[mysql]'" in fault


def test_allowed_hosts_cover_the_names_with_any_port_and_loopback():
    hosts = server.allowed_hosts("0.0.0.0", ["head-node", "10.0.0.5", "mlflow:5000"]).split(",")
    for h in ("head-node", "head-node:*", "10.0.0.5", "10.0.0.5:*", "mlflow:5000",
              "localhost:*", "127.0.0.1:*", "[::1]", "[[]::1]:*"):
        assert h in hosts
    from mlflow.server.security_utils import is_allowed_host_header

    assert is_allowed_host_header(hosts, "head-node:5000")
    assert is_allowed_host_header(hosts, "[::1]:5000")
    assert not is_allowed_host_header(hosts, "evil.example:5000")
    assert not is_allowed_host_header(hosts, "mlflow:5001")


def test_local_dir():
    assert server.local_dir("file:///srv/mlartifacts/x") == "/srv/mlartifacts/x"
    assert server.local_dir("/srv/a") == "/srv/a"
    for remote in ("mlflow-artifacts:/1", "s3://b/p", None):
        assert server.local_dir(remote) is None


def test_preflight_spec_of_a_search(tmp_path):
    from mona_tune.config import SearchConfig
    from mona_tune.search.driver import preflight_spec

    scfg = SearchConfig(space_file="x", name="n", storage=str(tmp_path / "runs"),
                        tracking_uri=f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    spec = preflight_spec(scfg, {"data_dir": "/data/darcy", "source_data": "cifar10:/data/c10",
                                 "weights": "/models/swin.safetensors"})
    assert spec.shared_dirs == [("the SQLite tracking store's folder", str(tmp_path / "db"))]
    assert dict(spec.inputs) == {"--data-dir": "/data/darcy", "--source-data": "/data/c10",
                                 "--weights": "/models/swin.safetensors"}
    assert spec.marker.startswith(preflight.MARKER_PREFIX)


def test_cache_files_travel_between_node_caches(tmp_path, monkeypatch):
    """What one node prepared is written whole into another node's cache, once."""
    from mona_tune import cache
    from mona_tune.cluster.node_cache import install_files

    monkeypatch.setenv("MONA_TUNE_CACHE", str(tmp_path / "a"))
    entry = cache.cache_dir("source", "k1")
    (entry / "model.pt").write_bytes(b"weights")
    assert ("source", "k1") in cache.used_entries()
    files = {"source/k1/model.pt": b"weights", "data/k2/a.mat": b"x" * 10}
    monkeypatch.setenv("MONA_TUNE_CACHE", str(tmp_path / "b"))
    assert install_files(files) == 2
    assert (tmp_path / "b" / "data" / "k2" / "a.mat").read_bytes() == b"x" * 10
    assert install_files(files) == 0  # complete: nothing written again
    assert not list((tmp_path / "b").rglob("*.part"))


# ---------------------------------------------------------------- a node lost during a search
def test_lost_nodes_are_those_alive_at_the_start_and_not_at_the_end(monkeypatch):
    import ray

    start = [nodes.Node("a" * 56, "10.0.0.1", 1, 0), nodes.Node("b" * 56, "10.0.0.2", 1, 0),
             nodes.Node("c" * 56, "10.0.0.3", 1, 0)]
    monkeypatch.setattr(ray, "nodes", lambda: [
        {"NodeID": "a" * 56, "Alive": True}, {"NodeID": "b" * 56, "Alive": False},
        {"NodeID": "d" * 56, "Alive": True}])  # c: gone from the table; d: joined later
    assert nodes.lost_nodes(start) == start[1:]


def _child(trial, node, ip, ran_on=None, restored=None, outcome="completed"):
    from types import SimpleNamespace

    from mona_tune.tracking import mlflow_runs as mr

    tags = {mr.TAG_TRIAL_ID: trial, mr.TAG_NODE_ID: node, mr.TAG_NODE_IP: ip,
            mr.TAG_OUTCOME: outcome}
    if ran_on:
        tags["mona.node_ids"] = ",".join(ran_on)
    if restored is not None:
        tags["mona.restored_from_global_epoch"] = str(restored)
    return SimpleNamespace(data=SimpleNamespace(tags=tags))


def test_the_summary_names_a_lost_node_and_what_became_of_its_trials(monkeypatch):
    from mona_tune.config import SearchConfig
    from mona_tune.report import summary
    from mona_tune.search.results import SearchOutcome, lost_node_trials
    from mona_tune.tracking import mlflow_runs as mr

    head, b, c = "h" * 56, "b" * 56, "c" * 56
    children = [
        _child("t1", head, "10.0.0.1", [head]),
        _child("t2", head, "10.0.0.1", [b, head], restored=2),  # continued from a checkpoint
        _child("t3", head, "10.0.0.1", [head, b, head]),  # lost before its first checkpoint
        _child("t4", b, "10.0.0.2", [b]),  # completed there before the node was lost
        _child("t5", head, "10.0.0.1"),  # a run from before mona.node_ids
    ]
    monkeypatch.setattr(mr, "child_runs", lambda *a: children)
    lost = lost_node_trials("uri", "1", "parent", [nodes.Node(b, "10.0.0.2", 1, 0),
                                                   nodes.Node(c, "10.0.0.3", 1, 0)])
    assert set(lost[b]["trials"]) == {"t2", "t3", "t4"} and lost[c]["trials"] == {}
    o = SearchOutcome(name="s", experiment_path="/x/s", parent_run_id="parent",
                      metric="val_rel_l2", mode="min", lost_nodes=lost)
    lines: list[str] = []
    scfg = SearchConfig(name="s", storage="/x", space_file="s.yaml", tracking_uri="sqlite:///m.db")
    summary.print_summary(o, scfg, "rel_l2", {}, lines.append)
    named = [x for x in lines if x.startswith("lost node ")]
    assert named[0] == (
        f"lost node 10.0.0.2 ({b}): alive when the search started, dead at its end; "
        "t2 was running there and continued on 10.0.0.1 (hhhhhhhh) from its checkpoint at "
        "global epoch 2 (completed); t3 was running there and continued on 10.0.0.1 (hhhhhhhh) "
        "from scratch (completed); t4 ran there (completed)")
    assert named[1] == f"lost node 10.0.0.3 ({c}): alive when the search started, dead at its " \
                       "end; no trial ran there"


def test_a_trial_keeps_every_node_its_attempts_ran_on(monkeypatch):
    from types import SimpleNamespace

    from mona_tune.search import trial
    from mona_tune.tracking import mlflow_runs as mr

    tags: dict = {}
    client = SimpleNamespace(get_run=lambda run_id: SimpleNamespace(
        data=SimpleNamespace(tags=dict(tags))))
    monkeypatch.setattr(mr, "get_client", lambda uri: client)
    for node, expected in (("b", "b"), ("h", "b,h"), ("h", "b,h"), ("b", "b,h")):
        got = trial._node_history("uri", "run", {mr.TAG_NODE_ID: node, mr.TAG_NODE_IP: "ip"})
        assert got == {trial.TAG_NODE_IDS: expected}
        tags.update(got)
    assert trial._node_history("uri", "run", {mr.TAG_NODE_IP: "ip"}) == {}
