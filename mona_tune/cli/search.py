"""Flags and handlers of ``mona-tune search`` and ``mona-tune best``.

Precedence for the budget and the scheduler: a flag, else the space file's ``budget`` /
``scheduler`` sections, else the defaults of ``SearchBudget`` / ``SchedulerSpec``. Everything a user
can get wrong (the space file, a flag, an unknown search name) is checked before Ray starts.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

import yaml

from mona_tune.errors import MonaError

# TrainConfig fields with their own flag here (the rest through --set KEY=VALUE); their help is
# the field's description
_FIELD_FLAGS = ("source_model", "weights", "source_data", "data_dir", "device")


# long: one argparse declaration per flag, grouped as `mona-tune search --help` shows them
def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Hyperparameter search over MoNA training runs with Ray Tune (Optuna TPE or "
                     "random sampling, ASHA or FIFO scheduling); every trial tracked in MLflow.")
    p.add_argument("--task", default="darcy", help="task to search (default: darcy)")
    p.add_argument("--space", default=None,
                   help="search space: a YAML file or a packaged space name (darcy, darcy-paper, "
                        "pdebench-darcy); default: the task's packaged space")
    p.add_argument("--name", default=None,
                   help="search name = Tune experiment directory under --storage and MLflow parent "
                        "run name (default: <task>-<date>-<time>)")
    p.add_argument("--storage", default=None,
                   help="Tune storage: a path (default ./runs) or URI (s3://, gs://, file://)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted search --name (its settings are reused)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                        "sqlite:///<cwd>/mlflow.db; with --resume: the search's own, unless the "
                        "same store is now reached at another address)")
    g = p.add_argument_group("search")
    g.add_argument("--sampler", "--search", dest="sampler", choices=["optuna", "random"],
                   default="optuna", help="Optuna TPE (default) or seeded random sampling")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    g.add_argument("--num-samples", type=int, default=None, help="trials (default: space file, 8)")
    g.add_argument("--max-concurrent", type=int, default=None,
                   help="trials running at once (default: space file, 2)")
    g.add_argument("--time-budget", type=float, default=None, dest="time_budget_s",
                   help="seconds after which no new trial starts and running ones stop")
    g = p.add_argument_group("scheduler")
    g.add_argument("--scheduler", choices=["asha", "fifo"], default=None,
                   help="ASHA early stopping on stage-2 epochs (default) or FIFO (no stopping)")
    g.add_argument("--grace-period", type=int, default=None,
                   help="stage-2 epochs before ASHA may stop a trial (default: space file, 1)")
    g.add_argument("--reduction-factor", type=float, default=None,
                   help="ASHA keeps 1/reduction_factor of the trials at each rung (default 2)")
    g.add_argument("--max-t", type=int, default=None,
                   help="ASHA's max_t in stage-2 epochs (default: the stage-2 epoch budget)")
    g = p.add_argument_group("resources and fault tolerance")
    g.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs per trial, also its torch threads (default 1)")
    g.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs per trial; fractions pack trials on one GPU (default 0)")
    g.add_argument("--max-failures", type=int, default=2,
                   help="retries of a failing trial from its latest checkpoint (default 2)")
    g.add_argument("--checkpoint-keep", type=int, default=None,
                   help="best checkpoints kept per trial, plus the latest (default: space file, 2)")
    g.add_argument("--address", default=None,
                   help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    g.add_argument("--prepare-timeout", type=float, default=1800.0, dest="prepare_timeout_s",
                   help="seconds for generating the data and training the embedded source model "
                        "before the trials (default 1800)")
    g.add_argument("--dashboard", action="store_true",
                   help="start the Ray dashboard on 127.0.0.1 and print how to open it")
    g.add_argument("--dashboard-port", type=int, default=8265)
    g = p.add_argument_group("fixed training fields (override the space file)")
    from mona_tune.config import TrainConfig

    for fld in _FIELD_FLAGS:
        g.add_argument("--" + fld.replace("_", "-"), dest=f"fix_{fld}", default=None,
                       help=TrainConfig.model_fields[fld].description,
                       metavar=fld.split("_")[-1].upper())
    g.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="fix any TrainConfig field, e.g. --set epochs=10 (repeatable; YAML values)")
    p.add_argument("--no-register", action="store_true",
                   help="do not register the best embedder in the MLflow model registry")
    p.add_argument("--quiet", action="store_true", help="no live trial table")
    p.set_defaults(func=run_search_command)


def add_best_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "The best trials of a search (or of all searches of a task), read from MLflow."
    p.add_argument("--name", default=None, help="search name (default: all searches of --task)")
    p.add_argument("--task", default=None, help="task (default: darcy when --name is not given)")
    p.add_argument("--top", type=int, default=5, help="trials to list (default 5)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="write the best trial's embedder and its config to DIR "
                        "(then: mona-tune train --init-embedder DIR)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                        "sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON")
    p.set_defaults(func=run_best_command)


# ---------------------------------------------------------------- search
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _parse_sets(items: list[str]) -> dict:
    from mona_tune.config import TrainConfig

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise MonaError(f"--set {item}: expected KEY=VALUE")
        if key not in TrainConfig.model_fields:
            raise MonaError(f"--set {item}: {key} is not a TrainConfig field")
        try:
            out[key] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            out[key] = value
    return out


def _extra_fixed(args) -> dict:
    fixed = _parse_sets(args.sets)
    for fld in _FIELD_FLAGS:
        v = getattr(args, f"fix_{fld}", None)
        if v is not None:
            fixed[fld] = v
    return fixed


def _validate_fixed(param_fixed: dict, where: str) -> None:
    from pydantic import ValidationError

    from mona_tune.cli.common import validation_line
    from mona_tune.config import TrainConfig

    try:
        TrainConfig(**param_fixed)
    except ValidationError as err:
        raise MonaError(validation_line(err, first_only=True, prefix=f"{where}: ")) from None


def _check_places(args, storage: str, tracking_uri: str, fixed: dict) -> None:
    """Where the search writes, and (on a local Ray) the input files it reads, before Ray starts.
    On a cluster the inputs are the nodes' to have: the preflight checks them on every node."""
    import os

    from mona_tune.paths import check_creatable, creatable_fault
    from mona_tune.cluster import storage as storage_io
    from mona_tune.tracking.mlflow_runs import redact, sqlite_path

    if not storage_io.is_uri(storage):
        check_creatable(storage, "--storage")
    db = sqlite_path(tracking_uri)
    fault = creatable_fault(db.parent) if db is not None else None
    if fault:
        raise MonaError(f"--tracking-uri {redact(tracking_uri)}: cannot create the store's folder "
                        f"{db.parent} ({fault})")
    if args.address or os.environ.get("RAY_ADDRESS"):
        return
    if fixed.get("data_dir") and not Path(fixed["data_dir"]).expanduser().is_dir():
        raise MonaError(f"--data-dir {fixed['data_dir']}: no such folder")
    if fixed.get("weights"):
        from mona_tune.models.encoder import read_state_dict

        read_state_dict(Path(fixed["weights"]).expanduser())  # a file that is no checkpoint


def _tracking_uri(args) -> str:
    """``--tracking-uri`` normalised, else ``$MLFLOW_TRACKING_URI`` or the local default."""
    from mona_tune.tracking.mlflow_runs import default_tracking_uri, normalize_tracking_uri

    return normalize_tracking_uri(args.tracking_uri) if args.tracking_uri \
        else default_tracking_uri()


# SearchConfig fields -> the flag that sets them: a value out of the model's bounds is named by
# its flag (the bounds themselves are the models', in config.py)
_FLAG_OF = {
    "num_samples": "--num-samples", "max_concurrent": "--max-concurrent",
    "time_budget_s": "--time-budget", "scheduler.grace_period": "--grace-period",
    "scheduler.max_t": "--max-t", "scheduler.reduction_factor": "--reduction-factor",
    "checkpoint.num_to_keep": "--checkpoint-keep", "cpus_per_trial": "--cpus-per-trial",
    "gpus_per_trial": "--gpus-per-trial", "max_failures": "--max-failures",
    "prepare_timeout_s": "--prepare-timeout", "dashboard_port": "--dashboard-port",
}


def build_search(args):
    """Flags (+ the space file) -> (SearchConfig, SearchSpace, param_space, space_yaml, resume)."""
    from mona_tune.cluster import storage as storage_io

    storage = storage_io.storage_path(args.storage)
    if args.resume:
        return _resumed_search(args, storage)
    return _new_search(args, storage)


def _resumed_search(args, storage: str):
    """The search saved under ``--name``: its settings, space and fixed fields as they were, with
    the cluster chosen anew and the tracking store where ``--tracking-uri`` says it is now."""
    from mona_tune.cluster import storage as storage_io
    from mona_tune.config import SearchConfig, SearchSpace
    from mona_tune.search import driver
    from mona_tune.search.space import to_param_space
    from mona_tune.tracking.mlflow_runs import normalize_tracking_uri

    if not args.name:
        raise MonaError("--resume needs --name NAME (the search to continue)")
    exp = storage_io.join(storage, args.name)
    meta = driver.read_meta(exp)
    if meta is None:
        raise MonaError(f"--resume: no search {args.name!r} under {storage} "
                        f"({driver.META_FILE} not found in {exp})")
    scfg = SearchConfig.model_validate({**meta["search_config"], "storage": storage})
    # the cluster is chosen anew (the original one may be gone), and the tracking store may be
    # reached under another address (a server restarted elsewhere); the rest is the search's
    scfg.address = args.address
    scfg.dashboard = args.dashboard
    if args.tracking_uri:
        scfg.tracking_uri = normalize_tracking_uri(args.tracking_uri)
    space = SearchSpace.model_validate(yaml.safe_load(meta["space_yaml"]))
    param_space = to_param_space(space, scfg.task, meta.get("param_space_fixed", {}))
    return scfg, space, param_space, meta["space_yaml"], True


def _new_search(args, storage: str):
    from mona_tune.cluster import storage as storage_io
    from mona_tune.search.space import dump_space, load_space, resolve_space_path, to_param_space
    from mona_tune.tasks import get_task

    task = get_task(args.task)  # unknown task -> MonaError
    space_path = resolve_space_path(args.space, task.name)
    space = load_space(space_path, task.name)
    extra = _extra_fixed(args)
    param_space = to_param_space(space, task.name, extra)
    fixed = {k: v for k, v in param_space.items() if k not in space.searched}
    _validate_fixed(fixed, "fixed fields (space file + flags)")

    name = args.name or f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not _NAME_RE.match(name):
        raise MonaError(f"--name {name!r}: use letters, digits, '.', '_' and '-' "
                        "(it names a directory and an MLflow run)")
    tracking_uri = _tracking_uri(args)
    scfg = _search_config(args, space, task=task.name, space_file=str(space_path), name=name,
                          storage=storage, tracking_uri=tracking_uri)
    exp = storage_io.join(storage, name)
    if storage_io.exists(exp):
        raise MonaError(f"--name {name}: {exp} already exists; add --resume to continue it or "
                        "choose another name")
    _check_places(args, storage, tracking_uri, fixed)
    if extra:
        space = space.model_copy(update={"fixed": {**space.fixed, **extra}})
    return scfg, space, param_space, dump_space(space), False


def _search_config(args, space, **given):
    """The SearchConfig of the flags over the space file's budget, scheduler and checkpoint
    sections; a value out of bounds is one line naming its flag."""
    from pydantic import ValidationError

    from mona_tune.config import SearchConfig

    def flag_or(value, default):
        return default if value is None else value

    budget = space.budget
    sched = space.scheduler.model_dump()
    for key in ("grace_period", "reduction_factor", "max_t"):
        sched[key] = flag_or(getattr(args, key), sched[key])
    sched["kind"] = flag_or(args.scheduler, sched["kind"])
    ckpt = {**space.checkpoint.model_dump(),
            "num_to_keep": flag_or(args.checkpoint_keep, space.checkpoint.num_to_keep)}
    values = dict(
        **given, sampler=args.sampler, seed=args.seed,
        num_samples=flag_or(args.num_samples, budget.num_samples),
        max_concurrent=flag_or(args.max_concurrent, budget.max_concurrent),
        time_budget_s=flag_or(args.time_budget_s, budget.time_budget_s),
        scheduler=sched, checkpoint=ckpt,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures, address=args.address, dashboard=args.dashboard,
        prepare_timeout_s=args.prepare_timeout_s, dashboard_port=args.dashboard_port,
        register_model=not args.no_register, verbose=0 if args.quiet else 1)
    try:
        scfg = SearchConfig.model_validate(values)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        flag = _FLAG_OF.get(loc, loc)
        raise MonaError(f"{flag} {e['input']}: {e['msg'].lower()}") from None
    sch = scfg.scheduler
    if sch.max_t is not None and sch.grace_period > sch.max_t:
        raise MonaError(f"--grace-period {sch.grace_period}: above max_t {sch.max_t}")
    return scfg


def run_search_command(args) -> int:
    from mona_tune import ray_compat
    from mona_tune.cluster import storage as storage_io
    from mona_tune.paths import remove_empty_tree
    from mona_tune.search.driver import run_search

    scfg, space, param_space, space_yaml, resume = build_search(args)
    # Ray 2.60 warns on stderr that it switched token authentication on; it is meant to be on
    # (the dashboard line says so), and a failing search must end with its one error line
    logging.getLogger(ray_compat.AUTH_SETUP_LOGGER).setLevel(logging.ERROR)
    local = None if storage_io.is_uri(scfg.storage) else Path(scfg.storage)
    existed = local is None or local.exists()
    try:
        outcome = run_search(scfg, space, param_space, resume=resume, space_yaml=space_yaml)
    except MonaError:
        if not existed:  # a check after Ray's start failed: the folders it made go again
            remove_empty_tree(local)
        raise
    return 0 if outcome.best_trial_id is not None else 1


# ---------------------------------------------------------------- best, ui
def run_best_command(args) -> int:
    from mona_tune.tracking.best import best_command
    from mona_tune.tracking.server import check_store

    # a server or database that does not answer: one line within seconds, not MLflow's retries
    check_store(_tracking_uri(args))

    return best_command(name=args.name, task=args.task, top=args.top, export=args.export,
                        tracking_uri=args.tracking_uri, as_json=args.json)
