"""The nodes of the cluster: the node table read, tasks pinned to a node and gathered with a
deadline (on a real one-node Ray in this process), and what became of a lost node's trials."""

from __future__ import annotations

import os
import time

import pytest

from mona_tune.cluster import nodes
from mona_tune.cluster.nodes import Node
from mona_tune.errors import MonaError


def test_the_alive_nodes_of_a_node_table():
    table = [
        {"NodeID": "a" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.1",
         "Resources": {"CPU": 4.0, "GPU": 2.0, "memory": 1e9}},
        {"NodeID": "b" * 56, "Alive": False, "NodeManagerAddress": "10.0.0.2",
         "Resources": {"CPU": 8.0}},
        {"NodeID": "c" * 56, "Alive": True, "Resources": {}},  # no address, no CPU, no GPU
        {"NodeID": "d" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.4"},  # no resources
        {"NodeID": "e" * 56, "NodeManagerAddress": "10.0.0.5", "Resources": {"CPU": 1.0}},
    ]
    assert nodes.nodes_of(table) == [Node("a" * 56, "10.0.0.1", 4.0, 2.0),
                                     Node("c" * 56, "?", 0.0, 0.0),
                                     Node("d" * 56, "10.0.0.4", 0.0, 0.0)]
    assert Node("a" * 56, "10.0.0.1", 4.0, 2.0).label == "node 10.0.0.1 (aaaaaaaa)"


def test_the_alive_nodes_of_a_real_ray(local_ray):
    assert nodes.alive_nodes() == [Node(local_ray.node_id, local_ray.ip, 2.0, 1.0)]
    assert nodes.lost_nodes([Node(local_ray.node_id, local_ray.ip, 2.0, 1.0),
                             Node("f" * 56, "10.0.0.9", 1.0, 0.0)]) == \
        [Node("f" * 56, "10.0.0.9", 1.0, 0.0)]


def test_lost_nodes_are_those_alive_at_the_start_and_not_at_the_end(monkeypatch):
    import ray

    start = [nodes.Node("a" * 56, "10.0.0.1", 1, 0), nodes.Node("b" * 56, "10.0.0.2", 1, 0),
             nodes.Node("c" * 56, "10.0.0.3", 1, 0)]
    monkeypatch.setattr(ray, "nodes", lambda: [
        {"NodeID": "a" * 56, "Alive": True}, {"NodeID": "b" * 56, "Alive": False},
        {"NodeID": "d" * 56, "Alive": True}])  # c: gone from the table; d: joined later
    assert nodes.lost_nodes(start) == start[1:]


# ---------------------------------------------------------------- tasks pinned to a node
def _here(local_ray) -> Node:
    return Node(local_ray.node_id, local_ray.ip, 2.0, 1.0)


def test_a_pinned_task_runs_on_its_node_with_the_resources_asked(local_ray):
    import ray

    def where():
        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ctx.get_assigned_resources()

    node_id, resources = ray.get(nodes.pinned(where, _here(local_ray), num_cpus=2,
                                              num_gpus=1).remote())
    assert node_id == local_ray.node_id
    assert resources == {"CPU": 2.0, "GPU": 1.0}


def test_a_pinned_task_never_runs_elsewhere(local_ray):
    import ray

    gone = Node("0123456789abcdef" * 3 + "01234567", "10.0.0.9", 1.0, 0.0)  # no such node
    with pytest.raises(ray.exceptions.TaskUnschedulableError):
        ray.get(nodes.pinned(lambda: 1, gone, num_cpus=0).remote(), timeout=60)


def test_a_pinned_task_is_never_retried(local_ray, tmp_path):
    import ray

    attempts = tmp_path / "attempts"

    def crash():
        with open(attempts, "a") as f:
            f.write("x")
        os._exit(1)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(nodes.pinned(crash, _here(local_ray), num_cpus=0).remote(), timeout=60)
    assert attempts.read_text() == "x"


# ---------------------------------------------------------------- gathering with a deadline
def test_gather_returns_each_nodes_answer(local_ray):
    here = _here(local_ray)
    twin = Node(local_ray.node_id, "127.0.0.2", 2.0, 1.0)  # a second name for the same node
    refs = {here: nodes.pinned(lambda: "a", here, num_cpus=0).remote(),
            twin: nodes.pinned(lambda: "b", twin, num_cpus=0).remote()}
    assert nodes.gather(refs, 60, "the check") == {here: "a", twin: "b"}


def test_gather_names_the_late_nodes_and_kills_their_tasks(local_ray, tmp_path):
    here = _here(local_ray)
    twin = Node(local_ray.node_id, "127.0.0.2", 2.0, 1.0)

    def stubborn(name):  # only a killed worker stops it
        (tmp_path / name).write_text(str(os.getpid()))
        for _ in range(600):
            try:
                time.sleep(0.1)
            except KeyboardInterrupt:
                pass

    refs = {n: nodes.pinned(stubborn, n, num_cpus=0).remote(name)
            for n, name in ((here, "a"), (twin, "b"))}
    t0 = time.time()
    while not all((tmp_path / name).is_file() for name in "ab") and time.time() - t0 < 60:
        time.sleep(0.1)  # both running (a worker may take seconds to start)
    with pytest.raises(MonaError) as err:
        nodes.gather(refs, 1.5, "the check")
    assert str(err.value) == (f"node {local_ray.ip} ({local_ray.node_id[:8]}): the check did not "
                              "finish within 1.5 s (and 1 more nodes)")
    pids = [int((tmp_path / name).read_text()) for name in ("a", "b")]
    t0 = time.time()
    while any(_alive(p) for p in pids) and time.time() - t0 < 30:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_gather_names_one_late_node_alone(local_ray):
    here = _here(local_ray)
    refs = {here: nodes.pinned(lambda: time.sleep(30), here, num_cpus=0).remote()}
    with pytest.raises(MonaError) as err:
        nodes.gather(refs, 0.5, "the check")
    assert str(err.value) == (f"node {local_ray.ip} ({local_ray.node_id[:8]}): the check did not "
                              "finish within 0.5 s")


def _alive(pid: int) -> bool:
    from proc_net import alive

    return alive(pid)


def test_gather_names_the_node_whose_task_failed(local_ray):
    here = _here(local_ray)

    def fail(exc):
        raise exc

    def one(exc):
        with pytest.raises(MonaError) as err:
            nodes.gather({here: nodes.pinned(fail, here, num_cpus=0).remote(exc)}, 60, "the check")
        return str(err.value)

    label = f"node {local_ray.ip} ({local_ray.node_id[:8]})"
    assert one(MonaError("--data-dir /d does not exist")) == \
        f"{label}: the check: --data-dir /d does not exist"
    other = one(ValueError("bad value\nsecond line"))  # one line, naming the error's type
    assert other.startswith(f"{label}: the check: ") and "ValueError" in other
    assert "\n" not in other


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
