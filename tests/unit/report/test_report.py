"""The report package without a search: which value counts as a trial's best, which trials are
marked stopped or failed, the order of the trials table, the MLflow UI's links and the printed
summary, each against values written out here."""

from __future__ import annotations

import json
import math
from urllib.parse import quote

import pandas as pd
import pytest

from mona_tune.report import links, summary, trials_table, values
from mona_tune.report.figures import plot_curves, plot_trials
from mona_tune.search.results import SearchOutcome


def _row(trial_id, metrics, history=None, config=None):
    """A trial's row as search.results.trial_rows makes it; history: (stage, value) per epoch."""
    df = None
    if history is not None:
        df = pd.DataFrame({"stage": [s for s, _ in history],
                           "val_rel_l2": [v for _, v in history],
                           "global_epoch": list(range(1, len(history) + 1))})
    return {"trial_id": trial_id, "config": config or {"lam": 0.5}, "metrics": metrics,
            "error": None, "df": df, "path": None}


def test_values_fmt_and_num():
    assert values.fmt(0.123456) == "0.1235" and values.fmt(3) == "3" and values.fmt("x") == "x"
    assert values.num(2) == 2.0 and values.num(0.5) == 0.5
    assert values.num(True) is None and values.num("0.5") is None and values.num(None) is None
    assert values.num(math.inf) is None and values.num(-math.inf) is None
    assert values.num(math.nan) is None


def test_the_best_value_is_stage_two_only_and_follows_the_mode():
    # stage 1 reached 0.05 (the warm-up's validation), stage 2 0.30 then 0.20 then 0.25
    hist = [(1, 0.05), (2, 0.30), (2, 0.20), (2, 0.25)]
    row = _row("t1", {"val_rel_l2": 0.25, "test_rel_l2": 0.26, "stage2_epoch": 3,
                      "source_probe_error": 0.1}, hist)
    outcomes = {"t1": ("completed", "completed 3 stage-2 epochs", "run1")}
    (got,) = trials_table.trial_table([row], "val_rel_l2", "min", outcomes, "test_rel_l2")
    assert got["best"] == 0.20 and got["last"] == 0.25 and got["test"] == 0.26
    assert got["probe"] == 0.1 and got["epochs"] == 3.0
    assert (got["outcome"], got["detail"], got["run_id"]) == outcomes["t1"]
    (got,) = trials_table.trial_table([row], "val_rel_l2", "max", outcomes, "test_rel_l2")
    assert got["best"] == 0.30


def test_a_trial_without_stage_two_takes_its_best_over_all_epochs():
    row = _row("t1", {"stage2_epoch": 0}, [(1, 0.4), (1, 0.3)])
    (got,) = trials_table.trial_table([row], "val_rel_l2", "min", {}, None)
    assert got["best"] == 0.3 and got["last"] == 0.3  # no last metric: the history's last
    assert got["outcome"] == "unknown" and got["detail"] == "" and got["run_id"] is None
    assert got["test"] is None


def test_a_diverged_trial_has_no_value_and_no_history_falls_back_to_the_last():
    diverged = _row("d", {"val_rel_l2": math.inf, "diverged": True}, None)
    plain = _row("p", {"val_rel_l2": 0.7}, None)
    d, p = trials_table.trial_table([diverged, plain], "val_rel_l2", "min",
                                    {"d": ("diverged", "nan loss", "r")}, None)
    assert d["best"] is None and d["last"] is None and d["outcome"] == "diverged"
    assert p["best"] == 0.7 and p["last"] == 0.7


def test_the_html_table_sorts_by_best_marks_the_best_and_links_runs(tmp_path):
    rows = [_row("slow", {"val_rel_l2": 0.5}, config={"lam": 0.1}),
            _row("good", {"val_rel_l2": 0.2}, config={"lam": 0.9}),
            _row("none", {}, config={"lam": "a<b"})]
    outcomes = {"slow": ("stopped_early", "stopped by ASHA at stage-2 epoch 1 of 4", "r-slow"),
                "good": ("completed", "completed 4 stage-2 epochs", "r-good"),
                "none": ("failed", "RuntimeError: boom", None)}
    table = trials_table.trial_table(rows, "val_rel_l2", "min", outcomes, None)
    path = trials_table.write_trials_html(
        table, tmp_path / "t.html", metric="val_rel_l2", mode="min", searched=["lam"],
        best_trial="good", title="s: darcy", tracking_uri="http://u:secret@host:5000",
        experiment_id="7")
    text = path.read_text()
    order = [text.index(f"<td>{t}</td>") for t in ("good", "slow", "none")]
    assert order == sorted(order), "not sorted by the best value, no value last"
    assert "secret" not in text and "a&lt;b" in text and "a<b" not in text
    assert "http://u:***@host:5000/#/experiments/7/runs/r-good" in text
    assert "stopped by ASHA at stage-2 epoch 1 of 4" in text and "RuntimeError: boom" in text
    assert '<tr class="completed best"><td>good</td>' in text
    assert '<tr class="stopped_early"><td>slow</td>' in text
    assert '<tr class="failed"><td>none</td>' in text
    (tmp_path / "max").mkdir()
    path = trials_table.write_trials_html(
        table, tmp_path / "max" / "t.html", metric="val_rel_l2", mode="max", searched=["lam"],
        best_trial="slow", title="s", tracking_uri=None, experiment_id=None)
    text = path.read_text()
    assert text.index("<td>slow</td>") < text.index("<td>good</td>") < text.index("<td>none</td>")
    assert '<tr class="stopped_early best"><td>slow</td>' in text


def test_the_trials_report_writes_the_table_and_the_figure(tmp_path):
    rows = [_row("a", {"val_rel_l2": 0.3}, [(2, 0.3)], {"lam": 0.1, "lr": 1e-4}),
            _row("b", {"val_rel_l2": 0.2}, [(2, 0.2)], {"lam": 0.9, "lr": 1e-2})]
    out = {"a": ("completed", "", "ra"), "b": ("completed", "", "rb")}
    files = trials_table.write_trials_report(rows, tmp_path, metric="val_rel_l2", mode="min",
                                             searched=["lam", "lr"], outcomes=out,
                                             best_trial="b", title="s")
    assert [f.name for f in files] == [trials_table.TRIALS_HTML, trials_table.TRIALS_PNG]
    assert files[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figures_are_pngs_even_for_odd_trials(tmp_path):
    rows = [_row("a", {"val_rel_l2": 0.3}, [(1, 0.5), (2, 0.3)], {"opt": "adam"}),
            _row("b", {}, None, {"opt": "sgd"})]
    out = {"a": ("completed", "", "ra"), "b": ("failed", "boom", None)}
    png = plot_curves(rows, "val_rel_l2", out, "a", tmp_path / "c.png", title="t")
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = trials_table.trial_table(rows, "val_rel_l2", "min", out, None)
    png = plot_trials(table, tmp_path / "p.png", metric="val_rel_l2", searched=["opt"],
                      best_trial="a", title="t")
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("uri, base", [
    ("http://mona:pw@10.0.0.5:5000/", "http://mona:***@10.0.0.5:5000"),
    ("https://mlflow.example.org", "https://mlflow.example.org"),
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
    key, state = links.trials_view_state("my search/1", ["lam", "lr"], "val_rel_l2",
                                         "test_rel_l2")
    assert key == "mona-my_search_1"
    assert json.loads(state) == {  # every field the MLflow UI reads from a shared view
        "searchFilter": "tags.`mona.search_name` = 'my search/1'",
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


def test_the_summary_names_the_best_trial_failures_and_lost_runs():
    from mona_tune.config import SearchConfig

    scfg = SearchConfig(name="s", storage="/x", space_file="s.yaml",
                        tracking_uri="sqlite:////x/m.db")
    o = SearchOutcome(name="s", experiment_path="/x/s", parent_run_id="parent",
                      metric="val_rel_l2", mode="min", best_trial_id="t2", best_run_id="run2",
                      best_config={"lam": 0.25}, best_metrics={"val_rel_l2": 0.0812345,
                                                               "test_rel_l2": 0.09},
                      outcomes={"t1": "failed", "t2": "completed"},
                      details={"t1": "RuntimeError: boom"}, lost_runs={"t9": "run9"},
                      model_version="3", curves_png="/x/s/curves.png",
                      timings={"total_s": 12.34}, nodes={"10.0.0.1 (abcd1234)": 2})
    lines: list[str] = []
    summary.print_summary(o, scfg, "rel_l2", {"completed": 1, "failed": 1}, lines.append)
    text = "\n".join(lines)
    assert "== search s done: 1 completed, 1 failed" in text
    assert "  failed t1: RuntimeError: boom" in text
    assert "lost trial t9" in text and "run9 was deleted" in text
    assert "best trial t2: val_rel_l2 = 0.08123, test_rel_l2 = 0.09" in text
    assert "hyperparameters: lam=0.25" in text
    assert "models:/mona-darcy-embedder@best (version 3)" in text
    assert "trials ran on 1 node: 10.0.0.1 (abcd1234) (2)" in text
    assert lines[-1] == "time: total 12.3s"
    o.best_trial_id = None
    lines.clear()
    summary.print_summary(o, scfg, "rel_l2", {}, lines.append)
    assert any(line.startswith("no trial reported a validation metric") for line in lines)
