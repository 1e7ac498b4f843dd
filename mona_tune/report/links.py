"""Where to look at a search in the MLflow UI: the UI's address, a run's URL, the trials view.

The trials view is a *shared view*: an experiment tag (:data:`SHARED_VIEW_TAG` + key) that the UI
reads to preselect the filter and the columns. :func:`trials_view_state` builds it; the driver
stores it (``tracking.mlflow_runs.store_shared_view``) and :func:`trials_view_url` links to it.
"""

from __future__ import annotations

import json
import re
import shlex
from urllib.parse import quote

from mona_tune.tracking import mlflow_runs as mr

UI_URL = "http://127.0.0.1:5000"  # where `mona-tune ui` serves a local store by default
# MLflow 3's UI opens experiments in its GenAI mode (traces) unless the URL asks for the
# model-training one; a shared view (an experiment tag the UI reads) preselects the columns
ML_WORKFLOW = "workflowType=machine_learning"
SHARED_VIEW_TAG = "mlflow.sharedViewState."


def ui_base_url(tracking_uri: str) -> str:
    """The MLflow UI of a store: a tracking server's own address, else ``mona-tune ui``'s."""
    if tracking_uri.startswith(("http://", "https://")):
        return mr.redact(tracking_uri).rstrip("/")
    return UI_URL


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return (f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"
            f"?{ML_WORKFLOW}")


def ui_command(tracking_uri: str) -> str:
    if mr.is_sqlite(tracking_uri):
        return f"mona-tune ui --tracking-uri {shlex.quote(tracking_uri)}"
    return f"open {mr.redact(tracking_uri)} (the tracking server's own UI)"


def trials_view_state(search_name: str, searched: list[str], metric: str,
                      test_key: str | None = None) -> tuple[str, str]:
    """The key and the JSON state of the view of one search's runs: this search's parent with
    its trials nested under it (model-training mode), the searched hyperparameters, the metrics
    and the outcome as columns."""
    key = "mona-" + re.sub(r"[^A-Za-z0-9_.-]", "_", search_name)[:200]
    columns = [f"params.`{k}`" for k in searched]
    columns += [f"metrics.`{m}`" for m in (metric, test_key, "source_probe_error",
                                           f"best_{metric}") if m]
    columns += [f"tags.`{mr.TAG_OUTCOME}`"]
    state = {
        "searchFilter": (f"tags.`{mr.TAG_SEARCH}` = '{search_name}'"
                         if "'" not in search_name and "\\" not in search_name else ""),
        "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
    }
    return key, json.dumps(state)


def trials_view_url(tracking_uri: str, experiment_id: str, key: str | None) -> str:
    """The URL of the experiment's runs, with the stored view ``key`` (None: none stored, the
    URL still opens the runs)."""
    url = f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW}"
    return f"{url}&viewStateShareKey={quote(key)}" if key else url
