"""Tune's scheduler and searcher, made to survive an interrupted driver and retried trials.

- every new trial makes Tune snapshot its experiment state at the end of the step that added it
  (besides the periodic snapshots): a trial that starts, and opens its MLflow run, is in the
  snapshot ``--resume`` reads, so it is not sampled again under another id;
- ASHA's rungs are not part of Tune's snapshot (``Tuner.restore`` brings back the scheduler as it
  was built, empty). A restored trial's results, up to the snapshot, are replayed into its bracket
  from the trial's ``result.json``, so that a resumed search stops the trials an uninterrupted one
  would;
- Optuna warns and ignores a step reported twice; a trial restored from a checkpoint reports the
  steps after that checkpoint again. The searcher passes each trial's steps on once.

The classes are pickled with the Tuner (``tuner.pkl``) and found again by this module's name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)


def snapshot_soon(tune_controller) -> None:
    """Ask Tune for an experiment snapshot at the end of the current step (a private flag of
    its checkpoint manager; without it, the periodic snapshots remain)."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    manager = getattr(controller, "_checkpoint_manager", None)
    if manager is not None and hasattr(manager, "_should_force_sync_up"):
        manager._should_force_sync_up = True


def past_results(trial) -> list[dict]:
    """The trial's results in ``result.json`` up to its restored last result (a local trial
    folder; none otherwise)."""
    last = (trial.run_metadata.last_result or {}).get(TRAINING_ITERATION)
    if not last:
        return []
    for folder in (trial.local_path, trial.path):
        path = Path(folder or "", "result.json")
        if folder and path.is_file():
            break
    else:
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            result = json.loads(line)
        except ValueError:  # a line cut short by a killed driver
            continue
        if result.get(TRAINING_ITERATION, last + 1) <= last:
            out.append(result)
    return out


class SnapshottingFIFO(FIFOScheduler):
    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        snapshot_soon(tune_controller)


class ResumableASHA(ASHAScheduler):
    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
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
        snapshot_soon(tune_controller)


class OnceOptunaSearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        seen = self.__dict__.setdefault("_steps_seen", {})
        step = result.get(TRAINING_ITERATION)
        if step is not None and step <= seen.get(trial_id, 0):
            return
        super().on_trial_result(trial_id, result)
        if step is not None:
            seen[trial_id] = step
