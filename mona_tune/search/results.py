"""What a search produced, read back from Tune and the tracking store: the outcome of every
trial, the runs reconciled with the trials (tags, statuses, lost runs), and where trials ran."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mona_tune.search.trial import TAG_NODE_IDS
from mona_tune.tracking import mlflow_runs as mr

logger = logging.getLogger(__name__)


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
    # at the end (lost_node_trials)
    lost_nodes: dict = field(default_factory=dict)


def trial_rows(results) -> list[dict]:
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


def trial_outcome(row: dict, test_key: str, max_t: int, by: str = "ASHA") -> tuple[str, str]:
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
        outcome, detail = trial_outcome(row, test_key, max_t, stopped_by)
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


def trials_per_node(tracking_uri: str, experiment_id: str, parent_run_id: str) -> dict:
    out: dict[str, int] = {}
    for run in mr.child_runs(tracking_uri, experiment_id, parent_run_id):
        ip, node_id = run.data.tags.get(mr.TAG_NODE_IP), run.data.tags.get(mr.TAG_NODE_ID)
        if node_id:
            key = f"{ip} ({node_id[:8]})"
            out[key] = out.get(key, 0) + 1
    return out


def lost_node_trials(tracking_uri: str, experiment_id: str, parent_run_id: str,
                     lost: list) -> dict:
    """node id -> {"ip", "trials": trial id -> {"outcome", "now_on", "restored_from"}} for each
    lost node (``cluster.nodes.Node``): the trials an attempt of which ran there (``mona.node_ids``),
    where their latest attempt ran and the global epoch it continued from (None: from scratch)."""
    out = {n.node_id: {"ip": n.ip, "trials": {}} for n in lost}
    for run in mr.child_runs(tracking_uri, experiment_id, parent_run_id):
        tags = run.data.tags
        ran_on = [x for x in tags.get(TAG_NODE_IDS, "").split(",") if x] \
            or [tags.get(mr.TAG_NODE_ID)]
        latest = tags.get(mr.TAG_NODE_ID)
        for node_id in set(ran_on) & out.keys():
            out[node_id]["trials"][tags.get(mr.TAG_TRIAL_ID)] = {
                "outcome": tags.get(mr.TAG_OUTCOME),
                "now_on": None if latest == node_id or not latest
                else f"{tags.get(mr.TAG_NODE_IP)} ({latest[:8]})",
                "restored_from": tags.get("mona.restored_from_global_epoch"),
            }
    return out
