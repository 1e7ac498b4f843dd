"""Real services for the cluster tests, each started here and stopped by its process id:

- PostgreSQL 15 (Debian's package; run as user ``postgres``, it refuses root);
- ``mona-tune tracking-server``: MLflow on that database with proxied artifacts;
- a moto S3 server on 127.0.0.1;
- a Ray cluster of two nodes on this machine, with token authentication: the head, and a second
  node in its own mount namespace (``unshare -m``) where tmpfs mounts hide the head's local folder
  and give the node a private home, cache and temp folder, while the storage folder stays shared
  (like NFS).

Every process is started in a new session; stopping it signals every process of that session
(the Ray node's raylet and workers included) and nothing else.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(leader: int) -> list[int]:
    """The live processes of the session ``leader`` started (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, session
        if fields[0] != "Z" and int(fields[3]) == leader:
            out.append(int(entry.name))
    return out


def stop_session(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM every process of ``proc``'s session, then SIGKILL what is left."""
    leader = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = _session_pids(leader)
        if not pids and proc.poll() is not None:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and (_session_pids(leader) or proc.poll() is None):
            time.sleep(0.2)
    proc.poll()


def kill_session(proc: subprocess.Popen, timeout: float = 30.0) -> list[int]:
    """SIGKILL every process of ``proc``'s session at once, as when its machine is lost (a Ray
    node: its raylet, agents and workers); returns their ids once all are gone."""
    pids = _session_pids(proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    while _session_pids(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    proc.wait(timeout=max(1.0, deadline - time.time()))
    left = _session_pids(proc.pid)
    if left:
        raise RuntimeError(f"processes {left} of session {proc.pid} survived SIGKILL")
    return pids


def start(cmd: list[str], log: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, **kw)


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with {proc.returncode}\n"
                               + (log.read_text()[-3000:] if log else ""))
        try:
            value = check()
            if value:
                return value
        except Exception:  # not up yet
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what}: not up within {timeout:g} s\n"
                       + (log.read_text()[-3000:] if log and log.exists() else ""))


def http_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=2).status_code == 200


# ---------------------------------------------------------------- PostgreSQL
@dataclass
class Postgres:
    port: int
    folder: Path
    proc: subprocess.Popen

    def uri(self, db: str = "mlflow") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.uri("postgres"), autocommit=True) as con:
            con.execute(f'create database "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        stop_session(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> Postgres:
    """A throw-away server as user postgres on a free port, trusting local connections."""
    folder = Path(tempfile.mkdtemp(prefix="mona-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    log = folder / "postgres.log"
    proc = start([*as_user, str(PG_BIN / "postgres"), "-D", str(data),
                  "-p", str(port), "-k", str(folder), "-c", "listen_addresses=127.0.0.1",
                  "-c", "fsync=off"], log)
    pg = Postgres(port, folder, proc)

    def ready():
        import psycopg

        psycopg.connect(pg.uri("postgres"), connect_timeout=2).close()
        return True

    wait_for(ready, 30, "PostgreSQL", proc, log)
    return pg


# ---------------------------------------------------------------- MLflow and S3
@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        stop_session(self.proc)


def start_tracking_server(backend: str, artifacts: Path, log: Path,
                          allowed: str = "", port: int = 0) -> Server:
    """``mona-tune tracking-server`` on 127.0.0.1 (on ``port``, else a free one): the command
    users run."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "mona_tune.cli", "tracking-server", "--backend-store-uri",
           backend, "--artifacts-destination", str(artifacts), "--port", str(port)]
    if allowed:
        cmd += ["--allowed-hosts", allowed]
    proc = start(cmd, log)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(url + "/health"), 90, "MLflow server", proc, log)
    return Server(url, proc, port)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def start_s3(log: Path, bucket: str) -> tuple[Server, dict]:
    """moto's S3 server and the environment that points clients at it (with a fresh secret)."""
    port = free_port()
    proc = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(url + "/moto-api/"), 30, "moto S3 server", proc, log)
    env = {**S3_ENV, "AWS_SECRET_ACCESS_KEY": "s3cret-" + secrets.token_hex(8),
           "AWS_ENDPOINT_URL": url}
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                 aws_access_key_id="testing",
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
    return Server(url, proc, port), env


# ---------------------------------------------------------------- Ray, two nodes
def _node_ports() -> list[str]:
    ports = {name: free_port() for name in (
        "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")}
    out = [f"{k}={v}" for k, v in ports.items()]
    # a range of worker ports of the node's own (the defaults are the same on every node), below
    # the ephemeral range the ports above come from and above Ray's fixed defaults (the client
    # server's 10001 on a node not given another: a range from 10000 once made node B fail)
    base = random.randrange(10200, 32000, 200)
    return out + [f"--min-worker-port={base}", f"--max-worker-port={base + 150}"]


@dataclass
class LocalCluster:
    """``base/shared`` is seen by both nodes; ``base/head_local`` only by the head (and the
    driver); node B's home, cache and temp folder are its own."""

    base: Path
    token: str
    gcs: str
    dashboard: str
    env: dict  # what a client needs: the token and the venv on PATH
    procs: list = field(default_factory=list)

    @property
    def shared(self) -> Path:
        return self.base / "shared"

    @property
    def head_local(self) -> Path:
        return self.base / "head_local"

    def alive_nodes(self) -> int:
        """Active nodes, as ``ray status`` lists them."""
        out = subprocess.run([str(BIN / "ray"), "status", "--address", self.gcs],
                             capture_output=True, text=True, env=self.env, timeout=60).stdout
        active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
        return sum(1 for line in active.splitlines() if "node_" in line)

    def actor_nodes(self, class_name: str) -> dict[str, str]:
        """actor id -> node id of the actors of ``class_name`` (Ray's state API)."""
        code = ("import json, sys\nfrom ray.util.state import list_actors\n"
                "rows = list_actors(address=sys.argv[1], filters=[('class_name', '=', "
                "sys.argv[2])], limit=10000, raise_on_missing_output=False)\n"
                "print(json.dumps({a.actor_id: a.node_id for a in rows}))")
        out = subprocess.run([sys.executable, "-c", code, self.dashboard, class_name],
                             capture_output=True, text=True, env=self.env, timeout=60)
        import json

        return json.loads(out.stdout.strip().splitlines()[-1])

    def nodes(self) -> dict[str, dict]:
        """node id -> {"state": "ALIVE" or "DEAD", "is_head": bool} of every node the cluster
        has known (Ray's state API)."""
        code = ("import json, sys\nfrom ray.util.state import list_nodes\n"
                "rows = list_nodes(address=sys.argv[1], limit=10000, detail=True, "
                "raise_on_missing_output=False)\n"
                "print(json.dumps({n.node_id: {'state': n.state, 'is_head': n.is_head_node} "
                "for n in rows}))")
        out = subprocess.run([sys.executable, "-c", code, self.dashboard],
                             capture_output=True, text=True, env=self.env, timeout=60)
        import json

        return json.loads(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_session(proc)
        shutil.rmtree(self.base, ignore_errors=True)


def start_two_nodes(head_env: dict, node_env: dict | None = None) -> LocalCluster:
    """The head (1 CPU; ``head_env`` on top of the environment) and node B (1 CPU, private
    folders), both started with ``ray start --block`` and token authentication."""
    return start_cluster(head_env, head_cpus=1, node_b=True, node_env=node_env)


def start_cluster(head_env: dict, head_cpus: int, node_b: bool,
                  node_env: dict | None = None) -> LocalCluster:
    """The head with ``head_cpus`` CPUs and, with ``node_b``, the private second node;
    ``node_env`` goes to both nodes (and so to their trials), e.g. ``$MONA_TUNE_FAULT``."""
    base = Path(tempfile.mkdtemp(prefix="mona-2n-"))
    for d in ("shared", "head_local", "head_home", "nodeb_home", "nodeb_tmp", "ray"):
        (base / d).mkdir()
    token = secrets.token_hex(16)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("RAY_", "AWS_", "MLFLOW_", "MONA_TUNE_"))}
    common = {**clean, "PATH": f"{BIN}:{clean.get('PATH', '')}", "RAY_AUTH_MODE": "token",
              "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
              "PYTHONUNBUFFERED": "1", **(node_env or {})}
    gcs_port, dash_port = free_port(), free_port()
    head = start([str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
                  f"--num-cpus={head_cpus}", "--num-gpus=0", "--node-ip-address=127.0.0.1",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                  f"--ray-client-server-port={free_port()}", f"--temp-dir={base / 'ray'}",
                  *_node_ports()],
                 base / "head.log", env={**common, "HOME": str(base / "head_home"), **head_env})
    cluster = LocalCluster(base, token, f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}",
                         common, [head])
    try:
        wait_for(lambda: cluster.alive_nodes() >= 1, 60, "Ray head", head, base / "head.log")
        if not node_b:
            return cluster
        private = " && ".join(f"mount -t tmpfs tmpfs {base / d}"
                              for d in ("nodeb_home", "nodeb_tmp", "head_local"))
        node_cmd = " ".join([str(BIN / "ray"), "start", "--block", f"--address={cluster.gcs}",
                             "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
                             *_node_ports()])
        second = start(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        f"{private} && exec {node_cmd}"], base / "nodeb.log",
                       env={**common, "HOME": str(base / "nodeb_home"),
                            "TMPDIR": str(base / "nodeb_tmp")})
        cluster.procs.append(second)
        wait_for(lambda: cluster.alive_nodes() >= 2, 60, "Ray node B", second,
                 base / "nodeb.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster



# ---------------------------------------------------------------- Ray in the test process
@contextmanager
def local_ray(faults_file: Path, num_cpus: int = 2):
    """``ray.init`` here, its workers started with ``$MONA_TUNE_FAULT`` naming ``faults_file``
    (the trainer's test-only fault hook reads it at every epoch, so each test writes its own
    faults there without restarting Ray; an absent file means none). Yields the GCS address."""
    import ray

    faults_file.unlink(missing_ok=True)
    before = os.environ.get("MONA_TUNE_FAULT")
    os.environ["MONA_TUNE_FAULT"] = str(faults_file)
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
    finally:
        if before is None:
            os.environ.pop("MONA_TUNE_FAULT", None)
        else:
            os.environ["MONA_TUNE_FAULT"] = before


def private_mounts_work() -> bool:
    """``unshare -m`` with a tmpfs mount (root or CAP_SYS_ADMIN) gives node B its own disk."""
    probe = "mount -t tmpfs tmpfs /mnt && umount /mnt"
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", probe],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
