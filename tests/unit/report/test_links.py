"""The MLflow UI's links: a store's UI, a run's URL, the command that opens the UI, and the
trials view (the shared view's whole state and its URL)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from mona_tune.report import links


@pytest.mark.parametrize("uri, base", [
    ("http://mona:pw@10.0.0.5:5000/", "http://mona:***@10.0.0.5:5000"),
    ("https://mlflow.example.org", "https://mlflow.example.org"),
    ("https://mlflow.example.org/MLX/", "https://mlflow.example.org/MLX"),  # only the slash
    ("sqlite:////tmp/x/mlflow.db", links.UI_URL),
    ("postgresql://u:p@db/mlflow", links.UI_URL),
])
def test_the_ui_of_a_store(uri, base):
    assert links.ui_base_url(uri) == base
    assert links.run_url(uri, "3", "abc") == \
        f"{base}/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_ui_command_names_mona_tune_ui_for_sqlite_and_hides_passwords():
    assert links.ui_command("sqlite:////tmp/a b/mlflow.db") == \
        "mona-tune ui --tracking-uri 'sqlite:////tmp/a b/mlflow.db'"
    text = links.ui_command("http://u:pw@host:5000")
    assert "pw" not in text and "host:5000" in text


def test_the_trials_view_state_and_url():
    key, state = links.trials_view_state("My search/1", ["lam", "lr"], "val_rel_l2",
                                         "test_rel_l2")
    assert key == "mona-My_search_1"
    assert json.loads(state) == {  # every field the MLflow UI reads from a shared view
        "searchFilter": "tags.`mona.search_name` = 'My search/1'",
        "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": [
            "params.`lam`", "params.`lr`", "metrics.`val_rel_l2`", "metrics.`test_rel_l2`",
            "metrics.`source_probe_error`", "metrics.`best_val_rel_l2`", "tags.`mona.outcome`"]}
    assert links.trials_view_state("x" * 300, [], "m")[0] == "mona-" + "x" * 200
    _, no_test = links.trials_view_state("s", ["lam"], "val_nrmse")
    assert json.loads(no_test)["selectedColumns"] == [
        "params.`lam`", "metrics.`val_nrmse`", "metrics.`source_probe_error`",
        "metrics.`best_val_nrmse`", "tags.`mona.outcome`"]
    _, backslash = links.trials_view_state("a\\b", [], "m")
    assert json.loads(backslash)["searchFilter"] == ""
    _, quoted = links.trials_view_state("it's", [], "m")
    assert json.loads(quoted)["searchFilter"] == ""  # a quote would break MLflow's filter
    base = "http://h:5000/#/experiments/4/runs?workflowType=machine_learning"
    assert links.trials_view_url("http://h:5000", "4", None) == base
    assert links.trials_view_url("http://h:5000", "4", key) == \
        f"{base}&viewStateShareKey={quote(key)}"
