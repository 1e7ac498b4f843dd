"""MLflow bookkeeping of a search: one parent run per search, one child run per trial.

Layout
- experiment ``mona-tune-<task>``; its artifacts live beside a SQLite store (``mlartifacts/``),
  or wherever a tracking server puts them;
- parent run (tag ``mona.role=search``, run name = the search name): task, scheduler, seed, code
  version, the space as ``space.yaml``, the curves PNG, the best trial's id and metric;
- child run per trial (tags ``mlflow.parentRunId``, ``ray_trial_id``, ``mona.role=trial``): the
  trial's TrainConfig as params, per-epoch metrics of both stages (step = global epoch), final
  metrics, the stage-1 embedder under ``embedder/`` and the outcome tag (``mona.outcome``:
  completed / stopped_early / diverged / failed);
- registered model ``mona-<task>-embedder``: one version per search (the best trial's embedder),
  alias ``best`` on the latest search's best.

Many trial processes write to one SQLite file; every call goes through :func:`retrying`, which
backs off and retries on "database is locked" (SQLite's busy timeout can still run out under load)
and through a tracking server's outage (refused connections, 5xx) of up to two minutes.
A client is created once per process and tracking URI.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

EXPERIMENT_PREFIX = "mona-tune-"
TAG_ROLE = "mona.role"
TAG_SEARCH = "mona.search_name"
TAG_TASK = "mona.task"
TAG_TRIAL_ID = "ray_trial_id"
TAG_OUTCOME = "mona.outcome"
TAG_OUTCOME_DETAIL = "mona.outcome_detail"
TAG_BEST_RUN = "mona.best_run_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_NODE_IP = "mona.node_ip"  # the Ray node a trial (its latest attempt) ran on
TAG_NODE_ID = "mona.node_id"
EMBEDDER_ARTIFACT = "embedder"
OUTCOMES = ("completed", "stopped_early", "diverged", "failed")


def registered_model_name(task: str) -> str:
    return f"mona-{task}-embedder"


# ---------------------------------------------------------------- tracking URI and client
def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a SQLite file ``mlflow.db`` in the current directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return normalize_tracking_uri(env)
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def tracking_uri_or_default(given: str | None) -> str:
    """``given`` (a ``--tracking-uri``) normalised, else :func:`default_tracking_uri`."""
    return normalize_tracking_uri(given) if given else default_tracking_uri()


def normalize_tracking_uri(uri: str) -> str:
    """Absolute SQLite paths (trial processes run in other directories); a bare ``*.db`` path
    becomes a SQLite URI."""
    if "://" not in uri and uri.endswith(".db"):
        return f"sqlite:///{Path(uri).expanduser().resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            return f"sqlite:///{Path(rel).expanduser().resolve()}"
    return uri


def redact(uri: str) -> str:
    """``uri`` without a password (``http://user:secret@host`` -> ``http://user:***@host``)."""
    import re

    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]+):[^@/]*@", r"\1:***@", uri)


DB_SCHEMES = ("postgresql", "mysql", "mssql")  # stores MLflow reaches through SQLAlchemy


def uri_scheme(uri: str) -> str:
    """``postgresql+psycopg://...`` -> ``postgresql``; a plain path -> ``""``."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path("/" + uri.removeprefix("sqlite:///").lstrip("/"))


def artifact_root(uri: str) -> str | None:
    """Where a store the client writes directly keeps artifacts: ``mlartifacts/`` beside a SQLite
    file, ``./mlartifacts`` (made absolute) for a database store; absolute, since trial processes
    do not share the driver's working directory. A tracking server decides for itself (None)."""
    path = sqlite_path(uri)
    if path is not None:
        return (path.parent / "mlartifacts").as_uri()
    if uri_scheme(uri) in DB_SCHEMES:
        return (Path.cwd().resolve() / "mlartifacts").as_uri()
    return None


def planned_artifact_location(uri: str, task: str) -> str | None:
    """The artifact location of the task's experiment: its own where it exists, else the one
    :func:`ensure_experiment` will give it (None: the tracking server decides)."""
    name = EXPERIMENT_PREFIX + task
    if not is_sqlite(uri):
        exp = retrying(get_client(uri).get_experiment_by_name, name)
        if exp is not None:
            return exp.artifact_location
    root = artifact_root(uri)
    return f"{root}/{name}" if root else None


def _is_locked(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return ("database is locked" in text or "database table is locked" in text
            or "operationalerror" in text and "locked" in text)


# what a tracking server that is down, restarting or overloaded makes MLflow's client raise
_OUTAGE_TEXTS = ("connection refused", "max retries exceeded", "failed to establish",
                 "connectionerror", "connection aborted", "remotedisconnected",
                 "connection reset", "read timed out", "temporarily unavailable")
OUTAGE_S = 120.0  # how long a tracking call keeps retrying through a server outage
_outage_bound_s = 0.0  # in this process (see ride_out_outages)
# MLflow's own HTTP retries, bounded (its defaults retry for minutes): ours do the waiting
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _is_outage(err: BaseException) -> bool:
    import re

    text = f"{type(err).__name__}: {err}".lower()
    return any(t in text for t in _OUTAGE_TEXTS) or re.search(r"error code 5\d\d", text) is not None


def ride_out_outages(seconds: float = OUTAGE_S) -> None:
    """From now on, in this process, tracking calls retry through a tracking server's outage
    for up to ``seconds``: a search and its trials do, once the server answered; a command
    pointed at a server that is not there fails at once."""
    global _outage_bound_s
    _outage_bound_s = seconds


def retrying(fn: Callable[..., T], *args, attempts: int = 8, **kwargs) -> T:
    """Call ``fn``; back off (exponentially, with jitter) and try again on a locked SQLite
    database (``attempts`` times) or, after :func:`ride_out_outages`, an unreachable or failing
    (5xx) tracking server. A retried batch carries the same timestamps, so a store that took it
    before the error keeps one copy."""
    delay, locked, start = 0.2, 0, time.monotonic()
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MlflowException wraps sqlalchemy's and requests' errors
            if _is_locked(err):
                locked += 1
                if locked >= attempts:
                    raise
                logger.info("tracking store busy (%s); retry %d in %.1fs", err, locked, delay)
            elif _is_outage(err) and time.monotonic() - start + delay < _outage_bound_s:
                logger.warning("tracking server unreachable (%s); retrying in %.1fs",
                               str(err).splitlines()[0][:200], delay)
            else:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 8.0)


@functools.lru_cache(maxsize=4)
def get_client(tracking_uri: str):
    """One ``MlflowClient`` per process and URI (trial actors are reused across trials)."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(tracking_uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # MLflow prints "View run ... at: <tracking URI>" when a run ends: a password in the URI
    # would reach every trial's log (the summary prints the URI redacted)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def code_version() -> dict[str, str]:
    """``mona_tune.__version__`` and, in a git checkout, the commit (``+dirty`` if modified)."""
    from mona_tune import __version__

    out = {"mona_tune_version": __version__}
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                    "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            if commit:
                out["git_commit"] = commit + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return out


# ---------------------------------------------------------------- experiment and parent run
# MLflow 3 tells GenAI experiments (traces) from model-training ones (runs) by this tag
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(tracking_uri: str, task: str) -> str:
    """The id of experiment ``mona-tune-<task>``, created on first use; marked as a
    model-training experiment (:data:`TAG_EXPERIMENT_KIND`), an existing one too where it lacks
    the mark (one a user marked otherwise keeps the user's choice)."""
    client = get_client(tracking_uri)
    name = EXPERIMENT_PREFIX + task
    exp = retrying(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            retrying(client.restore_experiment, exp.experiment_id)
        if not exp.tags.get(TAG_EXPERIMENT_KIND):
            retrying(client.set_experiment_tag, exp.experiment_id, TAG_EXPERIMENT_KIND,
                     EXPERIMENT_KIND)
        return exp.experiment_id
    root = artifact_root(tracking_uri)
    location = f"{root}/{name}" if root else None
    try:
        return retrying(client.create_experiment, name, artifact_location=location,
                        tags={TAG_TASK: task, TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
    except Exception:
        exp = client.get_experiment_by_name(name)  # created concurrently
        if exp is None:
            raise
        return exp.experiment_id


def _params(values: dict[str, Any]):
    from mlflow.entities import Param

    out = []
    for k, v in values.items():
        text = "" if v is None else str(v)
        out.append(Param(k, text[:6000]))
    return out


def _log_params(client, run_id: str, values: dict[str, Any]) -> None:
    params = _params(values)
    for i in range(0, len(params), 100):
        retrying(client.log_batch, run_id, params=params[i:i + 100])


def log_params(tracking_uri: str, run_id: str, values: dict[str, Any]) -> None:
    """Params added to a run. A trial continued from its checkpoint (a retry, another node, a
    resumed search) logs its params again, and some differ (a node's own cache path): MLflow
    refuses to change a param, so the first value stays and a later one is kept as the tag
    ``mona.later.<key>``."""
    client = get_client(tracking_uri)
    have = retrying(client.get_run, run_id).data.params
    new = {p.key: p.value for p in _params(values)}
    _log_params(client, run_id, {k: v for k, v in new.items() if k not in have})
    later = {f"mona.later.{k}": v for k, v in new.items() if k in have and have[k] != v}
    if later:
        set_tags(tracking_uri, run_id, later)


def start_train_run(tracking_uri: str, experiment_id: str, *, task: str,
                    params: dict[str, Any]) -> str:
    """The run of one ``mona-tune train`` (role ``train``: ``best`` ranks trials only)."""
    client = get_client(tracking_uri)
    tags = {TAG_ROLE: "train", TAG_TASK: task}
    run = retrying(client.create_run, experiment_id, tags=tags, run_name=f"train-{task}")
    _log_params(client, run.info.run_id, {**params, **code_version()})
    return run.info.run_id


def start_parent_run(tracking_uri: str, experiment_id: str, *, name: str, task: str,
                     params: dict[str, Any], space_yaml: str) -> str:
    """Create the parent run of a search; returns its id."""
    import tempfile

    client = get_client(tracking_uri)
    tags = {TAG_ROLE: "search", TAG_SEARCH: name, TAG_TASK: task}
    run = retrying(client.create_run, experiment_id, tags=tags, run_name=name)
    run_id = run.info.run_id
    _log_params(client, run_id, {**params, **code_version()})
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "space.yaml").write_text(space_yaml)
        retrying(client.log_artifact, run_id, str(Path(d) / "space.yaml"))
    return run_id


def reopen_run(tracking_uri: str, run_id: str) -> None:
    retrying(get_client(tracking_uri).update_run, run_id, status="RUNNING")


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    retrying(get_client(tracking_uri).set_terminated, run_id, status=status)


def set_tags(tracking_uri: str, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    batch = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
    retrying(get_client(tracking_uri).log_batch, run_id, tags=batch)


def store_shared_view(tracking_uri: str, experiment_id: str, tag: str, state: str) -> bool:
    """Store an MLflow UI view (an experiment tag the UI reads); False, with a warning, where it
    could not be written (the view is a convenience: the search goes on)."""
    try:
        retrying(get_client(tracking_uri).set_experiment_tag, experiment_id, tag, state)
    except Exception as e:
        logger.warning("could not store the MLflow UI view: %s", e)
        return False
    return True

def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    """One batched write of numeric metrics at ``step``."""
    import math

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = []
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and math.isnan(v):
            continue
        batch.append(Metric(k, float(v), ts, int(step)))
    if batch:
        retrying(get_client(tracking_uri).log_batch, run_id, metrics=batch)


def log_artifacts(tracking_uri: str, run_id: str, local_dir: Path, artifact_path: str) -> None:
    retrying(get_client(tracking_uri).log_artifacts, run_id, str(local_dir), artifact_path)


def log_artifact(tracking_uri: str, run_id: str, local_file: Path,
                 artifact_path: str | None = None) -> None:
    retrying(get_client(tracking_uri).log_artifact, run_id, str(local_file), artifact_path)


# ---------------------------------------------------------------- child runs
def find_child_run(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str):
    """The child run of ``trial_id`` under this parent, or None."""
    client = get_client(tracking_uri)
    runs = retrying(
        client.search_runs, [experiment_id],
        filter_string=(f"tags.{TAG_TRIAL_ID} = '{trial_id}' and "
                       f"tags.`{TAG_PARENT}` = '{parent_run_id}'"),
        max_results=5,
    )
    return runs[0] if runs else None


@dataclass
class ChildRun:
    run_id: str
    logged_up_to: int = -1  # last global epoch already in the run (-1: none)
    outcome: str | None = None  # the outcome tag of an earlier attempt
    metrics: dict = field(default_factory=dict)  # latest metric values of an earlier attempt


def open_child_run(tracking_uri: str, experiment_id: str, parent_run_id: str, *, trial_id: str,
                   trial_name: str, search_name: str, task: str,
                   params: dict[str, Any]) -> ChildRun:
    """The trial's child run: found by its ``ray_trial_id`` tag (a retried or resumed trial
    continues its run) or created. Reports the last global epoch already logged, so that re-run
    epochs are not logged twice, and an earlier attempt's outcome (a trial that completed just
    before its driver died is not trained again)."""
    client = get_client(tracking_uri)
    run = find_child_run(tracking_uri, experiment_id, parent_run_id, trial_id)
    if run is not None:
        run_id = run.info.run_id
        outcome = run.data.tags.get(TAG_OUTCOME)
        if outcome == "completed":
            return ChildRun(run_id, outcome=outcome, metrics=dict(run.data.metrics))
        if run.info.status != "RUNNING":
            reopen_run(tracking_uri, run_id)
        history = retrying(client.get_metric_history, run_id, "global_epoch")
        last = max((int(m.step) for m in history), default=-1)
        attempts = int(run.data.tags.get("mona.attempts", 1)) + 1
        set_tags(tracking_uri, run_id, {"mona.attempts": attempts})
        return ChildRun(run_id, logged_up_to=last, outcome=outcome)
    tags = {TAG_PARENT: parent_run_id, TAG_TRIAL_ID: trial_id, TAG_ROLE: "trial",
            TAG_SEARCH: search_name, TAG_TASK: task, "mona.attempts": "1"}
    run = retrying(client.create_run, experiment_id, tags=tags, run_name=trial_name)
    _log_params(client, run.info.run_id, params)
    return ChildRun(run.info.run_id)


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list:
    client = get_client(tracking_uri)
    out, token = [], None
    while True:
        page = retrying(client.search_runs, [experiment_id],
                        filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
                        max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


# ---------------------------------------------------------------- registry
def register_embedder(tracking_uri: str, task: str, run_id: str, *, alias: str = "best",
                      tags: dict[str, Any] | None = None):
    """Register ``runs:/<run_id>/embedder`` as a new version of ``mona-<task>-embedder`` and point
    ``alias`` at it; a run registered before keeps its version (and the alias stays where it is).
    Returns the model version."""
    from mlflow.exceptions import MlflowException

    client = get_client(tracking_uri)
    name = registered_model_name(task)
    try:
        retrying(client.create_registered_model, name,
                 description="Stage-1 target embedders of mona-tune searches "
                             "(load with `mona-tune best --export DIR`).")
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    existing = retrying(client.search_model_versions,
                        f"name = '{name}' and run_id = '{run_id}'")
    if existing:  # a resumed search that had already finished: nothing new to register
        return existing[0]
    version = retrying(client.create_model_version, name,
                       source=f"runs:/{run_id}/{EMBEDDER_ARTIFACT}", run_id=run_id,
                       tags={k: str(v) for k, v in (tags or {}).items()})
    retrying(client.set_registered_model_alias, name, alias, version.version)
    return version


def embedder_location(tracking_uri: str, run_id: str) -> str:
    """Where the run's ``embedder/`` artifact lives (a local path for a SQLite store)."""
    uri = retrying(get_client(tracking_uri).get_run, run_id).info.artifact_uri
    loc = f"{uri.rstrip('/')}/{EMBEDDER_ARTIFACT}"
    return loc.removeprefix("file://") if loc.startswith("file:///") else loc


def download_embedder(tracking_uri: str, run_id: str, dst: Path) -> Path:
    """Download a trial's ``embedder/`` directory into ``dst`` (created); returns ``dst``."""
    import shutil
    import tempfile

    client = get_client(tracking_uri)
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(retrying(client.download_artifacts, run_id, EMBEDDER_ARTIFACT, tmp))
        dst.mkdir(parents=True, exist_ok=True)
        for item in local.iterdir():
            target = dst / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), target)
    return dst


def iter_metric_keys(runs: Iterable) -> list[str]:
    keys: set[str] = set()
    for r in runs:
        keys.update(r.data.metrics)
    return sorted(keys)
