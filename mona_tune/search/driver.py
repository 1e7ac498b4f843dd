"""The search driver: a Ray Tune ``Tuner`` over the trial function, tracked in MLflow.

One search = one Tune experiment ``<storage>/<name>`` + one MLflow parent run. The pieces:
- searcher: Optuna TPE (``OptunaSearch``, seeded) behind ``ConcurrencyLimiter``, or seeded random
  sampling (``BasicVariantGenerator``);
- scheduler: ASHA on ``stage2_epoch`` (max_t = the stage-2 epoch budget), or FIFO;
- resources per trial (``cpus_per_trial``, fractional ``gpus_per_trial`` pack trials on a GPU),
  actors reused across trials so each worker process loads data and the source model once;
- checkpoints: each epoch's report carries the trainer's checkpoint, the best ``num_to_keep`` (by
  the validation metric) and the latest are kept; a failing trial restarts from its latest one
  (``max_failures``);
- resume: ``Tuner.restore(resume_unfinished=True, resume_errored=True)``; Tune restores the
  searcher's state (the Optuna study) from the experiment directory. ``mona_search.json`` in that
  directory holds what the driver itself needs (parent run, tracking store, settings);
- the end: outcome tags on the child runs, the best trial's embedder registered with alias
  ``best``, a PNG of every trial's validation curve, a printed summary.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mona_tune.config import SearchConfig, SearchSpace
from mona_tune.errors import MonaError
from mona_tune.search import cluster, interrupt, storage
from mona_tune.search.summary import plot_curves, print_summary
from mona_tune.search.trial import TrialSettings, run_trial, trial_dir_name
from mona_tune.search.warmup import prepare_nodes
from mona_tune.tracking import mlflow_runs as mr
from mona_tune.tracking.server import check_store, local_dir

logger = logging.getLogger(__name__)

META_FILE = "mona_search.json"
CURVES_FILE = "curves.png"


@dataclass
class SearchOutcome:
    """What a finished search returns (and prints)."""

    name: str
    experiment_path: str
    parent_run_id: str
    metric: str
    mode: str
    best_trial_id: str | None = None
    best_run_id: str | None = None
    best_config: dict = field(default_factory=dict)
    best_metrics: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)  # trial id -> one of mr.OUTCOMES
    details: dict = field(default_factory=dict)  # trial id -> why it diverged or failed
    lost_runs: dict = field(default_factory=dict)  # trial id -> deleted run (see reconcile_runs)
    model_version: str | None = None
    curves_png: str | None = None
    timings: dict = field(default_factory=dict)
    searcher: str | None = None
    searcher_trials: int | None = None  # trials in the Optuna study at the end
    embedder_location: str | None = None
    nodes: dict = field(default_factory=dict)  # 'IP (node id)' -> trials that ran there
    # node id -> its IP and the trials that ran there, of the nodes alive at the start and dead
    # at the end (summary.lost_node_trials)
    lost_nodes: dict = field(default_factory=dict)


# ---------------------------------------------------------------- the search's own file
def read_meta(experiment_path: str) -> dict | None:
    text = storage.read_text(storage.join(experiment_path, META_FILE))
    return json.loads(text) if text is not None else None


def write_meta(experiment_path: str, meta: dict) -> None:
    storage.write_bytes(storage.join(experiment_path, META_FILE),
                        json.dumps(meta, indent=2, default=str).encode(), make_parent=True)


# ---------------------------------------------------------------- the cluster
def preflight_spec(scfg: SearchConfig, fixed: dict) -> cluster.PreflightSpec:
    """What every node of the cluster must see: the storage, the tracking store (a SQLite file's
    folder, a database store's local artifact root), the input files named in ``fixed``."""
    spec = cluster.PreflightSpec(storage=scfg.storage, tracking_uri=scfg.tracking_uri)
    db = mr.sqlite_path(scfg.tracking_uri)
    if db is not None:
        spec.shared_dirs.append(("the SQLite tracking store's folder", str(db.parent)))
    else:
        artifacts = local_dir(mr.planned_artifact_location(scfg.tracking_uri, scfg.task))
        if artifacts:
            spec.shared_dirs.append(("the MLflow artifact root", artifacts))
    for key, label in (("data_dir", "--data-dir"), ("weights", "--weights")):
        if fixed.get(key):
            spec.inputs.append((label, str(fixed[key])))
    source = str(fixed.get("source_data") or "")
    if ":" in source:
        spec.inputs.append(("--source-data", source.split(":", 1)[1]))
    return spec


def _trials_per_node(tracking_uri: str, experiment_id: str, parent_run_id: str) -> dict:
    out: dict[str, int] = {}
    for run in mr.child_runs(tracking_uri, experiment_id, parent_run_id):
        ip, node_id = run.data.tags.get(mr.TAG_NODE_IP), run.data.tags.get(mr.TAG_NODE_ID)
        if node_id:
            key = f"{ip} ({node_id[:8]})"
            out[key] = out.get(key, 0) + 1
    return out


# ---------------------------------------------------------------- the Tuner
def _searcher(scfg: SearchConfig, metric: str, mode: str):
    if scfg.search == "random":
        from mona_tune.search.resumable import ResumableRandom

        return ResumableRandom(max_concurrent=scfg.max_concurrent, random_state=scfg.seed)
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from mona_tune.search.resumable import OnceOptunaSearch, ResumableSearch

    # TPE needs a few random trials before it models anything; the default (10) would leave an
    # 8-trial search entirely random.
    startup = max(2, min(10, scfg.num_samples // 3))
    sampler = optuna.samplers.TPESampler(seed=scfg.seed, n_startup_trials=startup)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return ResumableSearch(ConcurrencyLimiter(
        OnceOptunaSearch(metric=metric, mode=mode, sampler=sampler),
        max_concurrent=scfg.max_concurrent))


def _scheduler(scfg: SearchConfig, max_t: int):
    from mona_tune.search.resumable import ResumableASHA, SnapshottingFIFO

    if scfg.scheduler.kind == "fifo":
        return SnapshottingFIFO()
    grace = min(scfg.scheduler.grace_period, max_t)
    return ResumableASHA(time_attr="stage2_epoch", max_t=max_t, grace_period=grace,
                         reduction_factor=scfg.scheduler.reduction_factor)


def _reporter(metric: str, mode: str, searched: list[str], total: int):
    from ray.tune import CLIReporter

    cols = {"stage": "stage", "stage2_epoch": "ep2", "train_loss": "loss", metric: metric}
    return CLIReporter(metric_columns=cols, parameter_columns=searched, total_samples=total,
                       max_report_frequency=15, sort_by_metric=True,
                       max_progress_rows=40, max_column_length=16)


def _trainable(settings: TrialSettings, cpus: float, gpus: float):
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                               resources={"cpu": cpus, "gpu": gpus})


def _trial_dirname(trial) -> str:
    return trial_dir_name(trial.trial_id)


def build_tuner(scfg: SearchConfig, param_space: dict, settings: TrialSettings, *, max_t: int,
                metric: str, mode: str, searched: list[str]):
    from ray import tune

    tune_config = tune.TuneConfig(
        metric=metric, mode=mode,
        search_alg=_searcher(scfg, metric, mode),
        scheduler=_scheduler(scfg, max_t),
        num_samples=scfg.num_samples,
        reuse_actors=scfg.reuse_actors,
        time_budget_s=scfg.time_budget_s,
        trial_dirname_creator=_trial_dirname,
    )
    run_config = tune.RunConfig(
        name=scfg.name,
        storage_path=scfg.storage,
        checkpoint_config=tune.CheckpointConfig(
            # on local storage the trials keep their checkpoints themselves (trial.prune_checkpoints)
            num_to_keep=scfg.checkpoint.num_to_keep if storage.is_uri(scfg.storage) else None,
            checkpoint_score_attribute=metric,
            checkpoint_score_order=mode,
        ),
        failure_config=tune.FailureConfig(max_failures=scfg.max_failures),
        progress_reporter=_reporter(metric, mode, searched, scfg.num_samples),
        callbacks=[interrupt.StopWhenStorageFull()],
        verbose=scfg.verbose,
    )
    return tune.Tuner(_trainable(settings, scfg.cpus_per_trial, scfg.gpus_per_trial),
                      param_space=param_space, tune_config=tune_config, run_config=run_config)


def restore_tuner(experiment_path: str, settings: TrialSettings, scfg: SearchConfig):
    from ray import tune

    return tune.Tuner.restore(experiment_path,
                              trainable=_trainable(settings, scfg.cpus_per_trial,
                                                   scfg.gpus_per_trial),
                              resume_unfinished=True, resume_errored=True)


def _base_searcher(tuner):
    """The innermost searcher of a Tuner (OptunaSearch under its ConcurrencyLimiter)."""
    try:
        alg = tuner._local_tuner._tune_config.search_alg
    except AttributeError:
        return None
    while hasattr(alg, "searcher"):
        alg = alg.searcher
    return alg


def _searcher_trials(tuner) -> int | None:
    """Trials the Optuna study holds (after a resume: those before the interruption too)."""
    study = getattr(_base_searcher(tuner), "_ot_study", None)
    try:
        return len(study.trials) if study is not None else None
    except Exception:
        return None


# ---------------------------------------------------------------- after the search
def _trial_rows(results) -> list[dict]:
    """One row per trial: id, config, last metrics, error, the per-epoch dataframe."""
    rows = []
    for r in results:
        m = dict(r.metrics or {})
        trial_id = m.get("trial_id")
        if not trial_id and r.path:
            trial_id = _trial_id_from_path(r.path)
        try:
            df = r.metrics_dataframe
        except Exception:
            df = None
        rows.append({"trial_id": trial_id, "config": dict(r.config or {}), "metrics": m,
                     "error": r.error, "df": df, "path": r.path})
    return rows


def _trial_id_from_path(path: str) -> str | None:
    try:
        for line in Path(path, "result.json").read_text().splitlines()[-1:]:
            return json.loads(line).get("trial_id")
    except (OSError, ValueError):
        return None
    return None


def _outcome(row: dict, test_key: str, max_t: int, by: str = "ASHA") -> tuple[str, str]:
    m = row["metrics"]
    if row["error"] is not None:
        text = str(row["error"]).strip().splitlines()
        return "failed", (text[-1] if text else "error")[:500]
    if m.get("diverged"):
        return "diverged", str(m.get("error", "training diverged"))[:500]
    ep = int(m.get("stage2_epoch") or 0)
    epochs = int(row["config"].get("epochs") or max_t)
    if test_key in m:
        return "completed", f"completed {ep or epochs} stage-2 epochs"
    return "stopped_early", f"stopped by {by} at stage-2 epoch {ep} of {epochs}"


def reconcile_runs(tracking_uri: str, experiment_id: str, parent_run_id: str, rows: list[dict],
                   test_key: str, max_t: int, stopped_by: str,
                   lost: dict[str, str] | None = None) -> dict[str, tuple[str, str, str | None]]:
    """Tag every child run with its trial's outcome.

    Returns trial id -> (outcome, detail, run id); ``lost`` receives trial id -> run id of the
    runs of trials the resumed search did not know (see below)."""
    by_trial = {r.data.tags.get(mr.TAG_TRIAL_ID): r for r in
                mr.child_runs(tracking_uri, experiment_id, parent_run_id)}
    out = {}
    for row in rows:
        outcome, detail = _outcome(row, test_key, max_t, stopped_by)
        run = by_trial.pop(row["trial_id"], None)
        run_id = run.info.run_id if run is not None else None
        out[row["trial_id"]] = (outcome, detail, run_id)
        if run is None:
            continue
        tags = {mr.TAG_OUTCOME: outcome, mr.TAG_OUTCOME_DETAIL: detail,
                "mona.last_stage2_epoch": int(row["metrics"].get("stage2_epoch") or 0)}
        mr.set_tags(tracking_uri, run_id, tags)
        status = "FAILED" if outcome in ("failed", "diverged") else "FINISHED"
        if run.info.status != status:
            mr.end_run(tracking_uri, run_id, status)
    for trial_id, run in by_trial.items():
        # A trial started after Tune's last experiment snapshot of an interrupted driver: the
        # resumed search does not know it and runs it again under another id (with its config
        # where the Optuna study held it: search/resumable.py). Tune snapshots after adding each
        # trial, so only a driver killed within that step, or a snapshot whose upload mixed two
        # moments, leaves one. Its run is deleted (restorable) so that the store holds one run
        # per trial of the search, and named in the parent run's tags and in the summary.
        mr.set_tags(tracking_uri, run.info.run_id, {
            mr.TAG_OUTCOME: "lost",
            mr.TAG_OUTCOME_DETAIL: "started before the driver was interrupted, after Tune's last "
                                   "snapshot; re-run as another trial of the resumed search"})
        if run.info.status == "RUNNING":
            mr.end_run(tracking_uri, run.info.run_id, "KILLED")
        mr.retrying(mr.get_client(tracking_uri).delete_run, run.info.run_id)
        logger.info("deleted run %s of lost trial %s", run.info.run_id, trial_id)
        if lost is not None:
            lost[trial_id] = run.info.run_id
    if by_trial:
        mr.set_tags(tracking_uri, parent_run_id, {"mona.lost_runs": ",".join(
            run.info.run_id for run in by_trial.values())})
    return out


# ---------------------------------------------------------------- the search
def run_search(scfg: SearchConfig, space: SearchSpace, param_space: dict, *, resume: bool,
               space_yaml: str, out=None) -> SearchOutcome:
    """Run (or resume) a search; prints progress and a summary; returns the outcome."""
    from mona_tune.tasks import get_task

    timings: dict[str, float] = {}
    t_start = time.time()
    task = get_task(scfg.task)
    metric, mode = f"val_{task.metric}", task.direction
    test_key = f"test_{task.metric}"
    exp_path = storage.join(scfg.storage, scfg.name)
    searched = sorted(space.searched)
    max_t = scfg.scheduler.max_t or space.max_stage2_epochs()

    def say(text: str = "") -> None:
        print(text, file=out or sys.stdout, flush=True)

    if resume:
        from ray.tune import Tuner

        if not Tuner.can_restore(exp_path):
            raise MonaError(f"--resume: {exp_path} holds no Tune experiment state to resume")
        from mona_tune.search.resumable import damaged_state

        damaged = damaged_state(exp_path)
        if damaged:
            raise MonaError(
                f"--resume: Tune's experiment state {damaged} is cut short (the driver was "
                "killed while writing it); Tune would start the search afresh. Delete that file "
                "to resume from the one before it, if there is one, or start a new search")
    # the tracking store answers, before Ray starts (seconds, not MLflow's retries)
    check_store(scfg.tracking_uri)
    mr.ride_out_outages()
    env = cluster.forwarded_env()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # CLIReporter's live table
    # every epoch checkpoints; Tune then snapshots its state often, which resume wants
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not storage.is_uri(scfg.storage):
        # snapshot the experiment (trials, checkpoints, searcher) every few seconds, not Tune's
        # adaptive >= 10 s: a trial started after the last snapshot is lost to --resume
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")
    fixed = {k: v for k, v in param_space.items() if k not in searched}
    started = False
    parent_run_id = None
    try:
        # -- Ray, and every node checked before anything is written
        t0 = time.time()
        started, url = cluster.join(scfg.address, dashboard=scfg.dashboard,
                                    dashboard_port=scfg.dashboard_port, env=env)
        timings["ray_start_s"] = time.time() - t0
        if scfg.dashboard:
            say(cluster.dashboard_help(url))
        t0 = time.time()
        nodes = cluster.alive_nodes()
        for warning in cluster.preflight(preflight_spec(scfg, fixed), nodes):
            say(warning)
        timings["preflight_s"] = time.time() - t0
        if len(nodes) > 1 or scfg.address or os.environ.get("RAY_ADDRESS"):
            say(f"Ray cluster: {len(nodes)} node{'s' if len(nodes) != 1 else ''} ("
                + ", ".join(f"{n.ip} {n.cpus:g} CPU {n.gpus:g} GPU" for n in nodes) + ")"
                + (f"; forwarded to the trials: {', '.join(sorted(env))}" if env and started
                   else ""))

        say(f"search {scfg.name}: task {scfg.task}, {scfg.num_samples} trials "
            f"({scfg.max_concurrent} at a time), {scfg.search} search, {scfg.scheduler.kind} "
            f"scheduler (max_t {max_t} stage-2 epochs), metric {metric} ({mode})")
        say(f"  space {scfg.space_file}; searched: "
            + ", ".join(f"{k} ~ {space.searched[k].describe()}" for k in searched))
        say(f"  storage {exp_path}")

        # -- data and source model into every node's cache, once
        t0 = time.time()
        prep = prepare_nodes(fixed, nodes, scfg.cpus_per_trial, scfg.gpus_per_trial,
                             timeout=scfg.prepare_timeout_s)
        timings["prepare_s"] = time.time() - t0
        for k, v in prep.items():
            if k.endswith("_s"):
                timings[f"prepare_{k}"] = float(v)
        if prep["nodes"] > 1:
            say(f"  data and source model prepared on {prep['prepared_on']}; "
                f"{prep['cache_bytes'] / 1e6:.1f} MB of cache copied to "
                f"{prep.get('nodes_filled', 0)} of the {prep['nodes'] - 1} other nodes "
                "(the others had it)")

        # -- the MLflow parent run
        meta = read_meta(exp_path) if resume else None
        t0 = time.time()
        experiment_id = mr.ensure_experiment(scfg.tracking_uri, scfg.task)
        if meta is not None:
            try:
                mr.reopen_run(scfg.tracking_uri, meta["parent_run_id"])
            except Exception as e:  # MlflowException: RESOURCE_DOES_NOT_EXIST
                raise MonaError(
                    f"--resume: the search's parent run {meta['parent_run_id']} is not in the "
                    f"tracking store {mr.redact(scfg.tracking_uri)} ({type(e).__name__}); pass "
                    "--tracking-uri with the store the search started in") from None
            parent_run_id = meta["parent_run_id"]
        else:
            params = {"task": scfg.task, "search": scfg.search, "scheduler": scfg.scheduler.kind,
                      "grace_period": scfg.scheduler.grace_period,
                      "reduction_factor": scfg.scheduler.reduction_factor, "max_t": max_t,
                      "seed": scfg.seed, "num_samples": scfg.num_samples,
                      "max_concurrent": scfg.max_concurrent,
                      "cpus_per_trial": scfg.cpus_per_trial,
                      "gpus_per_trial": scfg.gpus_per_trial, "max_failures": scfg.max_failures,
                      "space_file": scfg.space_file, "searched": ",".join(searched),
                      "storage": exp_path, "metric": metric, "mode": mode,
                      "ray_nodes": len(nodes)}
            params.update({f"fixed.{k}": v for k, v in fixed.items()})
            parent_run_id = mr.start_parent_run(scfg.tracking_uri, experiment_id,
                                                name=scfg.name, task=scfg.task, params=params,
                                                space_yaml=space_yaml)
        timings["mlflow_setup_s"] = time.time() - t0

        settings = TrialSettings(
            tracking_uri=scfg.tracking_uri, experiment_id=experiment_id,
            parent_run_id=parent_run_id, search_name=scfg.name, task=scfg.task,
            metric=task.metric, mode=mode, cpus_per_trial=scfg.cpus_per_trial,
            gpus_per_trial=scfg.gpus_per_trial, checkpoint_every=scfg.checkpoint.every,
            searched=tuple(searched),
            keep_checkpoints=None if storage.is_uri(scfg.storage) else scfg.checkpoint.num_to_keep,
            experiment_path="" if storage.is_uri(scfg.storage) else str(exp_path),
        )
        if meta is None:
            write_meta(exp_path, {"search_config": scfg.model_dump(mode="json"),
                                  "space_yaml": space_yaml, "param_space_fixed": fixed,
                                  "parent_run_id": parent_run_id,
                                  "experiment_id": experiment_id,
                                  "settings": asdict(settings), "created": time.time()})

        say(f"  MLflow {mr.redact(scfg.tracking_uri)}: parent run {parent_run_id}")

        # -- the Tuner
        if resume:
            tuner = restore_tuner(exp_path, settings, scfg)
        else:
            tuner = build_tuner(scfg, param_space, settings, max_t=max_t, metric=metric,
                                mode=mode, searched=searched)
        searcher_name = type(_base_searcher(tuner)).__name__
        if resume:
            say(f"resuming {exp_path} (searcher {searcher_name}; its state is restored from the "
                "experiment directory)")
        t0 = time.time()
        # SIGINT/SIGTERM: the trials stop, Tune saves its state, SearchInterrupted names the resume
        resume_cmd = interrupt.resume_command(scfg.name, scfg.storage, scfg.address)
        try:
            with interrupt.storage_watch(None if storage.is_uri(exp_path) else exp_path), \
                    interrupt.graceful_stop(resume_cmd):
                results = tuner.fit()
        except Exception:  # reading the results back from a full storage may fail too
            if interrupt.storage_full() is None:
                raise
        full = interrupt.storage_full()
        if full:
            raise MonaError(f"the storage {exp_path} is full: {full[0]} ({full[1]}); the search "
                            f"stopped. Free space there, then continue with: {resume_cmd}")
        timings["trials_s"] = time.time() - t0
        n_study = _searcher_trials(tuner)
        if resume and n_study is not None:
            if n_study >= len(results):
                say(f"{searcher_name}: the study holds {n_study} trials, those before the "
                    "interruption included")
            else:
                say(f"warning: {searcher_name}'s study holds {n_study} of the {len(results)} "
                    "trials: its state was not restored from the experiment directory")

        # -- outcomes, best, registry, curves
        t0 = time.time()
        rows = _trial_rows(results)
        stopped_by = "ASHA" if scfg.scheduler.kind == "asha" else "the time budget"
        lost: dict[str, str] = {}
        recon = reconcile_runs(scfg.tracking_uri, experiment_id, parent_run_id, rows, test_key,
                               max_t, stopped_by, lost)
        outcome = SearchOutcome(name=scfg.name, experiment_path=exp_path,
                                parent_run_id=parent_run_id, metric=metric, mode=mode,
                                outcomes={k: v[0] for k, v in recon.items()},
                                details={k: v[1] for k, v in recon.items()
                                         if v[0] in ("failed", "diverged")},
                                lost_runs=lost,
                                searcher=searcher_name, searcher_trials=n_study)
        best = None
        try:
            best = results.get_best_result(metric=metric, mode=mode, scope="last",
                                           filter_nan_and_inf=True)
        except Exception:  # no trial reported the metric
            best = None
        if best is not None and best.metrics:
            best_trial = best.metrics.get("trial_id")
            outcome.best_trial_id = best_trial
            outcome.best_config = {k: best.config.get(k) for k in searched}
            outcome.best_metrics = {k: v for k, v in best.metrics.items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
            outcome.best_run_id = recon.get(best_trial, (None, None, None))[2] \
                or best.metrics.get("mlflow_run_id")
        if outcome.best_run_id:
            mr.set_tags(scfg.tracking_uri, parent_run_id, {
                mr.TAG_BEST_RUN: outcome.best_run_id, "mona.best_trial_id": outcome.best_trial_id})
            mr.set_tags(scfg.tracking_uri, outcome.best_run_id, {"mona.best": "true"})
            best_m = {f"best_{metric}": outcome.best_metrics.get(metric)}
            for k in (test_key, "source_probe_error", "source_probe_error_pretrained"):
                if k in outcome.best_metrics:
                    best_m[f"best_{k}"] = outcome.best_metrics[k]
            mr.log_metrics(scfg.tracking_uri, parent_run_id,
                           {k: v for k, v in best_m.items() if v is not None}, step=0)
            try:
                outcome.embedder_location = mr.embedder_location(scfg.tracking_uri,
                                                                 outcome.best_run_id)
            except Exception:  # informational only
                outcome.embedder_location = None
            if scfg.register_model:
                try:
                    mv = mr.register_embedder(
                        scfg.tracking_uri, scfg.task, outcome.best_run_id,
                        tags={"search": scfg.name, "trial_id": outcome.best_trial_id,
                              metric: outcome.best_metrics.get(metric)})
                    outcome.model_version = str(mv.version)
                except Exception as e:  # e.g. no embedder logged (trial without stage 1)
                    say(f"note: could not register the best embedder: {e}")
        counts = {o: sum(1 for v in outcome.outcomes.values() if v == o) for o in mr.OUTCOMES}
        outcome.nodes = _trials_per_node(scfg.tracking_uri, experiment_id, parent_run_id)
        lost_nodes = cluster.lost_nodes(nodes)  # alive at the start (preflight), dead now
        if lost_nodes:
            from mona_tune.search.summary import lost_node_trials

            outcome.lost_nodes = lost_node_trials(scfg.tracking_uri, experiment_id,
                                                  parent_run_id, lost_nodes)
            mr.set_tags(scfg.tracking_uri, parent_run_id, {"mona.lost_nodes": ", ".join(
                f"{n.ip} ({n.node_id})" for n in lost_nodes)})
        mr.log_metrics(scfg.tracking_uri, parent_run_id,
                       {f"trials_{k}": v for k, v in counts.items()}, step=0)

        import tempfile

        with tempfile.TemporaryDirectory() as d:
            png = plot_curves(rows, metric, recon, outcome.best_trial_id, Path(d) / CURVES_FILE,
                              title=f"{scfg.name}: {scfg.task}")
            mr.log_artifact(scfg.tracking_uri, parent_run_id, png)
            target = storage.join(exp_path, CURVES_FILE)
            storage.write_bytes(target, png.read_bytes())
            outcome.curves_png = target
            from mona_tune.search.summary import TRIALS_HTML, trials_view, write_trials_report

            for f in write_trials_report(rows, Path(d), metric=metric, mode=mode,
                                         searched=searched, outcomes=recon,
                                         best_trial=outcome.best_trial_id,
                                         title=f"{scfg.name}: {scfg.task}", test_key=test_key,
                                         tracking_uri=scfg.tracking_uri,
                                         experiment_id=experiment_id):
                mr.log_artifact(scfg.tracking_uri, parent_run_id, f)
                storage.write_bytes(storage.join(exp_path, f.name), f.read_bytes())
            say(f"  trials side by side: {storage.join(exp_path, TRIALS_HTML)}; in the MLflow UI: "
                + trials_view(scfg.tracking_uri, experiment_id, scfg.name, searched, metric,
                              test_key))
        timings["finalize_s"] = time.time() - t0
    except BaseException as err:
        if parent_run_id is None:  # nothing was started in the tracking store
            raise
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        try:
            mr.set_tags(scfg.tracking_uri, parent_run_id,
                        {"mona.error": f"{type(err).__name__}: {err}".splitlines()[0][:500]})
            mr.end_run(scfg.tracking_uri, parent_run_id, status)
        except Exception:  # the original error matters more
            logger.debug("could not close the parent run", exc_info=True)
        raise
    finally:
        mr.ride_out_outages(0.0)  # only while the search runs (tests call it in-process)
        if started:
            import ray

            ray.shutdown()
    timings["total_s"] = time.time() - t_start
    outcome.timings = timings
    mr.log_metrics(scfg.tracking_uri, parent_run_id,
                   {f"timing_{k}": v for k, v in timings.items()}, step=0)
    mr.end_run(scfg.tracking_uri, parent_run_id, "FINISHED")
    print_summary(outcome, scfg, task.metric, counts, say)
    return outcome


