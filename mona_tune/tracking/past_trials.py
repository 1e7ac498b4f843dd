"""The trials of past searches of a task, read back from the tracking store.

A warm-started search (``search/warm_start.py``) learns from them: every child run of a search
holds its trial's whole ``TrainConfig`` as params (strings, as MLflow keeps them), its outcome
tag and the validation metric's history. Runs of lost trials are deleted by the search that lost
them and are not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mona_tune.errors import MonaError
from mona_tune.tracking import mlflow_runs as mr

PAGE = 1000  # runs per request (MLflow's page size)


@dataclass(frozen=True)
class PastTrial:
    """One trial of a past search: its settings as logged and its last validation metric."""

    run_id: str
    trial_id: str
    search: str
    outcome: str  # one of mr.OUTCOMES, or the run's status where no outcome was tagged
    value: float | None  # the last reported validation metric; None where none is finite
    params: dict = field(default_factory=dict)  # TrainConfig field -> value as logged (str)


def _all_pages(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = mr.retrying(client.search_runs, [experiment_id], filter_string=filter_string,
                           max_results=PAGE, page_token=token,
                           order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _value(run, metric: str) -> float | None:
    v = run.data.metrics.get(metric)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _trial(run, metric: str) -> PastTrial:
    tags = run.data.tags
    return PastTrial(run_id=run.info.run_id, trial_id=tags.get(mr.TAG_TRIAL_ID, "?"),
                     search=tags.get(mr.TAG_SEARCH, "?"),
                     outcome=tags.get(mr.TAG_OUTCOME, run.info.status.lower()),
                     value=_value(run, metric), params=dict(run.data.params))


def past_trials(tracking_uri: str, task: str, metric: str, *,
                search: str | None = None) -> list[PastTrial]:
    """Every trial run of the task's past searches (of ``search`` only, where named), oldest
    first. A named search that the store does not hold is one line (:class:`MonaError`); no
    experiment of the task at all is an empty list."""
    client = mr.get_client(tracking_uri)
    exp = mr.retrying(client.get_experiment_by_name, mr.EXPERIMENT_PREFIX + task)
    if exp is None or exp.lifecycle_stage == "deleted":
        if search is not None:
            raise MonaError(f"--warm-start {search}: no search of task {task} in "
                            f"{mr.redact(tracking_uri)} (a search kept in another tracking store "
                            "is learnt from only with --tracking-uri of that store)")
        return []
    where = f"tags.`{mr.TAG_ROLE}` = 'trial'"
    if search is not None:
        parents = _all_pages(client, exp.experiment_id,
                             f"tags.`{mr.TAG_ROLE}` = 'search' and "
                             f"tags.`{mr.TAG_SEARCH}` = '{search}'")
        if not parents:
            raise MonaError(f"--warm-start {search}: no search of that name of task {task} in "
                            f"{mr.redact(tracking_uri)} (a search kept in another tracking "
                            "store is learnt from only with --tracking-uri of that store)")
        where += f" and tags.`{mr.TAG_SEARCH}` = '{search}'"
    return [_trial(r, metric) for r in _all_pages(client, exp.experiment_id, where)]

