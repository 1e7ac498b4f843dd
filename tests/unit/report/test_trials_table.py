"""The trials table: which value counts as a trial's best, what each HTML cell holds, which rows
are marked best, stopped or failed, the page around the table, and the report's two files."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import image as mimage

import mona_tune
from mona_tune.report import trials_table
from mona_tune.report.figures import plot_trials

RUN = "http://u:***@host:5000/#/experiments/7/runs/{}?workflowType=machine_learning"


def row(trial_id, metrics, history=None, config=None):
    """A trial's row as search.results.trial_rows makes it; history: (stage, value) per epoch,
    the global epochs counted from 1."""
    df = None
    if history is not None:
        df = pd.DataFrame({"stage": [s for s, _ in history],
                           "val_rel_l2": [v for _, v in history],
                           "global_epoch": list(range(1, len(history) + 1))})
    return {"trial_id": trial_id, "config": config or {"lam": 0.5}, "metrics": metrics,
            "error": None, "df": df, "path": None}


def test_the_best_value_is_stage_two_only_and_follows_the_mode():
    # stage 1 reached 0.05 (the warm-up's validation), stage 2 0.30 then 0.20 then 0.25
    hist = [(1, 0.05), (2, 0.30), (2, 0.20), (2, 0.25)]
    r = row("t1", {"val_rel_l2": 0.25, "test_rel_l2": 0.26, "stage2_epoch": 3,
                   "source_probe_error": 0.1}, hist)
    outcomes = {"t1": ("completed", "completed 3 stage-2 epochs", "run1")}
    (got,) = trials_table.trial_table([r], "val_rel_l2", "min", outcomes, "test_rel_l2")
    assert got == {"trial_id": "t1", "config": {"lam": 0.5}, "best": 0.20, "last": 0.25,
                   "test": 0.26, "probe": 0.1, "epochs": 3.0, "outcome": "completed",
                   "detail": "completed 3 stage-2 epochs", "run_id": "run1"}
    (got,) = trials_table.trial_table([r], "val_rel_l2", "max", outcomes, "test_rel_l2")
    assert got["best"] == 0.30


def test_a_trial_without_stage_two_takes_its_best_over_all_epochs():
    r = row("t1", {"stage2_epoch": 0}, [(1, 0.3), (1, 0.4)])
    (got,) = trials_table.trial_table([r], "val_rel_l2", "min", {}, None)
    assert got["best"] == 0.3 and got["last"] == 0.4  # no last metric: the history's last
    assert got["outcome"] == "unknown" and got["detail"] == "" and got["run_id"] is None
    assert got["test"] is None and got["epochs"] == 0.0


def test_a_history_without_stages_counts_every_epoch():
    df = pd.DataFrame({"val_rel_l2": [0.6, 0.35, 0.5]})
    r = {"trial_id": "t", "config": {"lam": 1}, "metrics": {"val_rel_l2": 0.5}, "df": df}
    (got,) = trials_table.trial_table([r], "val_rel_l2", "min", {}, None)
    assert got["best"] == 0.35 and got["last"] == 0.5


def test_the_last_value_is_the_historys_last_number():
    """No last metric reported: the last finite value of the whole history; values that are
    not numbers are passed over."""
    hist = [(1, 0.2), (2, 0.4), (2, 0.3), (2, math.nan), (2, math.inf)]
    r = row("t", {"test_rel_l2": math.nan, "source_probe_error": 0.2, "stage2_epoch": 2}, hist)
    (got,) = trials_table.trial_table([r], "val_rel_l2", "min", {"t": ("failed", "boom")},
                                      "test_rel_l2")
    assert got["best"] == 0.3 and got["last"] == 0.3 and got["test"] is None
    assert got["probe"] == 0.2 and got["epochs"] == 2.0
    assert (got["outcome"], got["detail"], got["run_id"]) == ("failed", "boom", None)


def test_a_history_without_a_number_leaves_best_and_last_to_the_metrics():
    r = row("t", {"val_rel_l2": 0.7}, [(2, math.nan), (2, math.inf)])
    (got,) = trials_table.trial_table([r], "val_rel_l2", "max", {}, None)
    assert got["best"] == 0.7 and got["last"] == 0.7
    r = row("t", {}, [(2, math.nan)])
    (got,) = trials_table.trial_table([r], "val_rel_l2", "max", {}, None)
    assert got["best"] is None and got["last"] is None


def test_a_history_without_the_metric_and_missing_fields():
    r = row("t", None, [(2, 0.1)])
    r["df"] = r["df"].rename(columns={"val_rel_l2": "val_nrmse"})
    r["config"] = None
    (got,) = trials_table.trial_table([r], "val_rel_l2", "min", {"t": ("completed",)},
                                      "test_rel_l2")
    assert got == {"trial_id": "t", "config": {}, "best": None, "last": None, "test": None,
                   "probe": None, "epochs": None, "outcome": "completed", "detail": "",
                   "run_id": None}


def test_a_history_that_is_no_data_frame_is_passed_over():
    r = {"trial_id": "t", "config": {}, "metrics": {"val_rel_l2": 0.4}, "df": [0.1]}
    (got,) = trials_table.trial_table([r], "val_rel_l2", "min", {}, None)
    assert got["best"] == 0.4 and got["last"] == 0.4


def test_a_diverged_trial_has_no_value_and_no_history_falls_back_to_the_last():
    diverged = row("d", {"val_rel_l2": math.inf, "diverged": True}, None)
    plain = row("p", {"val_rel_l2": 0.7}, None)
    d, p = trials_table.trial_table([diverged, plain], "val_rel_l2", "min",
                                    {"d": ("diverged", "nan loss", "r")}, None)
    assert d["best"] is None and d["last"] is None and d["outcome"] == "diverged"
    assert p["best"] == 0.7 and p["last"] == 0.7


def _trial(trial_id, config, best, last, outcome, detail, run_id, test=None, probe=None,
           epochs=None):
    return {"trial_id": trial_id, "config": config, "best": best, "last": last, "test": test,
            "probe": probe, "epochs": epochs, "outcome": outcome, "detail": detail,
            "run_id": run_id}


TABLE = [
    _trial("slow", {"lam": 0.1, "opt": "sgd"}, 0.5, 0.5, "stopped_early",
           "stopped by ASHA at stage-2 epoch 1 of 4", "r-slow", epochs=1.0),
    _trial("good", {"lam": 0.9, "opt": "adam"}, 0.2, 0.25, "completed",
           "completed 4 stage-2 epochs", "r-good", 0.26, 0.1, 4.0),
    _trial("none", {"lam": "a<b"}, None, None, "failed", "RuntimeError: <boom>", None),
    _trial("zero", {"lam": True, "opt": None}, 0.0, 0.123456789, "running", "", "r-zero"),
]


def _num(v, text):
    return f'<td class="n" data-v="{v}">{text}</td>'


def _rows(text):
    return [line for line in text.split("\n") if line.startswith("<tr class=")]


def test_each_cell_of_the_html_table(tmp_path):
    path = trials_table.write_trials_html(
        TABLE, tmp_path / "a" / "b" / "t.html", metric="val_rel_l2", mode="min",
        searched=["lam", "opt"], best_trial="good", title="s <1>: darcy",
        test_key="test_rel_l2", tracking_uri="http://u:secret@host:5000", experiment_id="7")
    assert path == tmp_path / "a" / "b" / "t.html"
    text = path.read_text(encoding="utf-8")
    link = '<td><a href="{}" target="_blank" rel="noopener">{}</a></td>'
    empty = _num("", "")
    # sorted by the best value (min first), no value last
    assert _rows(text) == [
        '<tr class="running"><td>zero</td><td>True</td><td></td>'  # a bool is no number
        + _num("0.0", "0") + _num("0.123456789", "0.1235") + empty * 3
        + '<td title="">running</td>' + link.format(RUN.format("r-zero"), "r-zero") + "</tr>",
        '<tr class="completed best"><td>good</td>' + _num("0.9", "0.9") + "<td>adam</td>"
        + _num("0.2", "0.2") + _num("0.25", "0.25") + _num("0.26", "0.26")
        + _num("0.1", "0.1") + _num("4.0", "4")
        + '<td title="completed 4 stage-2 epochs">completed</td>'
        + link.format(RUN.format("r-good"), "r-good") + "</tr>",
        '<tr class="stopped_early"><td>slow</td>' + _num("0.1", "0.1") + "<td>sgd</td>"
        + _num("0.5", "0.5") * 2 + empty * 2 + _num("1.0", "1")
        + '<td title="stopped by ASHA at stage-2 epoch 1 of 4">stopped_early</td>'
        + link.format(RUN.format("r-slow"), "r-slow") + "</tr>",
        '<tr class="failed"><td>none</td><td>a&lt;b</td><td></td>' + empty * 5
        + '<td title="RuntimeError: &lt;boom&gt;">failed</td><td></td></tr>',
    ]
    assert "secret" not in text
    lines = text.split("\n")
    assert lines[:3] == ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                         "<title>s &lt;1&gt;: darcy: trials</title>"]
    assert lines[4:7] == [
        "<h2>s &lt;1&gt;: darcy: 4 trials</h2>",
        "<p>Sorted by the best stage-2 <b>val_rel_l2</b> (min); click a column header to sort "
        "by it. <i>last</i> is the value Tune ranks trials by; the best trial is in bold. Run "
        "links open the MLflow UI (<code>mona-tune ui</code>).</p>",
        '<table id="trials"><thead><tr><th>trial</th><th>lam</th><th>opt</th>'
        "<th>best val_rel_l2</th><th>last val_rel_l2</th><th>test_rel_l2</th>"
        "<th>source_probe_error</th><th>stage-2 epochs</th><th>outcome</th>"
        "<th>MLflow run</th></tr></thead><tbody>"]
    assert lines[11] == "</tbody></table>"
    assert lines[12] == "<script>" and lines[13].startswith("document.querySelectorAll('th')")
    assert text.endswith("}));\n</script>\n</body></html>\n")


def test_the_page_style_marks_best_stopped_and_failed_rows(tmp_path):
    path = trials_table.write_trials_html(TABLE, tmp_path / "t.html", metric="m", mode="min",
                                          searched=[], best_trial=None, title="s")
    line = path.read_text(encoding="utf-8").split("\n")[3]
    assert line.startswith("<style>") and line.endswith("</style></head><body>")
    rules = dict(re.findall(r"([^{}]+)\{([^{}]*)\}", line.removeprefix("<style>")))
    assert rules == {
        "body": "font:14px sans-serif;margin:1em", "table": "border-collapse:collapse",
        "th,td": "border:1px solid #ccc;padding:3px 8px",
        "th": "background:#eee;cursor:pointer;user-select:none",
        "th[data-dir=asc]::after": "content:' \\25B2'",  # the sorted column's arrow
        "th[data-dir=desc]::after": "content:' \\25BC'",
        "td.n": "text-align:right;font-variant-numeric:tabular-nums",
        "tr.best": "font-weight:bold;background:#eef7ee",
        "tr.stopped_early td": "color:#666", "tr.failed td,tr.diverged td": "color:#b00"}


def test_the_page_is_utf_8_whatever_the_locale(tmp_path):
    """Written in a process whose locale's encoding is ASCII (no UTF-8 mode)."""
    code = ("import sys; from pathlib import Path; from mona_tune.report import trials_table; "
            "trials_table.write_trials_html([], Path(sys.argv[1]), metric='m', mode='min', "
            "searched=[], best_trial=None, title='\\u03bd\\u00d72')")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0",
               PYTHONPATH=os.pathsep.join([str(Path(mona_tune.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.html")], env=env,
                   check=True, timeout=120)
    assert "<title>ν×2: trials</title>".encode() in (tmp_path / "t.html").read_bytes()
    here = trials_table.write_trials_html([], tmp_path / "here.html", metric="m", mode="min",
                                          searched=[], best_trial=None, title="ν×2")
    assert here.read_bytes() == (tmp_path / "t.html").read_bytes()


def test_the_order_holds_for_the_largest_values(tmp_path):
    big = _trial("big", {}, 1.7e308, None, "completed", "", None)
    less = _trial("less", {}, 1e308, None, "completed", "", None)
    # each given in the other order than the sorted one
    for mode, table, order in (("min", [big, less], ["less", "big"]),
                               ("max", [less, big], ["big", "less"])):
        path = trials_table.write_trials_html(table, tmp_path / f"{mode}.html", metric="m",
                                              mode=mode, searched=[], best_trial=None,
                                              title="s")
        text = path.read_text(encoding="utf-8")
        assert [re.search(r"<td>(\w+)</td>", r).group(1) for r in _rows(text)] == order


def test_the_html_table_in_max_mode_without_links(tmp_path):
    (tmp_path / "max").mkdir()
    path = trials_table.write_trials_html(
        TABLE, tmp_path / "max" / "t.html", metric="val_rel_l2", mode="max", searched=["lam"],
        best_trial="slow", title="s", tracking_uri="http://h:5000", experiment_id=None)
    text = path.read_text(encoding="utf-8")
    assert [re.match(r'<tr class="([^"]*)"><td>(\w+)</td>', r).groups() for r in _rows(text)] \
        == [("stopped_early best", "slow"), ("completed", "good"), ("running", "zero"),
            ("failed", "none")]
    assert [r.rsplit("<td", 1)[1] for r in _rows(text)] == [
        ">r-slow</td></tr>", ">r-good</td></tr>", ">r-zero</td></tr>", "></td></tr>"]
    assert "<th>lam</th><th>best val_rel_l2</th><th>last val_rel_l2</th>" \
        "<th>source_probe_error</th>" in text  # no test column
    assert "(max); click" in text


def _has_color(png, rgb):
    pixels = (mimage.imread(png)[..., :3] * 255).round().astype(int)
    return bool((np.abs(pixels - np.array(rgb)).max(axis=-1) <= 2).any())


def test_the_trials_report_writes_the_table_and_the_figure(tmp_path):
    # best by the mode: a 0.1 before b 0.2 (the largest: b 0.25 before a 0.3)
    rows = [row("a", {"val_rel_l2": 0.3, "test_rel_l2": 0.31}, [(2, 0.1), (2, 0.3)],
                {"lam": 0.1, "lr": 1e-4}),
            row("b", {"val_rel_l2": 0.25}, [(2, 0.2), (2, 0.25)], {"lam": 0.9, "lr": 1e-2})]
    out = {"a": ("completed", "", "ra"), "b": ("completed", "done", "rb")}
    files = trials_table.write_trials_report(
        rows, tmp_path, metric="val_rel_l2", mode="min", searched=["lam", "lr"], outcomes=out,
        best_trial="b", title="s", test_key="test_rel_l2", tracking_uri="http://h:5000",
        experiment_id="3")
    assert files == [tmp_path / "trials.html", tmp_path / "trials.png"]
    text = files[0].read_text(encoding="utf-8")
    a, b = _rows(text)
    assert a.startswith('<tr class="completed"><td>a</td>' + _num("0.1", "0.1")
                        + _num("0.0001", "0.0001") + _num("0.1", "0.1") + _num("0.3", "0.3")
                        + _num("0.31", "0.31"))
    assert b.startswith('<tr class="completed best"><td>b</td>')
    assert '<a href="http://h:5000/#/experiments/3/runs/rb?workflowType=machine_learning"' \
        in text and "<th>test_rel_l2</th>" in text and "<th>lr</th>" in text
    assert "<title>s: trials</title>" in text and "<b>val_rel_l2</b> (min)" in text
    # two panels of 4.2 x 3.4 inches at 110 dpi; the best trial's golden star
    assert mimage.imread(files[1]).shape[:2] == (374, 924)
    assert _has_color(files[1], (218, 165, 32))
    # the figure of the same table drawn directly is the same picture
    table = trials_table.trial_table(rows, "val_rel_l2", "min", out, "test_rel_l2")
    again = plot_trials(table, tmp_path / "again.png", metric="val_rel_l2",
                        searched=["lam", "lr"], best_trial="b", title="s")
    assert files[1].read_bytes() == again.read_bytes()


def test_the_table_is_written_when_the_figure_cannot_be(tmp_path, caplog):
    (tmp_path / "trials.png").mkdir()  # no file can be saved there
    rows = [row("a", {"val_rel_l2": 0.3}, [(2, 0.3)])]
    with caplog.at_level(logging.WARNING, logger="mona_tune.report.trials_table"):
        files = trials_table.write_trials_report(
            rows, tmp_path, metric="val_rel_l2", mode="min", searched=["lam"],
            outcomes={}, best_trial="a", title="s")
    assert files == [tmp_path / "trials.html"]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.name == "mona_tune.report.trials_table"
    assert record.getMessage().startswith("could not draw trials.png: [Errno 21] Is a directory")
