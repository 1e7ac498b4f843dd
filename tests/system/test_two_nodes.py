"""The search on a Ray cluster of two nodes, with PostgreSQL-backed MLflow, S3 storage and token
authentication, all real and started here (``services.py``).

Node B lives in its own mount namespace: it does not see the head's local folder
(``head_local``, where a driver's SQLite file or storage would be on "its own disk"), and its home,
cache and temp folder are private, so it gets the embedded data and source model only through the
search's cache preparation. The drivers run as subprocesses with an environment of their own (no
``MONA_TUNE_CACHE``, the Ray token, S3 credentials with a fresh secret that must never appear in
the logs, MLflow or the storage).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import services
from tracked import search_runs, tracked_once
from mona_tune.tracking import mlflow_runs as mr

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not services.PG_BIN.joinpath("initdb").exists(),
                       reason="PostgreSQL 15 is not installed (Debian's postgresql-15)"),
    pytest.mark.skipif(not services.private_mounts_work(),
                       reason="no private mount namespace here (`unshare -m` needs root)"),
]

BUCKET = "mona-runs"
EPOCHS = 4
SPACE = f"""
searched:
  lam: {{uniform: [0.0, 1.0]}}
  inner_lr: {{loguniform: [1.0e-4, 1.0e-2]}}
  warmup_epochs: {{randint: [1, 3]}}
fixed:
  epochs: {EPOCHS}
  batch_size: 16      # the pause fault, not long epochs, holds the moment of the kill
  n_train: 40
  n_test: 16
  resolution: 29
  device: cpu
budget: {{num_samples: 4, max_concurrent: 2}}
scheduler: {{kind: fifo}}
"""
TINY = """
searched:
  lam: {uniform: [0.0, 1.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
fixed: {warmup_epochs: 1, epochs: 2, batch_size: 16, n_train: 40, n_test: 8, resolution: 29,
        device: cpu}
budget: {num_samples: 4, max_concurrent: 2}
scheduler: {kind: fifo}
"""


@dataclass
class Stack:
    ray: services.LocalCluster
    pg: services.Postgres
    mlflow: services.Server
    s3: services.Server
    s3_env: dict
    spaces: Path

    def env(self, home: Path, **extra) -> dict:
        """A driver's environment: the Ray token (not RAY_AUTH_MODE: the search switches it on
        when the cluster asks), its own HOME, nothing of the test process's cache."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_", "AWS_", "MLFLOW_", "MONA_TUNE_"))}
        home.mkdir(parents=True, exist_ok=True)
        env.update(HOME=str(home), PYTHONUNBUFFERED="1", RAY_AUTH_TOKEN=self.ray.token,
                   PATH=f"{services.BIN}:{env.get('PATH', '')}")
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def stack(mona_cache, tmp_path_factory):
    """PostgreSQL, `mona-tune tracking-server` on it (artifacts proxied into the shared folder),
    moto S3 and the two Ray nodes; the head's trials use the session cache (its source model is
    trained once per test session), node B's cache starts empty."""
    spaces = tmp_path_factory.mktemp("spaces")
    (spaces / "space.yaml").write_text(textwrap.dedent(SPACE))
    (spaces / "tiny.yaml").write_text(textwrap.dedent(TINY))
    started: list = []
    try:
        pg = services.start_postgres()
        started.append(pg)
        backend = pg.create_db("mlflow")
        with ThreadPoolExecutor(2) as pool:
            ray_f = pool.submit(services.start_two_nodes, {"MONA_TUNE_CACHE": str(mona_cache)},
                                {"MONA_TUNE_FAULT": str(spaces / "faults.json")})
            ray = ray_f.result()
            started.append(ray)
        server = services.start_tracking_server(backend, ray.shared / "mlartifacts",
                                                ray.base / "mlflow.log", allowed="mlflow-head")
        started.append(server)
        s3, s3_env = services.start_s3(ray.base / "moto.log", BUCKET)
        started.append(s3)
        yield Stack(ray, pg, server, s3, s3_env, spaces)
    finally:
        for svc in reversed(started):
            svc.stop()


def _search(stack: Stack, *args: str) -> list[str]:
    return [sys.executable, "-m", "mona_tune.cli", "search", "--task", "darcy",
            "--tracking-uri", stack.mlflow.url, "--address", stack.ray.gcs, *args]


def _children(uri: str, search: str) -> tuple[object, list]:
    parents, trials = search_runs(uri, search)
    assert len(parents) == 1, [r.info.run_id for r in parents]
    return parents[0], [r for runs in trials.values() for r in runs]


def _check_search(stack: Stack, search: str, n_trials: int, tmp_path: Path) -> None:
    """Every trial tracked once and complete, trials (an attempt of them) on both nodes (Ray's
    state API and the runs' tags agree), every embedder downloadable from the server, alias
    `best` on the best."""
    uri = stack.mlflow.url
    parent, _ = _children(uri, search)
    children = list(tracked_once(uri, search, n_trials).values())
    client = mr.get_client(uri)
    for c in children:
        assert "test_rel_l2" in c.data.metrics
        out = mr.download_embedder(uri, c.info.run_id, tmp_path / "emb" / c.info.run_id)
        meta = json.loads((out / "embedder.json").read_text())
        assert meta["kind"] and (out / "embedder.safetensors").stat().st_size > 1000
        assert meta["lam"] == pytest.approx(float(c.data.params["lam"]))
    # every attempt's node (mona.node_ids; mona.node_id names the latest attempt's only)
    tagged = {n for c in children for n in
              (c.data.tags.get("mona.node_ids") or c.data.tags["mona.node_id"]).split(",")}
    assert len(tagged) == 2, "the trials ran on one node only"
    ray_nodes = set(stack.ray.actor_nodes("ImplicitFunc").values())
    assert tagged <= ray_nodes and len(ray_nodes) == 2, (tagged, ray_nodes)
    best = client.get_model_version_by_alias("mona-darcy-embedder", "best")
    assert best.run_id == parent.data.tags["mona.best_run_id"]
    assert best.tags["search"] == search


def _s3():
    import boto3

    return boto3.client("s3")


def _objects(prefix: str) -> list[dict]:
    pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o for page in pages for o in page.get("Contents", [])]


def _running_with_checkpoint(uri: str, search: str, prefix: str) -> bool:
    """A trial is completed, and a running one, several epochs from its end, has a checkpoint
    older than Tune's latest experiment snapshot in S3 (so --resume continues it from there)."""
    try:
        _, children = _children(uri, search)
    except Exception:
        return False
    if not any(c.data.tags.get("mona.outcome") == "completed" for c in children):
        return False
    running = {c.data.tags["ray_trial_id"] for c in children if c.info.status == "RUNNING"
               and c.data.metrics.get("stage2_epoch", 0) <= EPOCHS - 2}
    objs = _objects(prefix)
    snaps = [o["LastModified"].timestamp() for o in objs
             if o["Key"].rsplit("/", 1)[-1].startswith("experiment_state")]
    if not snaps or not running:
        return False
    made = [o["LastModified"].timestamp() for o in objs
            if any(f"/trial_{t}/checkpoint_" in o["Key"] for t in running)]
    return bool(made) and min(made) < max(snaps) - 1.0


def test_two_nodes_s3_postgres_driver_killed_then_resumed(stack, tmp_path, monkeypatch):
    """The search on two nodes with S3 storage and the PostgreSQL-backed server; the driver is
    SIGKILLed mid-search and `--resume` finishes it."""
    for k, v in stack.s3_env.items():
        monkeypatch.setenv(k, v)
    secret = stack.s3_env["AWS_SECRET_ACCESS_KEY"]
    storage = f"s3://{BUCKET}/searches"
    env = stack.env(tmp_path / "home", TUNE_GLOBAL_CHECKPOINT_S="1", **stack.s3_env)
    args = _search(stack, "--space", str(stack.spaces / "space.yaml"), "--name", "two-nodes",
                   "--storage", storage, "--seed", "1")
    log_path = tmp_path / "driver.log"
    # the first trial to reach stage-2 epoch 2 waits there (its epoch-1 checkpoint written) until
    # the driver is killed, so the kill always falls mid-search whatever the machine's speed
    go = tmp_path / "go"
    (stack.spaces / "faults.json").write_text(json.dumps([
        {"at": [2, 2], "kind": "pause", "until": str(go), "once": str(tmp_path / "paused")}]))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 420
        while time.time() < deadline:
            time.sleep(1.0)
            assert proc.poll() is None, log_path.read_text()[-4000:]
            if _running_with_checkpoint(stack.mlflow.url, "two-nodes", "searches/two-nodes/"):
                break
        else:
            pytest.fail("no trial completed while another ran with a snapshotted checkpoint:\n"
                        + log_path.read_text()[-3000:])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        go.touch()
    first = log_path.read_text()
    assert "forwarded to the trials:" in first and "AWS_SECRET_ACCESS_KEY" in first
    # node B's empty private cache received the head's data and source model, once
    assert "MB of cache copied to 1 of the 1 other nodes" in first, first[-3000:]

    resumed = subprocess.run([sys.executable, "-m", "mona_tune.cli", "search", "--name",
                              "two-nodes", "--resume", "--storage", storage, "--address",
                              stack.ray.gcs], env=env, capture_output=True, text=True,
                             timeout=600)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    assert "resuming" in out and "trials ran on 2 nodes" in out
    assert "copied to 0 of the 1 other nodes" in out  # node B's cache is still complete

    _check_search(stack, "two-nodes", 4, tmp_path)
    parent, children = _children(stack.mlflow.url, "two-nodes")
    assert any(c.data.tags.get("mona.restored_from_global_epoch") for c in children), \
        "no trial continued from its checkpoint"
    keys = [o["Key"] for o in _objects("searches/two-nodes/")]
    assert any("/checkpoint_" in k for k in keys) and "searches/two-nodes/curves.png" in keys
    # the secret reached the trials on both nodes (S3 worked there) and nowhere else
    meta = _s3().get_object(Bucket=BUCKET, Key="searches/two-nodes/mona_search.json")
    for text in (first, out, meta["Body"].read().decode()):
        assert secret not in text
    for run in [parent, *children]:
        assert secret not in json.dumps({**run.data.params, **run.data.tags})


def test_ray_job_submit_on_shared_storage(stack, tmp_path):
    """The documented way to run a search on a remote cluster: `ray job submit` to the head's
    dashboard; storage on the folder both nodes share."""
    storage = stack.ray.shared / "runs"
    cmd = [str(services.BIN / "ray"), "job", "submit", "--address", stack.ray.dashboard, "--",
           "mona-tune", "search", "--task", "darcy", "--space", str(stack.spaces / "tiny.yaml"),
           "--name", "via-job", "--storage", str(storage), "--tracking-uri", stack.mlflow.url,
           "--quiet"]
    env = stack.env(tmp_path / "home", RAY_AUTH_MODE="token")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "trials ran on 2 nodes" in out
    _check_search(stack, "via-job", 4, tmp_path)
    assert (storage / "via-job" / "curves.png").stat().st_size > 10_000


def test_tracking_server_allowed_hosts(stack):
    """MLflow 3 refuses unknown Host headers: `tracking-server --allowed-hosts` lets the names
    the cluster uses through, and only those."""
    import requests

    api = stack.mlflow.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    port = stack.mlflow.port
    assert requests.get(api, headers={"Host": f"mlflow-head:{port}"}, timeout=10).ok
    assert requests.get(api, headers={"Host": f"localhost:{port}"}, timeout=10).ok
    refused = requests.get(api, headers={"Host": f"elsewhere:{port}"}, timeout=10)
    assert refused.status_code == 403


# ---------------------------------------------------------------- preflight faults
def _token_home(path: Path, token: str) -> Path:
    (path / ".ray").mkdir(parents=True)
    (path / ".ray" / "auth_token").write_text(token)
    return path


FAULTS = {
    # name: (what the test sets up, text expected in the error line)
    "sqlite-on-head-disk": "is on the driver's disk only",
    "storage-on-head-disk": "is not the driver's",
    "postgres-artifacts-on-head-disk": "the MLflow artifact root",
    "tracking-server-unreachable": "not reachable (connection refused)",
    "database-unreachable": "database not reachable",
    "no-ray-there": "no Ray cluster answers there",
    "missing-token": "set RAY_AUTH_TOKEN",
    "wrong-token": "refused the token",
    "no-node-fits": "no Ray node can hold a trial of 2 CPU",
    "prepare-deadline": "preparing the data and the source model did not finish within 1 s",
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_preflight_fault_is_one_line(stack, tmp_path, fault):
    """Each fault: one line naming what and where, exit 2, within seconds, nothing started
    (no parent run in the tracking store, no search folder in the storage)."""
    local = stack.ray.head_local / fault  # on the head's disk only
    local.mkdir()
    name = f"fault-{fault}"
    storage = stack.ray.shared / "faults"
    tracking = stack.mlflow.url
    address = stack.ray.gcs
    env = stack.env(tmp_path / "home")
    if fault == "sqlite-on-head-disk":
        tracking = f"sqlite:///{local / 'mlflow.db'}"
    elif fault == "storage-on-head-disk":
        storage = local / "runs"
        # and the token from ~/.ray/auth_token alone: joining works, the preflight runs
        env.pop("RAY_AUTH_TOKEN")
        env["HOME"] = str(_token_home(tmp_path / "token-home", stack.ray.token))
    elif fault == "postgres-artifacts-on-head-disk":
        tracking = stack.pg.create_db("direct")
    elif fault == "tracking-server-unreachable":
        tracking = f"http://127.0.0.1:{services.free_port()}"
    elif fault == "database-unreachable":
        tracking = f"postgresql://postgres@127.0.0.1:{services.free_port()}/mlflow"
    elif fault == "no-ray-there":
        address = f"127.0.0.1:{services.free_port()}"
    elif fault == "missing-token":
        env.pop("RAY_AUTH_TOKEN")
    elif fault == "wrong-token":
        env["RAY_AUTH_TOKEN"] = "0" * 32
    extra = {"no-node-fits": ["--cpus-per-trial", "2"],
             "prepare-deadline": ["--prepare-timeout", "1"]}.get(fault, [])
    cmd = [sys.executable, "-m", "mona_tune.cli", "search", "--task", "darcy", "--space",
           str(stack.spaces / "tiny.yaml"), "--name", name, "--storage", str(storage),
           "--tracking-uri", tracking, "--address", address, *extra]
    t0 = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=local)
    took = time.time() - t0
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    errors = [x for x in lines if x.startswith("mona-tune: error:")]
    assert len(errors) == 1 and FAULTS[fault] in errors[0], lines
    if fault in ("sqlite-on-head-disk", "storage-on-head-disk",
                 "postgres-artifacts-on-head-disk", "prepare-deadline"):
        assert re.search(r"error: node \S+ \([0-9a-f]{8}\): ", errors[0])  # the node at fault
    assert took < 45, f"{fault}: {took:.0f} s"
    # nothing started
    assert not (Path(storage) / name).exists()
    assert not (local / "mlflow.db").exists()
    assert not list(Path(storage).glob(".mona-preflight-*"))
    client = mr.get_client(stack.mlflow.url)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    if exp is not None:
        assert not client.search_runs([exp.experiment_id],
                                      filter_string=f"tags.`mona.search_name` = '{name}'")


# ---------------------------------------------------------------- a lost node (keep this last)
def test_node_b_lost_mid_trial_search_completes(stack, tmp_path, monkeypatch):
    """Node B is lost (its raylet, agents and workers SIGKILLed) while a trial runs there: the
    trial continues from its checkpoint on the head, in the same MLflow run, and the search
    completes and names the lost node. Node B stays dead: this must be the module's LAST test
    (the others need both nodes)."""
    for k, v in stack.s3_env.items():
        monkeypatch.setenv(k, v)
    storage = f"s3://{BUCKET}/searches"
    env = stack.env(tmp_path / "home", **stack.s3_env)
    node_b_proc = stack.ray.procs[1]
    alive = {n: i for n, i in stack.ray.nodes().items() if i["state"] == "ALIVE"}
    assert len(alive) == 2, alive
    (head,) = [n for n, i in alive.items() if i["is_head"]]
    (node_b,) = [n for n, i in alive.items() if not i["is_head"]]
    # every trial that reaches stage-2 epoch 2 (its epoch-1 checkpoint reported) writes its
    # process id and waits for `go`: node B's trial is killed there, and no trial finishes
    # before Ray has marked node B dead
    arrived, go = tmp_path / "arrived", tmp_path / "go"
    faults = stack.spaces / "faults.json"
    faults.write_text(json.dumps([
        {"at": [2, 2], "kind": "touch", "path": str(arrived / "{pid}")},
        {"at": [2, 2], "kind": "pause", "until": str(go)}]))
    log_path = tmp_path / "driver.log"
    args = _search(stack, "--space", str(stack.spaces / "tiny.yaml"), "--name", "lost-node",
                   "--storage", storage, "--seed", "3")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 240
        paused: list[int] = []
        while not paused:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            assert time.time() < deadline, "no trial paused on node B:\n" \
                + log_path.read_text()[-3000:]
            time.sleep(0.2)
            on_b = set(services._session_pids(node_b_proc.pid))
            paused = [int(p.name) for p in arrived.glob("*") if int(p.name) in on_b]
        killed = services.kill_session(node_b_proc)
        assert paused[0] in killed
        # the head's trials stay paused until Ray has noticed (its health checks of node B's
        # raylet fail), so the search cannot end before the node is dead
        services.wait_for(lambda: stack.ray.nodes()[node_b]["state"] == "DEAD", 120,
                          "Ray marking node B dead")
        go.touch()
        proc.wait(timeout=300)
    finally:
        go.touch()
        faults.write_text("[]")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log_path.read_text()
    assert proc.returncode == 0, out[-4000:]

    _check_search(stack, "lost-node", 4, tmp_path)
    parent, children = _children(stack.mlflow.url, "lost-node")
    client = mr.get_client(stack.mlflow.url)
    last_epoch = 1 + 2  # TINY: 1 stage-1 epoch (warmup_epochs), 2 stage-2 epochs
    for c in children:  # no epoch lost, none logged twice
        for key in ("global_epoch", "train_loss"):
            steps = [m.step for m in client.get_metric_history(c.info.run_id, key)]
            assert steps == list(range(1, last_epoch + 1)), (key, steps, c.data.tags)
        assert c.data.tags["mona.node_id"] == head  # node B's trial too
    (lost,) = [c for c in children if node_b in c.data.tags.get("mona.node_ids", "")]
    assert lost.data.tags["mona.node_ids"].split(",")[0] == node_b
    assert lost.data.tags["mona.restored_from_global_epoch"] == "2"
    assert lost.data.tags["mona.attempts"] == "2"
    assert lost.info.status == "FINISHED"
    assert node_b in parent.data.tags["mona.lost_nodes"]
    trial = lost.data.tags["ray_trial_id"]
    line = [x for x in out.splitlines() if x.startswith("lost node ")]
    assert len(line) == 1 and f"({node_b})" in line[0], out[-3000:]
    assert f"{trial} was running there and continued on " in line[0]
    assert f" ({head[:8]}) from its checkpoint at global epoch 2 (completed)" in line[0]
    keys = [o["Key"] for o in _objects("searches/lost-node/")]
    assert any(f"/trial_{trial}/checkpoint_" in k for k in keys)
