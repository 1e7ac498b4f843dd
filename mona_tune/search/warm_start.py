"""Warm start: a new search learns from the trials of past searches of its task.

Which trials. Those that completed or that the scheduler stopped: their last validation metric
is what the past search's sampler was told, so it is told here the same way. Failed and diverged
trials are dropped (they have no value), and so is a trial whose value of a searched field lies
outside the new space (Optuna takes only points inside its distributions).

Fixed settings. Each trial's settings (its whole ``TrainConfig``, as its run logged it) are
compared with the new search's, field by field, for the fields the new search does not search
and that change the validation metric (:data:`NOT_SETTINGS` are left out). The trials are
grouped by what differs, and the group that differs least is kept (none: the same settings; then
the larger group, then the newer); the others are dropped. Values measured under other settings
(another ``n_train``, another seed) sit on another scale, and TPE splits the trials it knows into
good and bad by their values: trials of two scales mixed would misplace that split, while one
group's values rank its configurations consistently.

How. The kept trials go to Optuna as evaluated points (``OptunaSearch``'s ``points_to_evaluate``
with ``evaluated_rewards``: complete trials in the study before its first sample, so TPE models
from the first trial on), and the best ``warm_start_first`` distinct configurations are enqueued
too, so the search runs them first, measured anew under the new settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mona_tune.config import Distribution, SearchConfig, SearchSpace, TrainConfig
from mona_tune.tracking import mlflow_runs as mr
from mona_tune.tracking.past_trials import PastTrial, past_trials

# fields that do not change a trial's validation metric (where it ran, how fast, the probe)
NOT_SETTINGS = frozenset({"device", "num_threads", "probe_every", "probe_samples"})
LEARNT_FROM = ("completed", "stopped_early")
QUANTUM_TOLERANCE = 1e-8  # Optuna's own, for a value on a quniform grid


@dataclass
class WarmStart:
    """What a search learns from past ones, and what it left out (for the printed line and the
    parent run)."""

    source: str  # "auto" or the named search
    points: list[dict] = field(default_factory=list)  # searched values of the kept trials
    rewards: list[float] = field(default_factory=list)  # their validation metrics
    first: list[dict] = field(default_factory=list)  # the best configurations, run first
    searches: dict[str, int] = field(default_factory=dict)  # search -> trials kept
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> trials
    differs: dict[str, tuple[str, str]] = field(default_factory=dict)  # field -> (past, now)

    def describe(self, store: str) -> str:
        if not self.points:
            seen = sum(self.dropped.values())
            why = (f"none of the {seen} past trials of the task fits ("
                   + ", ".join(f"{n} {k}" for k, n in self.dropped.items()) + ")") if seen \
                else "no past search of the task"
            return f"warm start: {why} in {store}; searching cold"
        text = (f"warm start: learnt from {len(self.points)} trials of "
                + ", ".join(f"{s} ({n})" for s, n in self.searches.items()))
        if self.differs:
            text += "; their settings differ in " + ", ".join(
                f"{k} ({was} there, {now} here)" for k, (was, now) in self.differs.items())
        if self.dropped:
            text += "; dropped " + ", ".join(f"{n} {k}" for k, n in self.dropped.items())
        if self.first:
            text += f"; the best {len(self.first)} configurations run first"
        return text

    def params(self) -> dict:
        """The parent run's record of it."""
        return {"warm_start": self.source, "warm_start_trials": len(self.points),
                "warm_start_first": len(self.first),
                "warm_start_searches": ",".join(f"{s}:{n}" for s, n in self.searches.items()),
                "warm_start_differs": ",".join(f"{k}:{a}->{b}"
                                               for k, (a, b) in self.differs.items()),
                "warm_start_dropped": ",".join(f"{k}:{n}" for k, n in self.dropped.items())}


def value_in(dist: Distribution, text: str | None):
    """The logged value ``text`` as a value of ``dist`` where it lies inside it, else None."""
    if text is None:
        return None
    if dist.kind == "choice":
        return next((v for v in dist.values or [] if str(v) == text), None)
    try:
        x = float(text)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    if dist.kind in ("randint", "lograndint"):  # high excluded, as in tune.randint
        return int(x) if x.is_integer() and dist.low <= x < dist.high else None
    if not dist.low <= x <= dist.high:
        return None
    if dist.kind == "quniform":
        k = (x - dist.low) / dist.q
        if abs(k - round(k)) >= QUANTUM_TOLERANCE:
            return None
    return x


def _logged(value) -> str:
    """A config value as the trial's run logged it (``mlflow_runs._params``)."""
    return "" if value is None else str(value)


def settings_of(fixed: dict, searched) -> dict[str, str]:
    """The new search's settings as its trials will log them: every ``TrainConfig`` field it
    does not search, except :data:`NOT_SETTINGS`."""
    values = TrainConfig(**fixed).model_dump(mode="json")
    return {k: _logged(v) for k, v in values.items()
            if k not in searched and k not in NOT_SETTINGS}


def _differences(trial: PastTrial, settings: dict[str, str]) -> tuple:
    return tuple(sorted((k, trial.params.get(k, "(not logged)"), now)
                        for k, now in settings.items() if trial.params.get(k) != now))


def _in_space(trial: PastTrial, space: SearchSpace) -> dict | None:
    point = {}
    for key, dist in space.searched.items():
        value = value_in(dist, trial.params.get(key))
        if value is None:
            return None
        point[key] = value
    return point


def select(trials: list[PastTrial], space: SearchSpace, settings: dict[str, str], *,
           mode: str, first: int, source: str = "auto") -> WarmStart:
    """The warm start of a search with ``space`` and ``settings`` from ``trials`` (oldest first),
    as the module's docstring says."""
    warm = WarmStart(source=source)

    def drop(reason: str) -> None:
        warm.dropped[reason] = warm.dropped.get(reason, 0) + 1

    groups: dict[tuple, list[tuple[PastTrial, dict]]] = {}
    for t in trials:
        if t.outcome not in LEARNT_FROM or t.value is None:
            drop(t.outcome if t.outcome in mr.OUTCOMES else "unfinished")
            continue
        point = _in_space(t, space)
        if point is None:
            drop("outside the space")
            continue
        groups.setdefault(_differences(t, settings), []).append((t, point))
    if not groups:
        return warm
    order = list(groups)  # oldest group first; the key prefers newer on a tie
    kept_key = min(order, key=lambda d: (len(d), -len(groups[d]), -order.index(d)))
    for key in order:
        if key != kept_key:
            warm.dropped["with other settings"] = (warm.dropped.get("with other settings", 0)
                                                   + len(groups[key]))
    kept = sorted(groups[kept_key], key=lambda tp: tp[0].value, reverse=(mode == "max"))
    warm.differs = {k: (was, now) for k, was, now in kept_key}
    for t, point in kept:
        warm.points.append(point)
        warm.rewards.append(t.value)
        warm.searches[t.search] = warm.searches.get(t.search, 0) + 1
        if len(warm.first) < first and point not in warm.first:
            warm.first.append(point)
    return warm


def learn_from_store(scfg: SearchConfig, space: SearchSpace, fixed: dict, *, metric: str,
                     mode: str) -> WarmStart:
    """The warm start ``scfg.warm_start`` asks for, read from the search's tracking store. A
    named search the store does not hold is a :class:`MonaError` (one line)."""
    source = scfg.warm_start or "auto"
    named = None if source == "auto" else source
    trials = past_trials(scfg.tracking_uri, scfg.tracking_task, metric, search=named)
    return select(trials, space, settings_of(fixed, space.searched), mode=mode,
                  first=scfg.warm_start_first, source=source)
