"""Tune's scheduler and searcher, made to survive an interrupted driver and retried trials.

- every new trial makes Tune snapshot its experiment state at the end of the step that added it
  (besides the periodic snapshots): a trial that starts, and opens its MLflow run, is in the
  snapshot ``--resume`` reads, so it is not sampled again under another id;
- ASHA's rungs are not part of Tune's snapshot (``Tuner.restore`` brings back the scheduler as it
  was built, empty). A restored trial's results, up to the snapshot, are replayed into its bracket
  from the trial's ``result.json``, so that a resumed search stops the trials an uninterrupted one
  would;
- Optuna warns and ignores a step reported twice; a trial restored from a checkpoint reports the
  steps after that checkpoint again. The searcher passes each trial's steps on once;
- the searcher's state is reconciled with Tune's restored trial list (:class:`ResumableSearch`).

Why the reconciliation: Tune writes the experiment state (the trial list), the search generator's
state (how many trials it created) and the searcher's pickle (the Optuna study) as three files in
the driver's staging folder, and uploads that folder to the storage in a background thread. The
next snapshot rewrites the three files while an upload may still be copying them (Tune skips the
upload then, but not the writing), and a driver killed mid-upload leaves some files new and some
old; ``Tuner.restore`` then reads each file on its own. Tune offers no way to write them as one, so
the experiment state, which is what Tune restores trials from, is taken as the truth and the
restored searcher is made to agree with it:

- a trial the experiment state lists but the searcher does not know (its state is older) is
  adopted: it counts towards the concurrency limit while it runs, and when it ends Optuna is told
  its config and final metric (a finished one at once), so the sampler learns from it (without the
  adoption, Optuna raised ``KeyError`` on its first result and never learnt its value);
- a trial the searcher holds but Tune does not (the searcher's state is newer: the trial started
  after the experiment snapshot) is told to Optuna as failed and its config is queued, so the
  resumed search runs it again under a new id; the generator's count of created trials becomes
  the number Tune restored (without this, the search ended one trial short).

The classes are pickled with the Tuner (``tuner.pkl``) and found again by this module's name.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.util import flatten_dict

from mona_tune import ray_compat

logger = logging.getLogger(__name__)


def damaged_state(experiment_path: str) -> str | None:
    """The newest experiment state file under ``experiment_path`` when it does not parse, else
    None. Tune rewrites that file in place while an upload may be copying it; given a damaged
    one, ``Tuner.restore`` logs the error and starts the experiment afresh, every trial new."""
    import fnmatch

    import pyarrow.fs

    from mona_tune.cluster import storage

    fs, path = storage.filesystem(experiment_path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    names = sorted(i.base_name for i in infos
                   if fnmatch.fnmatch(i.base_name, "experiment_state-*.json"))
    if not names:
        return None
    newest = storage.join(experiment_path, names[-1])
    try:
        json.loads(storage.read_text(newest) or "")
    except ValueError:
        return newest
    return None


def _trial_folder(trial) -> Path | None:
    """The trial's folder when it is on this machine's disk (local storage), else None (also
    for a new trial, whose folder Tune has not named yet)."""
    if getattr(trial.storage, "trial_dir_name", None) is None:
        return None
    for folder in (trial.path, trial.local_path):
        if folder and Path(folder).is_dir() and any(Path(folder).iterdir()):
            return Path(folder)
    return None


def _recorded_results(folder: Path) -> dict[int, dict]:
    """Iteration -> result of the trial in ``folder``: those the driver wrote to ``result.json``
    (as far as its last snapshot uploaded it) and, for the iterations missing there, those saved
    in the trial's checkpoints (a checkpoint's iteration is its global epoch: one report per
    epoch, from 1)."""
    from mona_tune.search.trial import checkpoint_states

    out = {}
    for d, state in checkpoint_states(folder, whole=False):
        if isinstance(state.get("metrics"), dict):
            g = int(state["global_epoch"])
            out[g] = {**state["metrics"], TRAINING_ITERATION: g, "checkpoint_dir_name": d.name}
    path = folder / "result.json"
    for line in path.read_text().splitlines() if path.is_file() else ():
        try:
            result = json.loads(line)
        except ValueError:  # a line cut short by a killed driver
            continue
        if TRAINING_ITERATION in result:
            out[result[TRAINING_ITERATION]] = result
    return dict(sorted(out.items()))


def past_results(trial) -> list[dict]:
    """The trial's results up to its restored last result (a local trial folder; none
    otherwise)."""
    last = (trial.run_metadata.last_result or {}).get(TRAINING_ITERATION)
    folder = _trial_folder(trial)
    if not last or folder is None:
        return []
    return [r for i, r in _recorded_results(folder).items() if i <= last]


def catch_up_checkpoint(trial) -> bool:
    """Point a restored, unfinished trial at the newest whole checkpoint in its folder when
    Tune's snapshot names an older one or none.

    The snapshot ``--resume`` reads is taken when a trial is added (and every few minutes); a
    trial that started or went on checkpointing after it would otherwise be restored from an
    older checkpoint, or trained from scratch, and the epochs in between done again. The
    checkpoint's result becomes the trial's last result, so that its iterations continue and
    :class:`ResumableASHA` replays the rungs up to it. Local storage only (the folder is read
    here); returns whether the trial was moved on."""
    from mona_tune.search.trial import checkpoint_states

    if trial.status != Trial.PENDING or (folder := _trial_folder(trial)) is None:
        return False
    last = trial.run_metadata.last_result or {}
    if last.get(TRAINING_ITERATION, 0) != last.get("global_epoch", 0):
        return False  # iterations not numbered by global epoch: nothing to match them by
    known = trial.latest_checkpoint_result
    known_it = (known.metrics or {}).get(TRAINING_ITERATION, 0) if known else 0
    results = _recorded_results(folder)
    newer = [(int(state["global_epoch"]), d) for d, state in checkpoint_states(folder)
             if int(state["global_epoch"]) > known_it and int(state["global_epoch"]) in results]
    if not newer:
        return False
    it, d = max(newer)
    ray_compat.register_checkpoint(trial, d.name, {**results[it], "checkpoint_dir_name": d.name})
    logger.info("trial %s continues from %s (global epoch %d; the snapshot knew %d)",
                trial.trial_id, d.name, it, known_it)
    return True


def tell_searcher(tune_controller, trial) -> None:
    """Every trial Tune adds, new or restored, reaches :meth:`ResumableSearch.on_trial_add`.

    The schedulers' ``on_trial_add`` is the one hook Tune calls for each restored trial, after it
    restored the search algorithm and before it asks for a new trial. An error here would make
    Tune give up the restore and start the experiment afresh, so it is logged instead."""
    alg = getattr(tune_controller, "search_alg", None)
    if isinstance(alg, _RestoredTrials):
        try:
            alg.on_trial_add(trial)
        except Exception:
            logger.exception("could not reconcile the searcher with restored trial %s",
                             trial.trial_id)


class SnapshottingFIFO(FIFOScheduler):
    def on_trial_add(self, tune_controller, trial) -> None:
        catch_up_checkpoint(trial)
        super().on_trial_add(tune_controller, trial)
        tell_searcher(tune_controller, trial)
        ray_compat.snapshot_soon(tune_controller)


class ResumableASHA(ASHAScheduler):
    def on_trial_add(self, tune_controller, trial) -> None:
        catch_up_checkpoint(trial)
        super().on_trial_add(tune_controller, trial)
        tell_searcher(tune_controller, trial)
        bracket = self._trial_info[trial.trial_id]
        replayed = 0
        for result in past_results(trial):
            if self._time_attr in result and self._metric in result:
                # the decision was taken before the interruption; only the rungs are rebuilt
                bracket.on_result(trial, result[self._time_attr],
                                  self._metric_op * result[self._metric])
                replayed += 1
        if replayed:
            logger.info("ASHA: %d results of trial %s replayed", replayed, trial.trial_id)
        ray_compat.snapshot_soon(tune_controller)


class OnceOptunaSearch(OptunaSearch):
    """Optuna that hears each step once and takes in trials its restored state missed.

    ``first``: configurations enqueued when the study is set up, so that they are sampled first
    (a warm start's best past configurations, ``search/warm_start.py``; its evaluated points go
    in through ``points_to_evaluate`` and ``evaluated_rewards``). They are part of the study, so
    the searcher's saved state keeps those not yet run: a resumed search does not run them
    again."""

    def __init__(self, *args, first: list[dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._first = [dict(p) for p in first or []]

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if not super().set_search_properties(metric, mode, config, **spec):
            return False
        for point in getattr(self, "_first", ()):
            self._ot_study.enqueue_trial(point)
        return True

    def _adopted(self) -> dict[str, dict]:
        # trial id -> params of the trials Tune restored that this state did not know
        return self.__dict__.setdefault("_adopted_params", {})

    def knows(self, trial_id: str) -> bool:
        return trial_id in self._ot_trials or trial_id in self._adopted()

    def adopt(self, trial_id: str, config: dict, result: dict | None, finished: bool) -> None:
        """Take in a trial Tune restored: one this (older) state does not hold is told to the
        study when it completes (a finished one now); one it holds as running that Tune restored
        as finished is completed now."""
        if trial_id in self._adopted():
            return
        if trial_id in self._ot_trials:
            if finished and trial_id not in self._completed_trials:
                # finished after this state was saved: Tune will not report it again
                OptunaSearch.on_trial_complete(self, trial_id, result=result)
            return
        flat = flatten_dict(dict(config or {}))
        params = {k: flat[k] for k in self._space if k in flat}
        if finished:
            self._tell(params, (result or {}).get(self._metric), error=False)
        else:
            self._adopted()[trial_id] = params
        logger.info("Optuna adopted trial %s%s", trial_id, " (finished)" if finished else "")

    def _tell(self, params: dict, value, error: bool) -> None:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        if ok:
            self.add_evaluated_point(params, float(value))
        else:  # a diverged or failed trial: Optuna's FAIL state takes no value
            self.add_evaluated_point(params, 0.0, error=True)

    def forget_unless(self, known: set[str]) -> list[dict]:
        """Fail the running trials Tune did not restore (this state is newer than Tune's) and
        queue their configs to run again; returns their params."""
        import optuna

        queued = []
        for trial_id, ot_trial in list(self._ot_trials.items()):
            if trial_id in known or trial_id in self._completed_trials:
                continue
            if self._ot_study.trials[ot_trial.number].state != optuna.trial.TrialState.RUNNING:
                continue
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(trial_id)
            self._ot_study.enqueue_trial(dict(ot_trial.params))
            queued.append(dict(ot_trial.params))
        return queued

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        params = self._adopted().pop(trial_id, None)
        if params is not None:
            self._tell(params, (result or {}).get(self._metric), error)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._adopted():
            return  # its final metric is told on completion
        seen = self.__dict__.setdefault("_steps_seen", {})
        step = result.get(TRAINING_ITERATION)
        if step is not None and step <= seen.get(trial_id, 0):
            return
        super().on_trial_result(trial_id, result)
        if step is not None:
            seen[trial_id] = step


class _RestoredTrials:
    """What a resumable search algorithm knows of the trials Tune added: those this process
    created and those Tune restored (and whether each has finished). Tune passes each trial it
    adds through :func:`tell_searcher`. Never part of a saved state: a resumed driver rebuilds it
    from the trials Tune adds."""

    _BOOKKEEPING = ("_created", "_restored", "_reconcile_pending")

    def _init_reconcile(self) -> None:
        self._created: set[str] = set()  # trials created by this process
        self._restored: dict[str, bool] = {}  # restored trial id -> finished
        self._reconcile_pending = False

    def __setstate__(self, state: dict) -> None:  # unpickled from tuner.pkl
        self.__dict__.update(state)
        self._init_reconcile()

    def _note_restored(self, trial) -> bool | None:
        """None for a trial this process created; else records it as restored and returns
        whether it has finished."""
        if trial.trial_id in self._created:
            return None
        finished = trial.status == Trial.TERMINATED
        self._restored[trial.trial_id] = finished
        self._reconcile_pending = True
        return finished


class ResumableSearch(_RestoredTrials, SearchGenerator):
    """Tune's search generator, reconciled with the trials Tune restored (see the module's
    docstring); the trials this generator did not create in this process are the restored
    ones."""

    def __init__(self, searcher):
        super().__init__(searcher)
        self._init_reconcile()

    def _chain(self) -> tuple[ConcurrencyLimiter | None, OptunaSearch | None]:
        limiter, alg = None, self.searcher
        while hasattr(alg, "searcher"):
            if isinstance(alg, ConcurrencyLimiter):
                limiter = alg
            alg = alg.searcher
        return limiter, alg if isinstance(alg, OnceOptunaSearch) else None

    def next_trial(self):
        self.reconcile()
        trial = super().next_trial()
        if trial is not None:
            self._created.add(trial.trial_id)
        return trial

    def on_trial_add(self, trial) -> None:
        finished = self._note_restored(trial)
        if finished is None:
            return
        limiter, optuna_search = self._chain()
        if optuna_search is not None:
            optuna_search.adopt(trial.trial_id, trial.config, trial.last_result, finished)
        if limiter is not None and not finished:
            limiter.live_trials.add(trial.trial_id)

    def reconcile(self) -> None:
        """Once all restored trials are added (Tune restores them all before it asks for a new
        trial): drop what Tune does not know, count what it does."""
        if not self._reconcile_pending:
            return
        self._reconcile_pending = False
        known = set(self._restored) | self._created
        limiter, optuna_search = self._chain()
        if limiter is not None:
            unfinished = {t for t, done in self._restored.items() if not done}
            dropped = limiter.live_trials - unfinished - self._created
            limiter.live_trials -= dropped
            limiter.num_unfinished_live_trials = len(limiter.live_trials)
            if dropped:
                logger.info("concurrency limit: trials %s were not restored", sorted(dropped))
        if optuna_search is not None:
            for params in optuna_search.forget_unless(known):
                logger.warning("a trial the experiment state lacks runs again with %s", params)
        if self._counter != len(known):
            logger.warning("the search generator counted %d trials, Tune restored %d",
                           self._counter, len(known))
            self._counter = len(known)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.reconcile()
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.reconcile()
        super().on_trial_complete(trial_id, result=result, error=error)


class ResumableRandom(_RestoredTrials, BasicVariantGenerator):
    """Seeded random sampling whose restored state agrees with the trials Tune restored.

    Its trials are numbered (``<prefix>_00000``, ``_00001``, ...) and drawn in order from a seeded
    generator, so the search is a fixed list of (id, config). A copy of the generator as it was
    before the first trial is kept in its state; on resume the list is drawn again from that copy
    and the trials Tune restored are skipped: whichever moment the generator's file came from, the
    trials Tune lacks run with their own ids and configs, and none runs twice."""

    _NOT_PRISTINE = ("_trial_generator", "_trial_iter", "_pristine",
                     *_RestoredTrials._BOOKKEEPING)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_reconcile()

    def add_configurations(self, experiments) -> None:
        super().add_configurations(experiments)
        self._pristine = copy.deepcopy(
            {k: v for k, v in self.__dict__.items() if k not in self._NOT_PRISTINE})

    def get_state(self):
        state = super().get_state()
        if state:
            for k in self._BOOKKEEPING:
                del state[k]
        return state

    def on_trial_add(self, trial) -> None:
        self._note_restored(trial)

    def reconcile(self) -> None:
        if not self._reconcile_pending:
            return
        self._reconcile_pending = False
        pristine = getattr(self, "_pristine", None)
        if pristine is None:
            logger.warning("random search: no state from before the first trial; the trials "
                           "after the restored ones are drawn from the restored state")
            return
        self.set_state({**copy.deepcopy(pristine), "_pristine": pristine})  # keeps _restored
        self._live_trials = {t for t, done in self._restored.items() if not done}

    def next_trial(self):
        self.reconcile()
        while True:
            trial = super().next_trial()
            if trial is None or trial.trial_id not in self._restored:
                if trial is not None:
                    self._created.add(trial.trial_id)
                return trial
            # drawn again, and Tune has it: skip it; it counts as live only while it runs
            if self._restored[trial.trial_id]:
                self._live_trials.discard(trial.trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.reconcile()
        if trial_id in self._restored:  # a restored trial may end before the list reaches it
            self._restored[trial_id] = True
        super().on_trial_complete(trial_id, result=result, error=error)
