"""Joining a Ray cluster: a local Ray, or ``--address`` / ``$RAY_ADDRESS`` checked first.

Before ``ray.init`` (which waits for a silent address for minutes and, under token
authentication, fails after many lines of C++ logs) the address is probed: a TCP connection within
seconds, then one request to the cluster's GCS in a subprocess, which tells a missing or wrong Ray
token apart. The driver's environment that trials need (cache path, MLflow credentials, cloud
credentials, Hugging Face offline settings; :func:`forwarded_env`) travels in the job's
``runtime_env``: a worker node was started with its own environment, not the driver's. Values are
never printed, logged or stored; the names are printed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from mona_tune import ray_compat
from mona_tune.errors import MonaError
from mona_tune.tracking.server import tcp_fault

GCS_PROBE_TIMEOUT_S = 20.0
GCS_PORT = 6379  # an address without a port: Ray's default GCS port
CLIENT_PORT = 10001  # the same for ray:// (Ray's client server)

# what a trial on another node needs from the driver's environment
FORWARDED_NAMES = ("MONA_TUNE_CACHE", "TRANSFORMERS_OFFLINE", "TORCH_HOME", "HTTP_PROXY",
                   "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
                   "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
                   "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT")
FORWARDED_PREFIXES = ("MLFLOW_TRACKING_", "MLFLOW_S3_", "MLFLOW_GCS_", "MLFLOW_HTTP_REQUEST_",
                      "AWS_", "GOOGLE_", "AZURE_STORAGE_", "HF_")


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's variables that trials need on every node (names only are ever shown)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if k in FORWARDED_NAMES or k.startswith(FORWARDED_PREFIXES)}


# ---------------------------------------------------------------- addresses and tokens
def host_port(address: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``ray://host:port`` or ``http://host:port`` -> (host, port)."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port or default_port
    except ValueError:
        raise MonaError(f"{address}: not HOST:PORT (the port is not a number)") from None
    if not parsed.hostname:
        raise MonaError(f"{address}: not HOST:PORT")
    return parsed.hostname, port


def _token_source(environ) -> str | None:
    """Where this process would read a Ray token from, or None."""
    if environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    path = environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return path if Path(path).expanduser().is_file() else None
    default = Path("~/.ray/auth_token").expanduser()
    return str(default) if default.is_file() and default.read_text().strip() else None


def _probe_gcs(address: str, environ: dict[str, str]) -> str | None:
    """One GCS request in a subprocess (its C++ log lines stay out of the user's terminal):
    None when it answers, ``"auth"`` when it wants a token it did not get, else the error."""
    try:
        proc = subprocess.run([sys.executable, "-c", ray_compat.GCS_PROBE_SCRIPT, address], env=environ,
                              capture_output=True, text=True, timeout=GCS_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"it accepts connections but does not answer as a Ray cluster within " \
               f"{GCS_PROBE_TIMEOUT_S:g} s"
    return probe_verdict(proc.returncode, proc.stdout, proc.stderr)


def probe_verdict(returncode: int, stdout: str, stderr: str) -> str | None:
    """The GCS probe's outcome from its exit status and output (see :func:`_probe_gcs`)."""
    if returncode == 0:
        return None
    err_lines = stderr.strip().splitlines()
    text = stdout.strip() or (err_lines[-1] if err_lines else "")
    if "ModuleNotFoundError" in text or "ImportError" in text or "AttributeError" in text:
        return None  # a Ray without this client: let ray.init decide
    if "Authentication" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
        return "auth"
    return text or f"exit status {returncode}"


def _enable_token_auth() -> None:
    """Token authentication for this process: Ray reads ``RAY_AUTH_MODE`` into its C++ config
    when it is imported, so the config and the token cache are reloaded after setting it."""
    os.environ["RAY_AUTH_MODE"] = "token"
    ray_compat.reload_token_auth()


def check_address(address: str) -> None:
    """Fail within seconds, in one line, when ``address`` is not a Ray cluster this process can
    join; switch token authentication on when the cluster wants it and a token is at hand."""
    if address in ("auto", "local") or address.startswith("ray://"):
        if address.startswith("ray://"):
            host, port = host_port(address, CLIENT_PORT)
            fault = tcp_fault(host, port)
            if fault:
                raise MonaError(f"--address {address}: no Ray client server answers there "
                                f"({fault})")
        return
    host, port = host_port(address, GCS_PORT)
    fault = tcp_fault(host, port)
    if fault:
        raise MonaError(f"--address {address}: no Ray cluster answers there ({fault}); start one "
                        "with `ray start --head` or check the address")
    env = dict(os.environ)
    verdict = _probe_gcs(address, env)
    if verdict == "auth":
        source = _token_source(env)
        if source and env.get("RAY_AUTH_MODE", "").lower() != "token":
            env["RAY_AUTH_MODE"] = "token"
            verdict = _probe_gcs(address, env)
            if verdict is None:
                _enable_token_auth()  # this process joins with the token
                return
        if source is None:
            raise MonaError(
                f"--address {address}: the Ray cluster requires its authentication token; set "
                "RAY_AUTH_TOKEN (print it on the head with `ray get-auth-token`) or write it to "
                "~/.ray/auth_token, and RAY_AUTH_MODE=token")
        raise MonaError(f"--address {address}: the Ray cluster refused the token from {source}; "
                        "use the head's (`ray get-auth-token` on the head) and RAY_AUTH_MODE=token")
    if verdict is not None:
        raise MonaError(f"--address {address}: {verdict}")


def init_args(address: str | None, *, dashboard: bool, dashboard_port: int,
              env: dict[str, str]) -> dict:
    """What ``ray.init`` gets: ``address`` with ``env`` in the job's runtime_env, or a Ray
    started here (its processes inherit this environment as it is) with its dashboard on
    127.0.0.1 only."""
    common = dict(log_to_driver=True, logging_level=logging.WARNING)
    if address:
        return dict(address=address, runtime_env={"env_vars": env} if env else None, **common)
    return dict(include_dashboard=dashboard, dashboard_host="127.0.0.1",
                dashboard_port=dashboard_port, **common)


def http_url(url: str | None) -> str | None:
    """The dashboard URL Ray reports (``host:port``, or empty when there is none) as a link."""
    if url and not url.startswith("http"):
        url = "http://" + url
    return url or None


def join(address: str | None, *, dashboard: bool, dashboard_port: int,
         env: dict[str, str]) -> tuple[bool, str | None]:
    """Join ``address`` (or ``$RAY_ADDRESS``), whose trials get ``env`` through the job's
    runtime_env, or start a local Ray. Returns (started here, dashboard URL). A Ray already
    initialised in this process is used as it is (its runtime_env is its own)."""
    import ray

    if ray.is_initialized():
        return False, getattr(ray.get_runtime_context(), "dashboard_url", None)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address)
    info = ray.init(**init_args(address, dashboard=dashboard, dashboard_port=dashboard_port,
                                env=env))
    return True, http_url(getattr(info, "dashboard_url", None))


def dashboard_help(url: str | None) -> str:
    """How to open the dashboard and, with token authentication, where the token is kept (the
    token itself is never printed or logged)."""
    if not url:
        return "Ray dashboard: not running (install ray[default]; or the cluster has none)"
    lines = [f"Ray dashboard: {url} (while the search runs)"]
    mode = os.environ.get("RAY_AUTH_MODE", "")
    token_on = mode.lower() == "token"
    if not mode:
        token_on = ray_compat.token_auth_enabled()
    if token_on:
        where = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
        if os.environ.get("RAY_AUTH_TOKEN"):
            where = "$RAY_AUTH_TOKEN"
        lines.append(
            "  token authentication is on: the page asks for the cluster token; print it with "
            f"`ray get-auth-token` (it is kept in {where}); for HTTP clients send "
            "`Authorization: Bearer $(ray get-auth-token)`")
    return "\n".join(lines)
