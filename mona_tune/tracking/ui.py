"""``mona-tune ui``: the MLflow UI (``mlflow server``) on the search's tracking store.

Bound to 127.0.0.1 unless ``--host`` says otherwise: the UI can read and delete every run. With a
SQLite store, artifacts proxied through the server go beside the database (``mlartifacts/``), where
the searches keep theirs.
"""

from __future__ import annotations

import os
import sys

from mona_tune.errors import MonaError
from mona_tune.tracking import mlflow_runs as mr


def ui_command(host: str, port: int, tracking_uri: str) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    path = mr.sqlite_path(tracking_uri)
    if path is not None:
        cmd += ["--artifacts-destination", str(path.parent / "mlartifacts")]
    return cmd


def serve_ui(*, host: str = "127.0.0.1", port: int = 5000, tracking_uri: str | None = None) -> int:
    if not 0 < port < 65536:
        raise MonaError(f"--port {port}: not a TCP port")
    uri = mr.normalize_tracking_uri(tracking_uri) if tracking_uri else mr.default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise MonaError(f"--tracking-uri {uri}: that is a tracking server already; open it in a "
                        "browser")
    path = mr.sqlite_path(uri)
    if path is not None and not path.exists():
        raise MonaError(f"--tracking-uri {uri}: no MLflow store at {path} (run a search first)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {host} exposes the MLflow UI (and its delete buttons) beyond this "
              "machine", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"MLflow UI on http://{shown}:{port} (store {uri}); Ctrl-C stops it", flush=True)
    cmd = ui_command(host, port, uri)
    env = dict(os.environ)
    # MLflow's background job runner (GenAI evaluation jobs; 7 processes) is not needed to browse
    # searches; a user who wants it sets the variable to true
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # the server replaces this process: signals (Ctrl-C, a supervisor's SIGTERM) reach it directly
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
