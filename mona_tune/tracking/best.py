"""``mona-tune best``: rank the trials of a search (or of every search of a task) from MLflow.

Trials are ranked on the last reported validation metric (what Ray Tune's
``ResultGrid.get_best_result(scope="last")`` uses), so the first row is the trial the search
reported and registered as best. ``--export DIR`` writes that trial's stage-1 embedder (the
directory ``Trainer.save_embedder`` wrote) plus ``mona_best.json`` with its run, metrics and config.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mona_tune.errors import MonaError
from mona_tune.tracking import mlflow_runs as mr

SEARCH_PAGE = 1000  # runs per request when ranking all trials of a task (MLflow's page size)


@dataclass
class Ranked:
    run_id: str
    trial_id: str
    search: str
    outcome: str
    metric: float
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    searched: list = field(default_factory=list)


def _store_exists(tracking_uri: str) -> None:
    path = mr.sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise MonaError(f"--tracking-uri {tracking_uri}: no MLflow store at {path} "
                        "(run a search first, or point --tracking-uri at the store)")


def _experiments(client, task: str | None) -> list:
    if task:
        exp = mr.retrying(client.get_experiment_by_name, mr.EXPERIMENT_PREFIX + task)
        return [exp] if exp is not None else []
    return list(mr.retrying(client.search_experiments,
                            filter_string=f"name LIKE '{mr.EXPERIMENT_PREFIX}%'"))


def find_search(tracking_uri: str, name: str, task: str | None = None, flag: str = "--name"):
    """The latest parent run named ``name`` (tag ``mona.search_name``); ``flag``: the option
    that named it, for the error line."""
    client = mr.get_client(tracking_uri)
    exps = _experiments(client, task)
    if not exps:
        raise MonaError(f"{flag} {name}: no mona-tune experiment in {mr.redact(tracking_uri)}")
    runs = mr.retrying(client.search_runs, [e.experiment_id for e in exps],
                       filter_string=f"tags.`{mr.TAG_SEARCH}` = '{name}' and "
                                     f"tags.`{mr.TAG_ROLE}` = 'search'",
                       order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise MonaError(f"{flag} {name}: no search of that name in {mr.redact(tracking_uri)}")
    return runs[0]


def rank_trials(tracking_uri: str, *, name: str | None = None,
                task: str | None = None) -> tuple[list[Ranked], str, str, object]:
    """Trials ranked best first; returns (ranking, metric key, mode, parent run or None)."""
    _store_exists(tracking_uri)
    client = mr.get_client(tracking_uri)
    parent = None
    if name:
        parent = find_search(tracking_uri, name, task)
        task = parent.data.tags.get(mr.TAG_TASK, task)
        metric = parent.data.params.get("metric")
        mode = parent.data.params.get("mode", "min")
        runs = mr.child_runs(tracking_uri, parent.info.experiment_id, parent.info.run_id)
    else:
        task = task or "darcy"
        exps = _experiments(client, task)
        if not exps:
            raise MonaError(f"--task {task}: no searches of that task in "
                            f"{mr.redact(tracking_uri)}")
        runs, token = [], None
        while True:
            page = mr.retrying(client.search_runs, [exps[0].experiment_id],
                               filter_string=f"tags.`{mr.TAG_ROLE}` = 'trial'",
                               max_results=SEARCH_PAGE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        metric = mode = None
    if not metric:
        experiment = parent.info.experiment_id if parent else exps[0].experiment_id
        metric, mode = _task_metric(client, task, experiment)
    ranked = []
    for r in runs:
        v = r.data.metrics.get(metric)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            continue
        searched = [s for s in r.data.params.get("searched", "").split(",") if s]
        ranked.append(Ranked(run_id=r.info.run_id, trial_id=r.data.tags.get(mr.TAG_TRIAL_ID, "?"),
                             search=r.data.tags.get(mr.TAG_SEARCH, "?"),
                             outcome=r.data.tags.get(mr.TAG_OUTCOME, r.info.status.lower()),
                             metric=float(v), metrics=dict(r.data.metrics),
                             params=dict(r.data.params), searched=searched))
    ranked.sort(key=lambda x: x.metric, reverse=(mode == "max"))
    return ranked, metric, mode or "min", parent


def _task_metric(client, task: str, experiment_id: str) -> tuple[str, str]:
    """The ranking metric of a task's trials: the task's own, or, for a task configured by its
    data (``arrays``), the one its newest search ranked by."""
    from mona_tune.tasks import TASKS

    t = TASKS.get(task)  # None: a name given with --task-name
    if t is not None and t.configure is None:
        return f"val_{t.metric}", t.direction
    newest = mr.retrying(client.search_runs, [experiment_id],
                         filter_string=f"tags.`{mr.TAG_ROLE}` = 'search'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    if not newest or "metric" not in newest[0].data.params:
        raise MonaError(f"--task {task}: no search of that task records its metric; "
                        "name one with --name")
    params = newest[0].data.params
    return params["metric"], params.get("mode", "min")


def _fmt(v) -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f.is_integer() and abs(f) < 1e6 and "." not in str(v) and "e" not in str(v).lower():
        return str(int(f))
    return f"{f:.4g}"


def export_best(tracking_uri: str, best: Ranked, directory: Path, metric: str) -> Path:
    """Write the embedder of ``best`` and ``mona_best.json`` into ``directory``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise MonaError(f"--export {directory}: directory exists and is not empty")
    try:
        mr.download_embedder(tracking_uri, best.run_id, directory)
    except Exception as e:
        raise MonaError(f"--export: run {best.run_id} has no {mr.EMBEDDER_ARTIFACT}/ artifact "
                        f"({type(e).__name__})") from None
    config = {k: v for k, v in best.params.items() if k != "searched"}
    (directory / "mona_best.json").write_text(json.dumps({
        "run_id": best.run_id, "trial_id": best.trial_id, "search": best.search,
        "metric": metric, "value": best.metric, "metrics": best.metrics,
        "train_config_params": config,
    }, indent=2))
    return directory


def best_command(*, name: str | None, task: str | None, top: int, export: Path | None,
                 tracking_uri: str | None, as_json: bool = False, out=None) -> int:
    out = out or sys.stdout
    if top < 1:
        raise MonaError(f"--top {top}: must be at least 1")
    uri = mr.tracking_uri_or_default(tracking_uri)
    ranked, metric, mode, parent = rank_trials(uri, name=name, task=task)
    if not ranked:
        where = f"search {name}" if name else f"task {task or 'darcy'}"
        raise MonaError(f"{where}: no trial in {mr.redact(uri)} reported {metric}")
    shown = ranked[:top]
    test_key = metric.replace("val_", "test_", 1)
    if as_json:
        print(json.dumps([{"rank": i + 1, "run_id": r.run_id, "trial_id": r.trial_id,
                           "search": r.search, "outcome": r.outcome, metric: r.metric,
                           test_key: r.metrics.get(test_key),
                           "source_probe_error": r.metrics.get("source_probe_error"),
                           "params": {k: r.params.get(k) for k in r.searched}}
                          for i, r in enumerate(shown)], indent=2), file=out)
    else:
        title = f"search {name}" if name else f"all searches of task {task or 'darcy'}"
        print(f"best trials of {title} by {metric} ({mode}), {len(ranked)} ranked, "
              f"store {mr.redact(uri)}",
              file=out)
        keys = sorted({k for r in shown for k in r.searched})
        head = ["#", "run id", "trial", "outcome", metric, test_key, "probe_err", *keys]
        rows = [[str(i + 1), r.run_id, r.trial_id, r.outcome, _fmt(r.metric),
                 _fmt(r.metrics.get(test_key)), _fmt(r.metrics.get("source_probe_error")),
                 *[_fmt(r.params.get(k)) for k in keys]] for i, r in enumerate(shown)]
        widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)), file=out)
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)), file=out)
    if export is not None:
        d = export_best(uri, ranked[0], export, metric)
        print(f"exported the embedder of run {ranked[0].run_id} to {d} "
              f"(use: mona-tune train --init-embedder {d})",
              file=sys.stderr if as_json else out)
    return 0
