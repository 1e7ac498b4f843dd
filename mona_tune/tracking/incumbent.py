"""The incumbent of a search over time: its best validation metric so far, against wall time and
against the stage-2 epochs its trials spent, read from the trials' runs in the tracking store.

Every stage-2 epoch of every trial is one report (its run logs the validation metric and
``stage2_epoch`` at step = global epoch, with the moment it was logged). In the order they were
logged, the reports count the epochs spent; the incumbent improves where a report beats every
earlier one. Time 0 is the first report of the search. Read from the store, the curve of any
past search can be drawn again (``mona-tune best --curves``); the search itself records it on
its parent run as the history ``incumbent_<metric>`` (step = stage-2 epochs spent, timestamp =
when that epoch was logged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mona_tune.tracking import mlflow_runs as mr


@dataclass(frozen=True)
class EpochReport:
    time_ms: int
    trial: int  # the trial's number in the order the trials started, from 1
    value: float


@dataclass
class IncumbentCurve:
    """The improvements of one search's incumbent, and how long the search ran."""

    search: str
    seconds: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)  # stage-2 epochs spent, this one included
    values: list[float] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)  # the trial whose report improved it
    total_epochs: int = 0
    total_seconds: float = 0.0
    t0_ms: int = 0

    @property
    def best(self) -> float | None:
        return self.values[-1] if self.values else None

    def reached(self, target: float, mode: str) -> tuple[int, int, float] | None:
        """(trial, stage-2 epochs spent, seconds) when the incumbent first reached ``target``
        (at or better than it), else None."""
        for s, e, v, t in zip(self.seconds, self.epochs, self.values, self.trials):
            if (v <= target) if mode == "min" else (v >= target):
                return t, e, s
        return None

    def describe(self) -> str:
        if not self.values:
            return "no trial reported a stage-2 epoch"
        return (f"best {self.values[-1]:.4g} reached after {self.epochs[-1]} of "
                f"{self.total_epochs} stage-2 epochs, {self.seconds[-1]:.0f} of "
                f"{self.total_seconds:.0f} s (trial {self.trials[-1]})")


def incumbent_curve(reports: list[EpochReport], mode: str, search: str = "") -> IncumbentCurve:
    """The incumbent over ``reports`` (any order); ties in time go in trial order."""
    curve = IncumbentCurve(search=search)
    ordered = sorted(reports, key=lambda r: (r.time_ms, r.trial))
    if not ordered:
        return curve
    curve.t0_ms = ordered[0].time_ms
    best = math.inf if mode == "min" else -math.inf
    for spent, r in enumerate(ordered, start=1):
        if (r.value < best) if mode == "min" else (r.value > best):
            best = r.value
            curve.seconds.append((r.time_ms - curve.t0_ms) / 1000)
            curve.epochs.append(spent)
            curve.values.append(r.value)
            curve.trials.append(r.trial)
    curve.total_epochs = len(ordered)
    curve.total_seconds = (ordered[-1].time_ms - curve.t0_ms) / 1000
    return curve


def _trial_reports(client, run, number: int, metric: str) -> list[EpochReport]:
    stage2 = {m.step: m.value for m in mr.retrying(client.get_metric_history, run.info.run_id,
                                                   "stage2_epoch")}
    out = []
    for m in mr.retrying(client.get_metric_history, run.info.run_id, metric):
        if stage2.get(m.step, 0) >= 1 and math.isfinite(m.value):
            out.append(EpochReport(time_ms=int(m.timestamp), trial=number, value=float(m.value)))
    return out


def search_reports(tracking_uri: str, experiment_id: str, parent_run_id: str,
                   metric: str) -> list[EpochReport]:
    """Every stage-2 epoch report of the search's trials."""
    client = mr.get_client(tracking_uri)
    runs = sorted(mr.child_runs(tracking_uri, experiment_id, parent_run_id),
                  key=lambda r: (r.info.start_time, r.info.run_id))
    out = []
    for number, run in enumerate(runs, start=1):
        out.extend(_trial_reports(client, run, number, metric))
    return out


def log_incumbent(tracking_uri: str, parent_run_id: str, curve: IncumbentCurve,
                  metric: str) -> None:
    """The history ``incumbent_<metric>`` on the parent run: each improvement at its step
    (epochs spent) and moment, and the last value again where the search ended."""
    from mlflow.entities import Metric

    key = f"incumbent_{metric}"
    batch = [Metric(key, v, curve.t0_ms + int(round(s * 1000)), e)
             for s, e, v in zip(curve.seconds, curve.epochs, curve.values)]
    if batch and curve.epochs[-1] < curve.total_epochs:
        batch.append(Metric(key, curve.values[-1],
                            curve.t0_ms + int(round(curve.total_seconds * 1000)),
                            curve.total_epochs))
    for i in range(0, len(batch), 1000):
        mr.retrying(mr.get_client(tracking_uri).log_batch, parent_run_id,
                    metrics=batch[i:i + 1000])
