"""Flags and handlers of ``mona-tune search`` and ``mona-tune best``.

Precedence for the budget and the scheduler: a flag, else the space file's ``budget`` /
``scheduler`` sections, else the defaults of ``SearchBudget`` / ``SchedulerSpec``. Everything a user
can get wrong (the space file, a flag, an unknown search name) is checked before Ray starts.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from mona_tune.config import SearchConfig
from mona_tune.errors import MonaError
from mona_tune.search.plan import SearchRequest, plan_search

# TrainConfig fields with their own flag here (the rest through --set KEY=VALUE); their help is
# the field's description
_FIELD_FLAGS = ("source_model", "weights", "source_data", "data_dir", "device")


# long: one argparse declaration per flag, grouped as `mona-tune search --help` shows them
def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Hyperparameter search over MoNA training runs with Ray Tune (Optuna TPE or "
                     "random sampling, ASHA or FIFO scheduling); every trial tracked in MLflow.")
    p.add_argument("--task", default="darcy",
                   help="task to search: darcy (default), pdebench-darcy, advection, burgers, "
                        "diffusion-reaction, diffusion-sorption, waveforms, arrays (your own "
                        "data), or a plugin's task")
    p.add_argument("--space", default=None,
                   help="search space: a YAML file or a packaged space name (the task names, "
                        "darcy-paper, pdebench-darcy-paper); default: the task's packaged space")
    p.add_argument("--name", default=None,
                   help="search name = Tune experiment directory under --storage and MLflow parent "
                        "run name (default: <task>-<date>-<time>)")
    p.add_argument("--task-name", default=None, metavar="NAME",
                   help=SearchConfig.model_fields["task_name"].description)
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
    g.add_argument("--warm-start", nargs="?", const="auto", default=None,
                   metavar="SEARCH_NAME|auto",
                   help="learn from the completed and stopped trials of a past search of the task "
                        "in the tracking store (auto, the default value: all of them); the best "
                        "past configurations run first")
    g.add_argument("--warm-start-first", type=int, default=2, metavar="N",
                   help="with --warm-start: the best past configurations run first (default 2)")
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
    failures = SearchConfig.model_fields["max_failures"]
    g.add_argument("--max-failures", type=int, default=failures.default,
                   help=f"{failures.description} (default {failures.default})")
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
    add_fixed_field_arguments(p)
    p.add_argument("--no-register", action="store_true",
                   help="do not register the best embedder in the MLflow model registry")
    p.add_argument("--quiet", action="store_true", help="no live trial table")
    p.set_defaults(func=run_search_command)


def add_fixed_field_arguments(p: argparse.ArgumentParser) -> None:
    """``--source-model``, ``--data-dir``, ... and ``--set KEY=VALUE``: TrainConfig fields fixed
    over the space file's (:func:`extra_fixed` reads them)."""
    from mona_tune.config import TrainConfig

    g = p.add_argument_group("fixed training fields (override the space file)")
    for fld in _FIELD_FLAGS:
        g.add_argument("--" + fld.replace("_", "-"), dest=f"fix_{fld}", default=None,
                       help=TrainConfig.model_fields[fld].description,
                       metavar=fld.split("_")[-1].upper())
    g.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="fix any TrainConfig field, e.g. --set epochs=10 (repeatable; YAML values)")


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
    p.add_argument("--curves", nargs="+", default=None, metavar="SEARCH",
                   help="instead of the ranking: overlay these searches' incumbent curves (best "
                        "validation metric so far against wall time and stage-2 epochs spent)")
    p.add_argument("--out", type=Path, default=Path("incumbent-curves.png"), metavar="PNG",
                   help="with --curves: the figure (default incumbent-curves.png)")
    p.set_defaults(func=run_best_command)


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


def extra_fixed(args) -> dict:
    fixed = _parse_sets(args.sets)
    for fld in _FIELD_FLAGS:
        v = getattr(args, f"fix_{fld}", None)
        if v is not None:
            fixed[fld] = v
    return fixed


def search_request(args) -> SearchRequest:
    """The flags of ``mona-tune search`` as a :class:`SearchRequest` (same names)."""
    return SearchRequest(
        task=args.task, space=args.space, name=args.name, storage=args.storage,
        resume=args.resume, tracking_uri=args.tracking_uri, fixed=extra_fixed(args),
        sampler=args.sampler, seed=args.seed, num_samples=args.num_samples,
        max_concurrent=args.max_concurrent, time_budget_s=args.time_budget_s,
        scheduler=args.scheduler, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, max_t=args.max_t,
        checkpoint_keep=args.checkpoint_keep, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_failures=args.max_failures,
        address=args.address, prepare_timeout_s=args.prepare_timeout_s,
        dashboard=args.dashboard, dashboard_port=args.dashboard_port,
        register_model=not args.no_register, quiet=args.quiet,
        warm_start=args.warm_start, warm_start_first=args.warm_start_first,
        task_name=args.task_name)


def run_search_command(args) -> int:
    from mona_tune import ray_compat
    from mona_tune.cluster import storage as storage_io
    from mona_tune.paths import remove_empty_tree
    from mona_tune.search.driver import run_search

    plan = plan_search(search_request(args))
    scfg = plan.scfg
    # Ray 2.60 warns on stderr that it switched token authentication on; it is meant to be on
    # (the dashboard line says so), and a failing search must end with its one error line
    logging.getLogger(ray_compat.AUTH_SETUP_LOGGER).setLevel(logging.ERROR)
    local = None if storage_io.is_uri(scfg.storage) else Path(scfg.storage)
    existed = local is None or local.exists()
    try:
        outcome = run_search(scfg, plan.space, plan.param_space, resume=plan.resume,
                             space_yaml=plan.space_yaml)
    except MonaError:
        if not existed:  # a check after Ray's start failed: the folders it made go again
            remove_empty_tree(local)
        raise
    return 0 if outcome.best_trial_id is not None else 1


# ---------------------------------------------------------------- best, ui
def run_best_command(args) -> int:
    from mona_tune.tracking.best import best_command
    from mona_tune.tracking.mlflow_runs import tracking_uri_or_default
    from mona_tune.tracking.server import check_store

    # a server or database that does not answer: one line within seconds, not MLflow's retries
    check_store(tracking_uri_or_default(args.tracking_uri))
    if args.curves:
        from mona_tune.report.incumbent import compare_command

        return compare_command(args.curves, task=args.task, out_path=args.out,
                               tracking_uri=args.tracking_uri)

    return best_command(name=args.name, task=args.task, top=args.top, export=args.export,
                        tracking_uri=args.tracking_uri, as_json=args.json)
