"""The summary a search prints at its end."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from mona_tune.report.links import ui_command
from mona_tune.report.values import fmt
from mona_tune.tracking import mlflow_runs as mr

if TYPE_CHECKING:
    from mona_tune.config import SearchConfig
    from mona_tune.search.results import SearchOutcome


def _lost_node_line(node_id: str, info: dict) -> str:
    parts = []
    for trial, t in sorted(info["trials"].items()):
        if t["now_on"] is None:  # its latest attempt ran there, before the node was lost
            parts.append(f"{trial} ran there ({t['outcome'] or 'no outcome'})")
        else:
            parts.append(f"{trial} was running there and continued on {t['now_on']} "
                         + (f"from its checkpoint at global epoch {t['restored_from']}"
                            if t["restored_from"] is not None else "from scratch")
                         + f" ({t['outcome'] or 'no outcome'})")
    return (f"lost node {info['ip']} ({node_id}): alive when the search started, dead at its end; "
            + ("; ".join(parts) if parts else "no trial ran there"))


def print_summary(o: SearchOutcome, scfg: SearchConfig, metric_name: str, counts: dict,
                  say) -> None:
    say("")
    say(f"== search {o.name} done: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                  for k, v in counts.items()))
    for trial, detail in sorted(o.details.items()):
        say(f"  {o.outcomes.get(trial)} {trial}: {detail}")
    for trial, run in sorted(o.lost_runs.items()):
        say(f"  lost trial {trial}: started just before the driver was interrupted, after Tune's "
            f"last snapshot, and run again under another id (with the same hyperparameters, "
            f"where the Optuna study held them); its MLflow run {run} was deleted (restorable)")
    if o.best_trial_id is None:
        say("no trial reported a validation metric; see the errors above and "
            f"{o.experiment_path}")
    else:
        m = o.best_metrics
        say(f"best trial {o.best_trial_id}: {o.metric} = {fmt(m.get(o.metric))}"
            + (f", test_{metric_name} = {fmt(m[f'test_{metric_name}'])}"
               if f"test_{metric_name}" in m else "")
            + f", source_probe_error = {fmt(m.get('source_probe_error', 'n/a'))}")
        say("  hyperparameters: " + ", ".join(f"{k}={fmt(v)}" for k, v in o.best_config.items()))
        say(f"  MLflow run: {o.best_run_id} (parent {o.parent_run_id})")
        if o.best_run_id:
            say(f"  embedder: runs:/{o.best_run_id}/{mr.EMBEDDER_ARTIFACT}"
                + (f"  = models:/{mr.registered_model_name(scfg.task)}@best (version "
                   f"{o.model_version})" if o.model_version else ""))
            if o.embedder_location:
                say(f"    stored in {o.embedder_location}")
            say(f"  export it: mona-tune best --name {o.name} --tracking-uri "
                f"{shlex.quote(mr.redact(scfg.tracking_uri))} --export DIR")
    if o.nodes:
        say(f"trials ran on {len(o.nodes)} node{'s' if len(o.nodes) > 1 else ''}: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(o.nodes.items())))
    for node_id, info in sorted(o.lost_nodes.items()):
        say(_lost_node_line(node_id, info))
    say(f"validation curves: {o.curves_png}")
    say(f"MLflow UI: {ui_command(scfg.tracking_uri)}")
    t = o.timings
    parts = [f"{k.removesuffix('_s')} {v:.1f}s" for k, v in t.items() if isinstance(v, float)]
    say("time: " + ", ".join(parts))
