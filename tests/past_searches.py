"""Past searches written into a real MLflow store the way a search writes them (the parent run,
one child run per trial with its whole TrainConfig as params, per-epoch metrics at step = global
epoch, the outcome tag), through the project's tracking helpers; the metric timestamps are
given, so that curves over wall time have known oracles."""

from __future__ import annotations

from dataclasses import dataclass, field

from mona_tune.config import TrainConfig
from mona_tune.tracking import mlflow_runs as mr

T0_MS = 1_700_000_000_000  # the first report of a written search: a fixed moment


@dataclass
class Trial:
    """One trial: its searched values, outcome and stage-2 reports [(ms after T0_MS, value)]
    (a stage-1 epoch is logged before them when ``warmup_epochs`` > 0)."""

    values: dict
    outcome: str = "completed"
    reports: list = field(default_factory=list)


def write_search(uri: str, name: str, trials: list[Trial], *, searched: tuple[str, ...],
                 fixed: dict, task: str = "darcy") -> str:
    """A finished search named ``name`` in the store at ``uri``; returns its parent run id."""
    from mlflow.entities import Metric

    exp = mr.ensure_experiment(uri, task)
    parent = mr.start_parent_run(uri, exp, name=name, task=task, params={
        "metric": "val_rel_l2", "mode": "min", "searched": ",".join(searched)},
        space_yaml="searched: {}\n")
    client = mr.get_client(uri)
    for i, trial in enumerate(trials):
        cfg = TrainConfig(**{**fixed, **trial.values, "task": task})
        params = {**cfg.model_dump(mode="json"), "searched": ",".join(searched)}
        child = mr.open_child_run(uri, exp, parent, trial_id=f"t{i:02d}", trial_name=f"t{i}",
                                  search_name=name, task=task, params=params)
        s1 = cfg.stage1_epochs
        metrics = []
        if s1 and trial.reports:
            ms = T0_MS + trial.reports[0][0] - 1
            metrics += [Metric("val_rel_l2", 0.5, ms, s1), Metric("stage2_epoch", 0, ms, s1),
                        Metric("stage", 1, ms, s1)]
        for epoch, (ms, value) in enumerate(trial.reports, start=1):
            step = s1 + epoch
            metrics += [Metric("val_rel_l2", value, T0_MS + ms, step),
                        Metric("stage2_epoch", epoch, T0_MS + ms, step),
                        Metric("stage", 2, T0_MS + ms, step)]
        if metrics:
            mr.retrying(client.log_batch, child.run_id, metrics=metrics)
        mr.set_tags(uri, child.run_id, {mr.TAG_OUTCOME: trial.outcome})
        mr.end_run(uri, child.run_id,
                   "FAILED" if trial.outcome in ("failed", "diverged") else "FINISHED")
    mr.end_run(uri, parent)
    return parent
