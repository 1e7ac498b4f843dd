"""The tracking service: is a store reachable (:func:`store_fault`), and ``mona-tune
tracking-server``, which starts the MLflow server a cluster should use.

The recommended cluster setup is one ``mlflow server`` on a database (PostgreSQL) with proxied
artifacts (``--artifacts-destination``, a shared folder or a bucket): trials on every node log
metrics and upload embedders over HTTP to that server, so workers need neither database drivers
nor access to the artifact store. MLflow 3 refuses requests whose Host header it does not know
(a guard against DNS rebinding); the server is started with the names clients use
(``--allowed-hosts``).
"""

from __future__ import annotations

import os
import socket
import sys

from mona_tune.errors import MonaError
from mona_tune.paths import creatable_fault
from mona_tune.tracking import mlflow_runs as mr

CHECK_TIMEOUT_S = 5.0
STOP_GRACE_S = 10.0  # for the server's processes to end after SIGTERM


def tcp_fault(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None if something accepts a TCP connection at host:port within ``timeout``, else why not."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return e.strerror or str(e)


def _http_auth(environ) -> dict[str, str]:
    token = environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = environ.get("MLFLOW_TRACKING_USERNAME")
    password = environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode())
                .decode()}
    return {}


def _http_fault(uri: str, timeout: float) -> str | None:
    import requests

    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    shown = mr.redact(uri)
    verify = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or \
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "false").lower() != "true"
    try:
        r = requests.get(url, params={"max_results": 1}, headers=_http_auth(os.environ),
                         timeout=timeout, verify=verify)
    except requests.exceptions.Timeout:
        return f"tracking server {shown}: no answer within {timeout:g} s"
    except requests.exceptions.ConnectionError as e:
        reason = "connection refused" if "refused" in str(e).lower() else \
            " ".join(str(e).split())[:200]
        return f"tracking server {shown}: not reachable ({reason}); start it with " \
               "`mona-tune tracking-server` or check --tracking-uri"
    except requests.exceptions.RequestException as e:
        return f"tracking server {shown}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    if r.status_code == 403 and "host" in r.text.lower():
        host = r.request.headers.get("Host") or shown
        return (f"tracking server {shown} refuses the host name {host} (MLflow 3 checks the Host "
                f"header): start it with --allowed-hosts {host.split(':')[0]} "
                "(`mona-tune tracking-server --allowed-hosts ...` does)")
    if r.status_code in (401, 403):
        return f"tracking server {shown} wants credentials (HTTP {r.status_code}): set " \
               "MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    if r.status_code >= 400:
        return f"tracking server {shown} answered HTTP {r.status_code} to an MLflow API call " \
               "(is it an MLflow server?)"
    return None


def _db_fault(uri: str, timeout: float) -> str | None:
    import sqlalchemy

    shown = mr.redact(uri)
    scheme = mr.uri_scheme(uri)
    try:
        url = sqlalchemy.engine.make_url(uri)
    except Exception as e:  # ArgumentError
        return f"tracking store {shown}: not a database URI ({e})"
    try:
        connect_args = {"connect_timeout": int(max(1, timeout))} if scheme == "postgresql" else {}
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    except ModuleNotFoundError as e:
        extra = "postgres" if scheme == "postgresql" else scheme
        return (f"tracking store {shown}: its database driver ({e.name}) is not installed; "
                f"pip install 'mona-tune[{extra}]'")
    host, port = url.host, url.port or {"postgresql": 5432, "mysql": 3306}.get(scheme, 1433)
    fault = tcp_fault(host, port, timeout) if host else None
    if fault:
        return f"tracking store {shown}: database not reachable at {host}:{port} ({fault})"
    try:
        with engine.connect():
            pass
    except Exception as e:  # OperationalError: authentication, missing database
        first = " ".join(str(getattr(e, "orig", e)).split())[:200]
        return f"tracking store {shown}: the database refused the connection ({first})"
    finally:
        engine.dispose()
    return None


def store_fault(uri: str, timeout: float = CHECK_TIMEOUT_S) -> str | None:
    """Why this process cannot use the tracking store ``uri`` (None: it can). Fast: a store that
    does not answer is reported after ``timeout`` seconds, not after MLflow's retries. A SQLite
    or file store is local by nature: whether it is the same file on every node is the
    preflight's question (``cluster.preflight``)."""
    scheme = mr.uri_scheme(uri)
    if scheme in ("http", "https"):
        return _http_fault(uri, timeout)
    if scheme in mr.DB_SCHEMES:
        return _db_fault(uri, timeout)
    return None


def check_store(uri: str) -> None:
    fault = store_fault(uri)
    if fault:
        raise MonaError(fault)


def local_dir(uri: str | None) -> str | None:
    """The local directory of a ``file:`` URI or a plain path (artifact roots), else None."""
    if not uri:
        return None
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    if "://" not in uri and ":" not in uri.split("/", 1)[0]:
        return uri
    return None


# ---------------------------------------------------------------- the server
def _host_forms(name: str) -> list[str]:
    """A name as MLflow matches Host headers (fnmatch; the header carries the port)."""
    if name.startswith("["):  # IPv6, fnmatch needs its bracket escaped in a pattern
        return [name] if "]:" in name else [name, "[[]" + name[1:] + ":*"]
    return [name] if ":" in name else [name, f"{name}:*"]


def allowed_hosts(host: str, names: list[str]) -> str:
    """``--allowed-hosts`` for MLflow: the names clients use (each with any port) and loopback.
    Bound to every interface without names given: this machine's own names."""
    wanted = list(names)
    if not wanted and host in ("0.0.0.0", "::"):
        wanted = [socket.gethostname(), socket.getfqdn()]
    out: list[str] = []
    for name in [*wanted, "localhost", "127.0.0.1", "[::1]"]:
        out += [f for f in _host_forms(name.strip()) if f and f not in out]
    return ",".join(out)


def server_command(*, backend_store_uri: str, artifacts_destination: str | None, host: str,
                   port: int, allowed: str, workers: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--host", host, "--port", str(port), "--workers", str(workers),
           "--allowed-hosts", allowed]
    if artifacts_destination:
        cmd += ["--artifacts-destination", artifacts_destination]
    return cmd


def default_artifacts(backend_store_uri: str) -> str:
    """Beside a SQLite file (where searches keep theirs), else ``./mlartifacts``."""
    path = mr.sqlite_path(backend_store_uri)
    base = path.parent if path is not None else os.getcwd()
    return os.path.join(str(base), "mlartifacts")


def serve(*, backend_store_uri: str, artifacts_destination: str | None = None,
          host: str = "127.0.0.1", port: int = 5000, hosts: list[str] | None = None,
          workers: int = 1) -> int:
    """Run ``mlflow server`` until it ends or this process gets SIGINT/SIGTERM; returns its exit
    status (0 after a stop by signal)."""
    if not 0 < port < 65536:
        raise MonaError(f"--port {port}: not a TCP port")
    if mr.uri_scheme(backend_store_uri) in ("http", "https"):
        raise MonaError(f"--backend-store-uri {backend_store_uri}: that is a tracking server "
                        "already; open it in a browser")
    path = mr.sqlite_path(backend_store_uri)
    if path is not None and not path.parent.is_dir():
        raise MonaError(f"--backend-store-uri {backend_store_uri}: no folder {path.parent}")
    check_store(backend_store_uri)
    artifacts = artifacts_destination or default_artifacts(backend_store_uri)
    fault = creatable_fault(local_dir(artifacts)) if local_dir(artifacts) else None
    if fault:
        raise MonaError(f"--artifacts-destination {artifacts}: cannot create it ({fault})")
    allowed = allowed_hosts(host, hosts or [])
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {host} exposes the MLflow server (and its delete buttons) beyond "
              "this machine; put it behind an authenticating proxy or an SSH tunnel",
              file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"MLflow tracking server on http://{shown}:{port} (store {mr.redact(backend_store_uri)}, "
          f"artifacts {artifacts}, allowed hosts {allowed}); Ctrl-C stops it", flush=True)
    cmd = server_command(backend_store_uri=backend_store_uri, artifacts_destination=artifacts,
                         host=host, port=port, allowed=allowed, workers=workers)
    env = dict(os.environ)
    # MLflow's background job runner (GenAI evaluation jobs; 7 processes) is not needed to track
    # searches; a user who wants it sets the variable to true
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return run_process_group(cmd, env)


def run_process_group(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` in a process group of its own and wait. SIGINT or SIGTERM to this process stop
    the whole group (``mlflow server`` and the uvicorn workers it starts), not the first process
    only: MLflow's server process does not pass SIGTERM on, and its workers would live on
    holding the port."""
    import signal
    import subprocess
    import time

    # a group of its own in this session (a terminal's Ctrl-C reaches this process only, which
    # stops the group; whoever cleans up this session still finds the server's processes)
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    proc = subprocess.Popen(cmd, env=env, **group)
    stopped: list[float] = []

    def stop(signum, frame) -> None:
        stopped.append(time.monotonic())
        _signal_group(proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopped and time.monotonic() - stopped[0] > STOP_GRACE_S:
                    _signal_group(proc.pid, signal.SIGKILL)
    except BaseException:
        _signal_group(proc.pid, signal.SIGKILL)
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _wait_group_gone(proc.pid)
    return 0 if stopped else code


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout: float = STOP_GRACE_S) -> None:
    """Wait until no process of the group is left (the workers end after their parent)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
