"""The Ray Tune ``Tuner`` of a search, built new or restored from its experiment folder.

- searcher: Optuna TPE (``OptunaSearch``, seeded) behind ``ConcurrencyLimiter``, or seeded random
  sampling (``BasicVariantGenerator``); both wrapped to resume exactly (``search/resumable.py``);
- scheduler: ASHA on ``stage2_epoch`` (max_t = the stage-2 epoch budget), or FIFO;
- resources per trial (``cpus_per_trial``, fractional ``gpus_per_trial`` pack trials on a GPU),
  actors reused across trials so each worker process loads data and the source model once;
- checkpoints: each epoch's report carries the trainer's checkpoint, the best ``num_to_keep`` (by
  the validation metric) and the latest are kept; a failing trial restarts from its latest one
  (``max_failures``);
- resume: ``Tuner.restore(resume_unfinished=True, resume_errored=True)``; Tune restores the
  searcher's state (the Optuna study) from the experiment directory.
"""

from __future__ import annotations

from mona_tune import ray_compat
from mona_tune.cluster import storage
from mona_tune.config import SearchConfig
from mona_tune.search.interrupt import StopWhenStorageFull
from mona_tune.search.trial import TrialSettings, run_trial, trial_dir_name


def _searcher(scfg: SearchConfig, metric: str, mode: str, warm=None):
    if scfg.sampler == "random":
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
    learnt = {}
    if warm is not None and warm.points:  # search/warm_start.py
        learnt = {"points_to_evaluate": warm.points, "evaluated_rewards": warm.rewards,
                  "first": warm.first}
    return ResumableSearch(ConcurrencyLimiter(
        OnceOptunaSearch(metric=metric, mode=mode, sampler=sampler, **learnt),
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


def _trainable(settings: TrialSettings, cpus: float, gpus: float, max_concurrent: int = 1):
    """The trial function with its resources: ``gpus`` raised where that spreads the trials
    running at once over all GPUs of the cluster (:func:`capacity.spread_gpus_per_trial`)."""
    import ray
    from ray import tune

    from mona_tune.search.capacity import spread_gpus_per_trial

    if ray.is_initialized() and 0 < gpus < 1:
        spread = spread_gpus_per_trial(gpus, max_concurrent,
                                       ray.cluster_resources().get("GPU", 0))
        if spread != gpus:
            print(f"GPUs per trial: {spread:g} instead of {gpus:g}, so that {max_concurrent} "
                  "trials at once spread over every GPU", flush=True)
            gpus = spread
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                               resources={"cpu": cpus, "gpu": gpus})


def _trial_dirname(trial) -> str:
    return trial_dir_name(trial.trial_id)


def build_tuner(scfg: SearchConfig, param_space: dict, settings: TrialSettings, *, max_t: int,
                metric: str, mode: str, searched: list[str], warm=None):
    """A new search's Tuner; ``warm``: the :class:`~mona_tune.search.warm_start.WarmStart` its
    Optuna study starts from."""
    from ray import tune

    tune_config = tune.TuneConfig(
        metric=metric, mode=mode,
        search_alg=_searcher(scfg, metric, mode, warm),
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
        callbacks=[StopWhenStorageFull()],
        verbose=scfg.verbose,
    )
    return tune.Tuner(_trainable(settings, scfg.cpus_per_trial, scfg.gpus_per_trial,
                                 scfg.max_concurrent),
                      param_space=param_space, tune_config=tune_config, run_config=run_config)


def restore_tuner(experiment_path: str, settings: TrialSettings, scfg: SearchConfig):
    from ray import tune

    return tune.Tuner.restore(experiment_path,
                              trainable=_trainable(settings, scfg.cpus_per_trial,
                                                   scfg.gpus_per_trial, scfg.max_concurrent),
                              resume_unfinished=True, resume_errored=True)


def base_searcher(tuner):
    """The innermost searcher of a Tuner (OptunaSearch under its ConcurrencyLimiter)."""
    alg = ray_compat.tuner_search_alg(tuner)
    while hasattr(alg, "searcher"):
        alg = alg.searcher
    return alg


def searcher_trials(tuner) -> int | None:
    """Trials the Optuna study holds (after a resume: those before the interruption too)."""
    study = getattr(base_searcher(tuner), "_ot_study", None)
    try:
        return len(study.trials) if study is not None else None
    except Exception:
        return None
