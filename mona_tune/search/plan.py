"""A search planned before anything runs: the request checked (space file, fixed fields,
settings within the models' bounds, the places it writes) and turned into what
``driver.run_search`` takes. ``mona-tune search`` builds a :class:`SearchRequest` from its flags;
benchmarks and tests build one with the same names. A bad value is one line naming the flag that
sets it (``--num-samples 0: ...``), as users of the command meet it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from mona_tune.config import SearchConfig, SearchSpace
from mona_tune.errors import MonaError, validation_line


@dataclass
class SearchRequest:
    """What a search is asked to be: ``mona-tune search``'s flags, by the same names (None:
    the space file's value, else the models' default)."""

    task: str = "darcy"
    space: str | None = None  # a YAML file or a packaged space name; None: the task's own
    name: str | None = None
    storage: str | None = None
    resume: bool = False
    tracking_uri: str | None = None
    fixed: dict = field(default_factory=dict)  # TrainConfig fields over the space file's
    sampler: str = "optuna"
    seed: int = 0
    num_samples: int | None = None
    max_concurrent: int | None = None
    time_budget_s: float | None = None
    scheduler: str | None = None
    grace_period: int | None = None
    reduction_factor: float | None = None
    max_t: int | None = None
    checkpoint_keep: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = SearchConfig.model_fields["max_failures"].default
    address: str | None = None
    prepare_timeout_s: float = 1800.0
    dashboard: bool = False
    dashboard_port: int = 8265
    register_model: bool = True
    quiet: bool = False
    warm_start: str | None = None  # "auto" or a past search's name
    warm_start_first: int = 2
    task_name: str | None = None  # tracked as this name (a user's own task); None: the task


@dataclass(frozen=True)
class SearchPlan:
    """``driver.run_search(plan.scfg, plan.space, plan.param_space, resume=plan.resume,
    space_yaml=plan.space_yaml)``."""

    scfg: SearchConfig
    space: SearchSpace
    param_space: dict
    space_yaml: str
    resume: bool


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _validate_fixed(param_fixed: dict, where: str) -> None:
    from pydantic import ValidationError

    from mona_tune.config import TrainConfig

    try:
        TrainConfig(**param_fixed)
    except ValidationError as err:
        raise MonaError(validation_line(err, first_only=True, prefix=f"{where}: ")) from None


def _check_places(req: SearchRequest, storage: str, tracking_uri: str, fixed: dict,
                  cfg) -> None:
    """Where the search writes, and (on a local Ray) the input files and optional packages it
    needs (``cfg``: ``fixed`` as a TrainConfig), before Ray starts. On a cluster the inputs are
    the nodes' to have: the preflight checks them on every node."""
    import os

    from mona_tune.cluster import storage as storage_io
    from mona_tune.paths import check_creatable, creatable_fault
    from mona_tune.tracking.mlflow_runs import redact, sqlite_path

    if not storage_io.is_uri(storage):
        check_creatable(storage, "--storage")
    db = sqlite_path(tracking_uri)
    fault = creatable_fault(db.parent) if db is not None else None
    if fault:
        raise MonaError(f"--tracking-uri {redact(tracking_uri)}: cannot create the store's folder "
                        f"{db.parent} ({fault})")
    if req.address or os.environ.get("RAY_ADDRESS"):
        return
    if fixed.get("data_dir") and not Path(fixed["data_dir"]).expanduser().exists():
        raise MonaError(f"--data-dir {fixed['data_dir']}: no such folder or file")
    from mona_tune.extras import check_extras

    check_extras(cfg)
    if fixed.get("weights"):
        from mona_tune.models.load import check_weights

        check_weights(fixed["weights"], fixed.get("source_model"))  # no checkpoint, no model


# SearchConfig fields -> the flag that sets them: a value out of the model's bounds is named by
# its flag (the bounds themselves are the models', in config.py)
_FLAG_OF = {
    "num_samples": "--num-samples", "max_concurrent": "--max-concurrent",
    "time_budget_s": "--time-budget", "scheduler.grace_period": "--grace-period",
    "scheduler.max_t": "--max-t", "scheduler.reduction_factor": "--reduction-factor",
    "checkpoint.num_to_keep": "--checkpoint-keep", "cpus_per_trial": "--cpus-per-trial",
    "gpus_per_trial": "--gpus-per-trial", "max_failures": "--max-failures",
    "prepare_timeout_s": "--prepare-timeout", "dashboard_port": "--dashboard-port",
    "warm_start_first": "--warm-start-first", "task_name": "--task-name",
}


def plan_search(req: SearchRequest) -> SearchPlan:
    """The search ``req`` asks for, checked before anything starts: a new one (its space file,
    fixed fields, settings and the places it writes), or the interrupted one ``--resume`` names."""
    from mona_tune.cluster import storage as storage_io

    storage = storage_io.storage_path(req.storage)
    _check_warm_start(req)
    if req.resume:
        return SearchPlan(*_resumed_search(req, storage))
    return SearchPlan(*_new_search(req, storage))


def _check_warm_start(req: SearchRequest) -> None:
    if req.warm_start is None:
        return
    if req.resume:
        raise MonaError("--warm-start: a resumed search keeps what it learnt when it started; "
                        "leave out --warm-start")
    if req.sampler != "optuna":
        raise MonaError(f"--warm-start needs --sampler optuna ({req.sampler} sampling learns "
                        "nothing from past trials)")
    if req.warm_start != "auto" and not _NAME_RE.match(req.warm_start):
        raise MonaError(f"--warm-start {req.warm_start!r}: not a search name (letters, digits, "
                        "'.', '_' and '-'), nor 'auto'")


def _resumed_search(req: SearchRequest, storage: str):
    """The search saved under ``--name``: its settings, space and fixed fields as they were, with
    the cluster chosen anew and the tracking store where ``--tracking-uri`` says it is now."""
    from mona_tune.cluster import storage as storage_io
    from mona_tune.search import driver
    from mona_tune.search.space import to_param_space
    from mona_tune.tracking.mlflow_runs import normalize_tracking_uri

    if not req.name:
        raise MonaError("--resume needs --name NAME (the search to continue)")
    exp = storage_io.join(storage, req.name)
    meta = driver.read_meta(exp)
    if meta is None:
        raise MonaError(f"--resume: no search {req.name!r} under {storage} "
                        f"({driver.META_FILE} not found in {exp})")
    scfg = SearchConfig.model_validate({**meta["search_config"], "storage": storage})
    # the cluster is chosen anew (the original one may be gone), and the tracking store may be
    # reached under another address (a server restarted elsewhere); the rest is the search's
    scfg.address = req.address
    scfg.dashboard = req.dashboard
    if req.tracking_uri:
        scfg.tracking_uri = normalize_tracking_uri(req.tracking_uri)
    space = SearchSpace.model_validate(yaml.safe_load(meta["space_yaml"]))
    param_space = to_param_space(space, scfg.task, meta.get("param_space_fixed", {}))
    return scfg, space, param_space, meta["space_yaml"], True


class ResolvedSpace(NamedTuple):
    task: Any  # tasks.Task
    path: Path
    space: Any  # config.SearchSpace
    fixed: dict  # the trials' fixed TrainConfig fields, validated
    param_space: dict  # Tune's param_space: ``fixed`` and the searched distributions


def space_with_fixed(task_name: str, space_name: str | None, extra: dict) -> ResolvedSpace:
    """The task, its space file read and checked, and the fixed TrainConfig fields of its trials
    (the space's, the task's and ``extra`` from flags over them), validated. Shared by
    ``search`` and ``plan``."""
    from mona_tune.search.space import load_space, resolve_space_path, to_param_space
    from mona_tune.tasks import get_task
    from mona_tune.tasks.registry import check_fields

    task = get_task(task_name)  # unknown task -> MonaError
    space_path = resolve_space_path(space_name, task.name)
    space = load_space(space_path, task.name)
    param_space = to_param_space(space, task.name, extra)
    fixed = {k: v for k, v in param_space.items() if k not in space.searched}
    _validate_fixed(fixed, "fixed fields (space file + flags)")
    check_fields(task, {*space.searched, *space.fixed, *extra},
                 f"--task {task.name} with space {space_path.name} and flags")
    return ResolvedSpace(task, space_path, space, fixed, param_space)


def _new_search(req: SearchRequest, storage: str):
    from mona_tune.cluster import storage as storage_io
    from mona_tune.search.space import dump_space

    from mona_tune.config import TrainConfig, check_scale

    extra = dict(req.fixed)
    task, space_path, space, fixed, param_space = space_with_fixed(req.task, req.space, extra)
    cfg = TrainConfig(**fixed)
    check_scale(cfg, f"space {space_path.name}" if "scale" in space.fixed else "--set scale=paper")
    if task.configure:  # a user's arrays: every check on the data made before Ray starts
        task.configure(cfg).load(cfg)

    name = req.name or f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not _NAME_RE.match(name):
        raise MonaError(f"--name {name!r}: use letters, digits, '.', '_' and '-' "
                        "(it names a directory and an MLflow run)")
    from mona_tune.tracking.mlflow_runs import tracking_uri_or_default

    tracking_uri = tracking_uri_or_default(req.tracking_uri)
    scfg = _search_config(req, space, task=task.name, space_file=str(space_path), name=name,
                          storage=storage, tracking_uri=tracking_uri)
    exp = storage_io.join(storage, name)
    if storage_io.exists(exp):
        raise MonaError(f"--name {name}: {exp} already exists; add --resume to continue it or "
                        "choose another name")
    _check_places(req, storage, tracking_uri, fixed, cfg)
    _check_gpu_fit(req, fixed, space)
    if extra:
        space = space.model_copy(update={"fixed": {**space.fixed, **extra}})
    return scfg, space, param_space, dump_space(space), False


def _check_gpu_fit(req: SearchRequest, fixed: dict, space) -> None:
    """On a GPU machine, a fractional ``--gpus-per-trial`` is checked against the costliest
    trial's measured peak memory (one line when it does not fit), before Ray starts. The
    measurement runs in a child process, so that this one holds no CUDA context afterwards."""
    import torch

    if not (0 < req.gpus_per_trial < 1) or not torch.cuda.is_available():
        return
    from mona_tune.search.capacity import check_gpus_per_trial
    from mona_tune.train.footprint import Footprint
    from mona_tune.workers import worker_pool

    cfg = costliest_config(fixed, space.searched)
    with worker_pool(1, method="spawn") as pool:
        measured = pool.apply(_measure, (cfg.model_dump(),))
    fp = Footprint(**measured)
    print(f"one trial measured on {fp.device}: {fp.reserved_bytes / 2**30:.1f} GiB at its peak",
          flush=True)
    check_gpus_per_trial(fp, req.gpus_per_trial)


def _measure(cfg: dict) -> dict:
    from mona_tune.config import TrainConfig
    from mona_tune.train.footprint import measure

    return measure(TrainConfig(**cfg), steps=1).as_dict()


def costliest_config(fixed: dict, searched: dict):
    """The TrainConfig of the costliest trial: ``fixed``, and each numeric searched field at the
    largest value its distribution takes (a choice of other values: its first)."""
    from mona_tune.config import TrainConfig

    values = dict(fixed)
    for name, dist in searched.items():
        extremes = dist.extremes()
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in extremes)
        values[name] = max(extremes) if numeric else extremes[0]
    return TrainConfig(**values)


def _search_config(req: SearchRequest, space, **given):
    """The SearchConfig of the flags over the space file's budget, scheduler and checkpoint
    sections; a value out of bounds is one line naming its flag."""
    from pydantic import ValidationError

    def flag_or(value, default):
        return default if value is None else value

    budget = space.budget
    sched = space.scheduler.model_dump()
    for key in ("grace_period", "reduction_factor", "max_t"):
        sched[key] = flag_or(getattr(req, key), sched[key])
    sched["kind"] = flag_or(req.scheduler, sched["kind"])
    ckpt = {**space.checkpoint.model_dump(),
            "num_to_keep": flag_or(req.checkpoint_keep, space.checkpoint.num_to_keep)}
    values = dict(
        **given, sampler=req.sampler, seed=req.seed,
        num_samples=flag_or(req.num_samples, budget.num_samples),
        max_concurrent=flag_or(req.max_concurrent, budget.max_concurrent),
        time_budget_s=flag_or(req.time_budget_s, budget.time_budget_s),
        scheduler=sched, checkpoint=ckpt,
        cpus_per_trial=req.cpus_per_trial, gpus_per_trial=req.gpus_per_trial,
        max_failures=req.max_failures, address=req.address, dashboard=req.dashboard,
        prepare_timeout_s=req.prepare_timeout_s, dashboard_port=req.dashboard_port,
        register_model=req.register_model, verbose=0 if req.quiet else 1,
        warm_start=req.warm_start, warm_start_first=req.warm_start_first,
        task_name=req.task_name)
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
