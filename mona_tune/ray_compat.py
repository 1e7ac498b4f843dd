"""Every use of Ray's private API, in one place, each read from Ray 2.60.0.

mona-tune reaches below Ray's public API where nothing public does the job: exact resume after a
mixed snapshot (``search/resumable.py`` subclasses Tune's searchers and schedulers and reads their
state), probing a cluster's GCS and its token authentication before ``ray.init`` (``cluster/``),
and the searcher behind a restored ``Tuner``. The functions below are the only ways the package
touches those names outside the subclasses, and :data:`PRIVATE_NAMES` lists every name the
subclasses read or write. ``tests/unit/test_ray_compat.py`` checks each one against the installed
Ray, so an upgrade that renames one fails loudly there instead of silently at a resume;
``pyproject.toml`` bounds ``ray`` to the minor versions tested (:data:`TESTED`).
"""

from __future__ import annotations

TESTED = ("2.60",)

# (owner as module:qualname, attribute, kind, what mona-tune uses it for). kind "instance": set
# as ``self.<attribute>`` by the owner or a base class; "class"/"module": an attribute of it
PRIVATE_NAMES: tuple[tuple[str, str, str, str], ...] = (
    ("ray._raylet:GcsClient", "", "class", "probing a cluster's GCS before ray.init"),
    ("ray._raylet:Config", "initialize", "class", "reloading RAY_AUTH_MODE after import"),
    ("ray._raylet:AuthenticationTokenLoader", "instance", "class", "the token cache, reloaded"),
    ("ray._private.authentication.authentication_utils", "is_token_auth_enabled", "module",
     "whether the dashboard asks for a token"),
    ("ray.tune.tuner:Tuner", "_local_tuner", "instance", "the restored Tuner's searcher"),
    ("ray.tune.impl.tuner_internal:TunerInternal", "_tune_config", "instance",
     "the restored Tuner's searcher"),
    ("ray.tune.execution.tune_controller:TuneController", "_checkpoint_manager", "instance",
     "asking for a snapshot now"),
    ("ray.tune.execution.experiment_state:_ExperimentCheckpointManager",
     "_should_force_sync_up", "instance", "asking for a snapshot now"),
    ("ray.tune.search.optuna:OptunaSearch", "_ot_trials", "instance", "the study's trials"),
    ("ray.tune.search.optuna:OptunaSearch", "_ot_study", "instance", "the study itself"),
    ("ray.tune.search.optuna:OptunaSearch", "_completed_trials", "instance", "told trials"),
    ("ray.tune.search.optuna:OptunaSearch", "_space", "instance", "the searched names"),
    ("ray.tune.search.optuna:OptunaSearch", "_metric", "instance", "the reported metric"),
    ("ray.tune.search:ConcurrencyLimiter", "live_trials", "instance", "the slots held"),
    ("ray.tune.search:ConcurrencyLimiter", "num_unfinished_live_trials", "instance",
     "the slots held"),
    ("ray.tune.search:SearchGenerator", "_counter", "instance", "the trials created"),
    ("ray.tune.search:BasicVariantGenerator", "_live_trials", "instance", "the slots held"),
    ("ray.tune.schedulers:ASHAScheduler", "_trial_info", "instance", "a trial's bracket"),
    ("ray.tune.schedulers:ASHAScheduler", "_time_attr", "instance", "the rungs' time"),
    ("ray.tune.schedulers:ASHAScheduler", "_metric", "instance", "the rungs' metric"),
    ("ray.tune.schedulers:ASHAScheduler", "_metric_op", "instance", "the rungs' sign"),
    ("ray.tune.schedulers.async_hyperband:_Bracket", "on_result", "class", "rebuilding rungs"),
    ("ray.train._internal.session:_TrainingResult", "", "class",
     "a checkpoint found in a restored trial's folder"),
)
AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


def missing() -> list[str]:
    """The names of :data:`PRIVATE_NAMES` the installed Ray lacks (empty: all there)."""
    import importlib
    import inspect

    out = []
    for owner, attr, kind, _ in PRIVATE_NAMES:
        module, _, qualname = owner.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in filter(None, qualname.split(".")):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            out.append(owner)
            continue
        if kind == "instance":
            sources = [inspect.getsource(c) for c in obj.__mro__
                       if c.__module__.startswith("ray.")]
            found = any(f"self.{attr} =" in s or f"self.{attr}: " in s for s in sources)
        else:
            found = not attr or hasattr(obj, attr)
        if not found:
            out.append(f"{owner}.{attr}")
    return out


def tuner_search_alg(tuner):
    """The search algorithm a ``Tuner`` (built or restored) runs with, or None."""
    try:
        return tuner._local_tuner._tune_config.search_alg
    except AttributeError:
        return None


def register_checkpoint(trial, dir_name: str, result: dict) -> None:
    """Make ``trial`` (restored, not started) continue from its checkpoint folder ``dir_name``,
    with ``result`` (the result reported with that checkpoint) as its last result."""
    import time
    from pathlib import PurePosixPath

    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    result = {"trial_id": trial.trial_id, "config": trial.config, **result}
    path = str(PurePosixPath(trial.storage.trial_fs_path, dir_name))
    trial.on_checkpoint(_TrainingResult(
        checkpoint=Checkpoint(path=path, filesystem=trial.storage.storage_filesystem),
        metrics=result))
    trial.run_metadata.last_result = result
    trial.run_metadata.last_result_time = time.time()


def snapshot_soon(tune_controller) -> None:
    """Ask Tune for an experiment snapshot at the end of the current step (a private flag of its
    checkpoint manager; without it, the periodic snapshots remain)."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    manager = getattr(controller, "_checkpoint_manager", None)
    if manager is not None and hasattr(manager, "_should_force_sync_up"):
        manager._should_force_sync_up = True


def reload_token_auth() -> None:
    """Make this process read ``RAY_AUTH_MODE`` (set after Ray was imported) and the token anew."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # a Ray without these: the variable alone
        pass


def token_auth_enabled() -> bool:
    """Whether the running Ray asks for a token (False where Ray has no token authentication)."""
    try:
        from ray._private.authentication import authentication_utils as au

        return bool(au.is_token_auth_enabled())
    except Exception:  # older Ray: no token authentication
        return False


# run by cluster.join in a subprocess, so that the GCS client's C++ log lines stay out of the
# user's terminal; exit 1 with the error on its one line
GCS_PROBE_SCRIPT = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"session_name", b"session", timeout=8)
except Exception as e:
    print(type(e).__name__ + ": " + " ".join(str(e).split())[:300])
    sys.exit(1)
"""
