"""Joining a Ray cluster and checking every node of it before any trial starts.

- :func:`join` starts a local Ray or joins ``--address`` / ``$RAY_ADDRESS``. Before ``ray.init``
  (which waits for a silent address for minutes and, under token authentication, fails after many
  lines of C++ logs) the address is probed: a TCP connection within seconds, then one request to
  the cluster's GCS in a subprocess, which tells a missing or wrong Ray token apart.
- The driver's environment that trials need (cache path, MLflow credentials, cloud credentials,
  Hugging Face offline settings; :func:`forwarded_env`) travels in the job's ``runtime_env``:
  a worker node was started with its own environment, not the driver's. Values are never printed,
  logged or stored; the names are printed.
- :func:`preflight` runs a small task pinned to every alive node: the storage path is the same
  place from every node (a marker written by the driver is read there, and each node's marker is
  read back by the driver), the tracking store is reachable from there and is not a file on the
  driver's disk only, and the data paths exist. A fault is one line naming the node, before
  anything is written to the tracking store or the storage.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from mona_tune.errors import MonaError
from mona_tune.search import storage
from mona_tune.tracking.server import store_fault, tcp_fault

logger = logging.getLogger(__name__)

GCS_PROBE_TIMEOUT_S = 20.0
PREFLIGHT_TIMEOUT_S = 60.0
MARKER_PREFIX = ".mona-preflight-"

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


_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"session_name", b"session", timeout=8)
except Exception as e:
    print(type(e).__name__ + ": " + " ".join(str(e).split())[:300])
    sys.exit(1)
"""


def _probe_gcs(address: str, environ: dict[str, str]) -> str | None:
    """One GCS request in a subprocess (its C++ log lines stay out of the user's terminal):
    None when it answers, ``"auth"`` when it wants a token it did not get, else the error."""
    try:
        proc = subprocess.run([sys.executable, "-c", _GCS_PROBE, address], env=environ,
                              capture_output=True, text=True, timeout=GCS_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"it accepts connections but does not answer as a Ray cluster within " \
               f"{GCS_PROBE_TIMEOUT_S:g} s"
    if proc.returncode == 0:
        return None
    err_lines = proc.stderr.strip().splitlines()
    text = proc.stdout.strip() or (err_lines[-1] if err_lines else "")
    if "ModuleNotFoundError" in text or "ImportError" in text or "AttributeError" in text:
        return None  # a Ray without this client: let ray.init decide
    if "Authentication" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
        return "auth"
    return text or f"exit status {proc.returncode}"


def _enable_token_auth() -> None:
    """Token authentication for this process: Ray reads ``RAY_AUTH_MODE`` into its C++ config
    when it is imported, so the config and the token cache are reloaded after setting it."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # a Ray without these: the variable alone
        pass


def check_address(address: str) -> None:
    """Fail within seconds, in one line, when ``address`` is not a Ray cluster this process can
    join; switch token authentication on when the cluster wants it and a token is at hand."""
    if address in ("auto", "local") or address.startswith("ray://"):
        if address.startswith("ray://"):
            host, port = host_port(address, 10001)
            fault = tcp_fault(host, port)
            if fault:
                raise MonaError(f"--address {address}: no Ray client server answers there "
                                f"({fault})")
        return
    host, port = host_port(address, 6379)
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


def join(address: str | None, *, dashboard: bool, dashboard_port: int,
         env: dict[str, str]) -> tuple[bool, str | None]:
    """Join ``address`` (or ``$RAY_ADDRESS``), whose trials get ``env`` through the job's
    runtime_env, or start a local Ray. Returns (started here, dashboard URL). A Ray already
    initialised in this process is used as it is (its runtime_env is its own)."""
    import ray

    if ray.is_initialized():
        return False, getattr(ray.get_runtime_context(), "dashboard_url", None)
    address = address or os.environ.get("RAY_ADDRESS")
    common = dict(log_to_driver=True, logging_level=logging.WARNING)
    if address:
        check_address(address)
        info = ray.init(address=address, runtime_env={"env_vars": env} if env else None,
                        **common)
    else:  # a Ray started here: its processes inherit this environment as it is
        info = ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1",
                        dashboard_port=dashboard_port, **common)
    url = getattr(info, "dashboard_url", None) or None
    if url and not url.startswith("http"):
        url = "http://" + url
    return True, url


def dashboard_help(url: str | None) -> str:
    """How to open the dashboard and, with token authentication, where the token is kept (the
    token itself is never printed or logged)."""
    if not url:
        return "Ray dashboard: not running (install ray[default]; or the cluster has none)"
    lines = [f"Ray dashboard: {url} (while the search runs)"]
    mode = os.environ.get("RAY_AUTH_MODE", "")
    token_on = mode.lower() == "token"
    if not mode:
        try:
            from ray._private.authentication import authentication_utils as au

            token_on = bool(au.is_token_auth_enabled())
        except Exception:  # older Ray: no token authentication
            token_on = False
    if token_on:
        where = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
        if os.environ.get("RAY_AUTH_TOKEN"):
            where = "$RAY_AUTH_TOKEN"
        lines.append(
            "  token authentication is on: the page asks for the cluster token; print it with "
            f"`ray get-auth-token` (it is kept in {where}); for HTTP clients send "
            "`Authorization: Bearer $(ray get-auth-token)`")
    return "\n".join(lines)


# ---------------------------------------------------------------- nodes
@dataclass(frozen=True)
class Node:
    node_id: str
    ip: str
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        return f"node {self.ip} ({self.node_id[:8]})"


def alive_nodes() -> list[Node]:
    import ray

    out = []
    for n in ray.nodes():
        if n.get("Alive"):
            res = n.get("Resources", {})
            out.append(Node(n["NodeID"], n.get("NodeManagerAddress", "?"),
                            float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))))
    return out


def lost_nodes(before: list[Node]) -> list[Node]:
    """The nodes of ``before`` (alive when the search started) that Ray no longer lists as alive:
    dead (a killed raylet, a lost machine; Ray marks a node dead once its health checks fail) or
    gone from its node table."""
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    return [n for n in before if n.node_id not in alive]


def pinned(fn, node: Node, **options):
    """``fn`` as a Ray task that runs on ``node`` only (never elsewhere, never queued for a node
    that cannot hold it: callers size ``num_cpus`` from the node's own resources)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
    return ray.remote(max_retries=0, **options)(fn).options(scheduling_strategy=strategy)


def gather(refs: dict, timeout: float, what: str) -> dict:
    """``ray.get`` of node -> ref with a deadline: a node that does not answer is named."""
    import ray

    ready, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    if pending:
        late = [n for n, r in refs.items() if r in pending]
        for r in pending:
            ray.cancel(r, force=True)
        raise MonaError(f"{late[0].label}: {what} did not finish within {timeout:g} s"
                        + (f" (and {len(late) - 1} more nodes)" if len(late) > 1 else ""))
    out = {}
    for node, ref in refs.items():
        try:
            out[node] = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            msg = cause.args[0] if isinstance(cause, MonaError) and cause.args else \
                f"{type(cause).__name__}: {cause}".splitlines()[0]
            raise MonaError(f"{node.label}: {what}: {msg}") from None
    return out


# ---------------------------------------------------------------- preflight
@dataclass
class PreflightSpec:
    """What every node must see. Local paths are checked with a marker file the driver writes."""

    storage: str  # absolute path or URI
    tracking_uri: str
    marker: str = field(default_factory=lambda: MARKER_PREFIX + uuid.uuid4().hex[:12])
    # (label, local directory) that must be the driver's own directory on every node
    shared_dirs: list[tuple[str, str]] = field(default_factory=list)
    # (label, path) that must exist on every node (read-only inputs)
    inputs: list[tuple[str, str]] = field(default_factory=list)


def _storage_marker(spec: PreflightSpec, suffix: str = "") -> str:
    return f"{spec.storage.rstrip('/')}/{spec.marker}{suffix}"


def check_node(spec: PreflightSpec) -> list[str]:
    """Runs on one node: what this node cannot see or reach (empty: all is well). Writes this
    node's storage marker, which the driver reads back."""
    import ray

    faults = []
    node_id = ray.get_runtime_context().get_node_id()
    if storage.read_text(_storage_marker(spec)) != spec.marker:
        faults.append(f"--storage {spec.storage} is not the driver's: a file the driver wrote "
                      "there is missing on this node (use a filesystem every node mounts, or "
                      "s3:// / gs://)")
    else:
        try:
            storage.write_bytes(_storage_marker(spec, "." + node_id), node_id.encode())
        except OSError as e:
            faults.append(f"--storage {spec.storage} is not writable here ({e})")
    for label, directory in spec.shared_dirs:
        if not Path(directory, spec.marker).is_file():
            faults.append(f"{label} {directory} is on the driver's disk only (a file the driver "
                          "wrote there is missing on this node)")
    fault = store_fault(spec.tracking_uri)
    if fault:
        faults.append(fault)
    for label, path in spec.inputs:
        if not Path(path).exists():
            faults.append(f"{label} {path} does not exist on this node")
    return faults


def _mkdirs(path: Path, created: list[Path]) -> None:
    """``mkdir -p`` that records the folders it made (removed again after the check)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    created.extend(missing)  # deepest first


def _driver_writes(spec: PreflightSpec, written: list[str], created: list[Path]) -> None:
    """Place the markers (recorded in ``written``, folders made in ``created``). A storage path
    or folder that cannot be created or written is the driver's own fault, named as such."""
    if not storage.is_uri(spec.storage):
        try:
            _mkdirs(Path(spec.storage), created)
        except OSError as e:
            raise MonaError(f"--storage {spec.storage}: cannot create it ({e.strerror or e})") \
                from None
    try:
        storage.write_bytes(_storage_marker(spec), spec.marker.encode())
        written.append(_storage_marker(spec))
    except OSError as e:
        raise MonaError(f"--storage {spec.storage}: cannot write there ({e})") from None
    for label, directory in spec.shared_dirs:
        path = Path(directory, spec.marker)
        try:
            _mkdirs(Path(directory), created)
            path.write_text(spec.marker)
        except OSError as e:
            raise MonaError(f"{label} {directory}: cannot write there ({e.strerror or e})") \
                from None
        written.append(str(path))


def _clean(written: list[str], created: list[Path]) -> None:
    for path in written:
        storage.delete(path)
    for folder in created:
        try:
            folder.rmdir()  # only if still empty
        except OSError:
            pass


def preflight(spec: PreflightSpec, nodes: list[Node],
              timeout: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """Check every node (see the module docstring). Raises MonaError naming the first node at
    fault; returns warnings (things that work but are unwise)."""
    written: list[str] = []
    created: list[Path] = []
    try:
        _driver_writes(spec, written, created)
        refs = {n: pinned(check_node, n, num_cpus=0).remote(spec) for n in nodes}
        written.extend(_storage_marker(spec, "." + n.node_id) for n in nodes)
        results = gather(refs, timeout, "the preflight check")
        bad = [(n, f) for n, faults in results.items() for f in faults]
        if bad:
            node, fault = bad[0]
            more = f" (and {len(bad) - 1} more faults)" if len(bad) > 1 else ""
            raise MonaError(f"{node.label}: {fault}{more}")
        for n in nodes:  # each node's write is visible here: the same storage everywhere
            if storage.read_text(_storage_marker(spec, "." + n.node_id)) != n.node_id:
                raise MonaError(f"{n.label}: --storage {spec.storage}: what this node wrote is "
                                "not visible to the driver (not the same storage)")
    except BaseException:
        _clean(written, created)
        raise
    _clean(written, [])  # the checked folders stay: the search uses them
    warnings = []
    if len(nodes) > 1 and spec.tracking_uri.startswith("sqlite:"):
        warnings.append(f"warning: {len(nodes)} Ray nodes share a SQLite tracking store on a "
                        "shared filesystem; an MLflow server (`mona-tune tracking-server`) is "
                        "safer for many trials")
    return warnings
