"""What each figure plots, read back from matplotlib's Figure and Axes: the validation curves
(stage 1 dashed at x <= 0, the markers of stopped and failed trials, the best trial drawn thick)
and the searched values against the metric (one panel per hyperparameter)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib import colors as mcolors
from matplotlib.markers import MarkerStyle
from matplotlib.text import Text

from mona_tune.report.figures import curves_figure, plot_curves, plot_trials, trials_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES_TITLE = "s: darcy   (dashed: stage 1; × early-stopped; red ×: failed or diverged)"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _df(**columns):
    return pd.DataFrame(columns)


def _line(line):
    """What a line shows: its points, style and look."""
    def r(v):
        return None if v is None else round(float(v), 9)

    return {"x": [r(v) for v in np.asarray(line.get_xdata(), float).ravel()],
            "y": [r(v) for v in np.asarray(line.get_ydata(), float).ravel()],
            "ls": line.get_linestyle(), "marker": line.get_marker(),
            "ms": r(line.get_markersize()), "lw": r(line.get_linewidth()),
            "mew": r(line.get_markeredgewidth()), "alpha": r(line.get_alpha()),
            "z": line.get_zorder(), "label": line.get_label()}


def _png_size(path):
    """Width and height in pixels, from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _curve_rows():
    nan = math.nan
    return [
        {"trial_id": "no-df", "df": None},
        {"trial_id": "no-frame", "df": [0.1, 0.2]},  # not a data frame: no columns
        {"trial_id": "no-metric", "df": _df(stage=[2], global_epoch=[1], loss=[0.1])},
        {"trial_id": "all-nan", "df": _df(stage=[2], global_epoch=[1], val_rel_l2=[nan])},
        {"trial_id": "empty", "df": _df(stage=[], global_epoch=[], val_rel_l2=[])},
        # stage 1 at global epochs 1-2, stage 2 at 3-5: x = -1, 0 | 1, 2, 3
        {"trial_id": "a", "df": _df(stage=[1, 1, 2, 2, 2], global_epoch=[1, 2, 3, 4, 5],
                                    val_rel_l2=[0.9, 0.8, 0.5, 0.4, 0.45])},
        # epoch 3 has no value: x = 0 | 1, 3
        # (a gap in another column leaves the epoch in)
        {"trial_id": "b", "df": _df(stage=[1, 2, 2, 2], global_epoch=[1, 2, 3, 4],
                                    val_rel_l2=[0.7, 0.6, nan, 0.55],
                                    train_loss=[1.0, nan, 0.5, 0.4])},
        # no stage-2 epoch: x = -2, -1, 0
        {"trial_id": "c", "df": _df(stage=[1, 1, 1], global_epoch=[1, 2, 3],
                                    val_rel_l2=[0.95, 0.9, 0.92])},
        # no global epoch: the stage-2 epoch is x
        {"trial_id": "d", "df": _df(stage=[2, 2, 2], stage2_epoch=[1, 2, 3],
                                    val_rel_l2=[0.3, 0.2, 0.35])},
        {"trial_id": "e", "df": _df(stage2_epoch=[1], val_rel_l2=[0.25])},
    ]


CURVE_OUTCOMES = {"a": ("completed", "", "ra"), "b": ("stopped_early", "ASHA", "rb"),
                  "c": ("failed", "boom", "rc"), "d": ("diverged", "nan loss", "rd")}


def test_the_curves_plot_each_trials_epochs_with_stage_one_dashed():
    fig = curves_figure(_curve_rows(), "val_rel_l2", CURVE_OUTCOMES, "a", "s: darcy")
    (ax,) = fig.axes
    thick = dict(ms=2.5, lw=2.6, mew=1.0, alpha=1.0, z=3)
    thin = dict(ms=2.5, lw=1.1, mew=1.0, alpha=0.75, z=2)
    thick_s1 = dict(ls="--", marker="o", ms=2.0, lw=2.08, mew=1.0, alpha=0.8, z=3)
    thin_s1 = dict(ls="--", marker="o", ms=2.0, lw=0.88, mew=1.0, alpha=0.6, z=2)
    cross = dict(ls="None", marker="x", ms=9, lw=1.5, mew=2, alpha=None, z=4)
    red_cross = dict(cross, ms=10, mew=2.5)
    s2 = dict(ls="-", marker="o")
    expected = [
        dict(x=[1, 2, 3], y=[0.5, 0.4, 0.45], label="a (best)", **s2, **thick),
        dict(x=[-1, 0, 1], y=[0.9, 0.8, 0.5], **thick_s1),
        dict(x=[1, 3], y=[0.6, 0.55], label="b", **s2, **thin),
        dict(x=[0, 1], y=[0.7, 0.6], **thin_s1),
        dict(x=[3], y=[0.55], **cross),
        dict(x=[], y=[], label="c", **s2, **thin),
        dict(x=[-2, -1, 0], y=[0.95, 0.9, 0.92], **thin_s1),
        dict(x=[0], y=[0.92], **red_cross),
        dict(x=[1, 2, 3], y=[0.3, 0.2, 0.35], label="d", **s2, **thin),
        dict(x=[3], y=[0.35], **red_cross),
        dict(x=[1], y=[0.25], label="e", **s2, **thin),  # no outcome: no marker
        dict(x=[0.5, 0.5], y=[0, 1], ls="--", marker="None", ms=6.0, lw=0.8, mew=1.0,
             alpha=None, z=2),  # the line between the stages
    ]
    got = [_line(line) for line in ax.lines]
    for g, e in zip(got, expected, strict=True):
        assert {k: g[k] for k in e} == e
    for i in (1, 3, 4, 6, 7, 9, 11):  # the unlabelled parts stay out of the legend
        assert got[i]["label"].startswith("_")
    colors = [mcolors.to_hex(line.get_color()) for line in ax.lines]
    assert colors[1] == colors[0] and colors[3] == colors[4] == colors[2]
    assert colors[6] == colors[5] != colors[7] == colors[9] == "#ff0000"
    assert len({colors[0], colors[2], colors[5], colors[8], colors[10]}) == 5
    assert colors[11] == mcolors.to_hex("0.6")
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "stage-2 epoch (stage-1 epochs at ≤ 0)"
    assert ax.get_ylabel() == "val_rel_l2"
    assert ax.get_title() == CURVES_TITLE and ax.title.get_fontsize() == 9
    grid = ax.xaxis.get_gridlines()[0]
    assert grid.get_visible() and grid.get_alpha() == 0.3
    assert tuple(fig.get_size_inches()) == (8, 5) and fig.dpi == 110


def test_the_curves_legend_names_each_trial_in_two_columns():
    fig = curves_figure(_curve_rows(), "val_rel_l2", CURVE_OUTCOMES, "a", "s: darcy")
    legend = fig.axes[0].get_legend()
    texts = legend.get_texts()
    assert [t.get_text() for t in texts] == ["a (best)", "b", "c", "d", "e"]
    assert {t.get_fontsize() for t in texts} == {6}
    fig.canvas.draw()  # five entries in two columns: a, b, c | d, e
    lefts = [round(t.get_window_extent().x0) for t in texts]
    assert lefts[0] == lefts[1] == lefts[2] < lefts[3] == lefts[4]


@pytest.mark.parametrize("trials, has_legend", [(0, False), (16, True), (17, False)])
def test_the_curves_legend_is_left_out_beyond_sixteen_trials(trials, has_legend):
    rows = [{"trial_id": f"t{i}", "df": _df(stage2_epoch=[1], val_rel_l2=[0.5])}
            for i in range(trials)]
    fig = curves_figure(rows, "val_rel_l2", {}, None, "s")
    assert (fig.axes[0].get_legend() is not None) == has_legend


@pytest.mark.parametrize("values, scale", [
    ([[0.0, 0.5]], "linear"),  # a zero: no log axis
    ([[-1.0, 0.5]], "linear"),
    ([[0.0, 0.5], [0.2, 0.1]], "log"),  # one trial wholly positive is enough
    ([[0.2, 0.1], [0.0, 0.5]], "log"),
])
def test_the_curves_metric_axis_is_logarithmic_where_a_trial_is_positive(values, scale):
    rows = [{"trial_id": f"t{i}", "df": _df(stage2_epoch=[1, 2], val_rel_l2=v)}
            for i, v in enumerate(values)]
    fig = curves_figure(rows, "val_rel_l2", {}, None, "s")
    assert fig.axes[0].get_yscale() == scale


def _saved(fig, path):
    fig.savefig(path)
    plt.close(fig)
    return path.read_bytes()


def test_plot_curves_saves_the_figure_as_png_and_closes_it(tmp_path):
    before = plt.get_fignums()
    path = tmp_path / "new" / "dir" / "c.png"
    assert plot_curves(_curve_rows(), "val_rel_l2", CURVE_OUTCOMES, "a", path, "t") == path
    assert _png_size(path) == (880, 550)  # 8 x 5 inches at 110 dpi
    # the picture of the figure checked above, with these arguments
    assert path.read_bytes() == _saved(curves_figure(_curve_rows(), "val_rel_l2",
                                                     CURVE_OUTCOMES, "a", "t"), tmp_path / "f.png")
    again = tmp_path / "new" / "dir" / "c2.png"  # the folder exists now
    assert plot_curves([], "val_rel_l2", {}, None, again, "t") == again
    assert _png_size(again) == (880, 550)
    assert plt.get_fignums() == before


def _marker(collection):
    """Which of the figure's markers a scatter draws."""
    path = collection.get_paths()[0]
    for name in ("o", "x", "*", "."):
        style = MarkerStyle(name)
        ref = style.get_path().transformed(style.get_transform())
        if ref.vertices.shape == path.vertices.shape and np.allclose(ref.vertices,
                                                                       path.vertices):
            return name
    return None


def _points(ax):
    """Per scatter: its point, size, marker, colours and legend label (None: not listed)."""
    out = []
    for c in ax.collections:
        face = [mcolors.to_hex(f) for f in c.get_facecolor()]
        edge = [mcolors.to_hex(f) for f in c.get_edgecolor()]
        label = c.get_label()
        out.append({"xy": [tuple(p) for p in c.get_offsets().tolist()],
                    "s": list(c.get_sizes()), "marker": _marker(c),
                    "face": face, "edge": edge, "lw": list(c.get_linewidths()),
                    "label": None if label.startswith("_") else label})
    return out


BLUE, GREY = mcolors.to_hex("tab:blue"), mcolors.to_hex("0.45")
RED, ORANGE, GOLD = "#ff0000", mcolors.to_hex("darkorange"), mcolors.to_hex("goldenrod")


def _dot(xy, label, color=BLUE, marker="o", lw=1.0):
    return {"xy": [xy], "s": [36], "marker": marker, "face": [color], "edge": [color],
            "lw": [lw], "label": label}


def _cross(xy, label, color):
    return _dot(xy, label, color, "x", 1.5)


def _star(xy, label):
    return {"xy": [xy], "s": [220], "marker": "*", "face": [], "edge": [GOLD], "lw": [1.5],
            "label": label}


def _table():
    def t(trial_id, outcome, last, **config):
        return {"trial_id": trial_id, "outcome": outcome, "last": last, "config": config}

    return [t("t0", "completed", 0.02, scale=0.5, opt="adam", layers=2),
            t("t1", "stopped_early", 0.5, scale=1.0, opt="sgd", layers=4),
            t("t2", "failed", None, scale=10.0, opt=None),
            t("t3", "diverged", None, scale=2.0, opt="adam", layers=3),
            t("t4", "running", 0.9, scale=4.0, opt="sgd", layers=8),
            t("t5", "completed", 0.3, scale=1.0, opt="sgd", layers=4)]


def test_the_trials_figure_has_a_panel_per_searched_value():
    fig = trials_figure(_table(), metric="val_rel_l2", searched=["scale", "opt", "layers", "none"],
                        best_trial="t0", title="s: darcy")
    assert [ax.get_visible() for ax in fig.axes] == [True] * 4 + [False] * 2  # 2 rows of 3
    assert tuple(fig.get_size_inches()) == pytest.approx((4.2 * 3, 3.4 * 2))
    assert fig.dpi == 110
    scale, opt, layers, none = fig.axes[:4]
    assert [ax.get_xlabel() for ax in fig.axes[:4]] == ["scale", "opt", "layers", "none"]
    assert {ax.get_ylabel() for ax in fig.axes[:4]} == {"last val_rel_l2"}
    # the metric spans 0.02 to 0.9 (x45): log; trials without a metric at 0.9 x 1.5
    assert {ax.get_yscale() for ax in fig.axes[:4]} == {"log"}
    assert [ax.get_xscale() for ax in fig.axes[:4]] == ["log", "linear", "linear", "linear"]
    for ax in fig.axes[:4]:
        grid = ax.yaxis.get_gridlines()[0]
        assert grid.get_visible() and grid.get_alpha() == 0.3
    top = 0.9 * 1.5
    assert _points(scale) == [
        _dot((0.5, 0.02), "completed"), _star((0.5, 0.02), "best"),
        _cross((1.0, 0.5), "stopped early", GREY), _cross((10.0, top), "failed", RED),
        _cross((2.0, top), "diverged", ORANGE), _dot((4.0, 0.9), "other", "#000000", "."),
        _dot((1.0, 0.3), None)]
    # categories in sorted order at 0, 1, 2; None is one of them
    assert [t.get_text() for t in opt.get_xticklabels()] == ["None", "adam", "sgd"]
    assert list(opt.get_xticks()) == [0, 1, 2]
    assert {t.get_fontsize() for t in opt.get_xticklabels()} == {7}
    assert [p["xy"] for p in _points(opt)] == [
        [(1, 0.02)], [(1, 0.02)], [(2, 0.5)], [(0, top)], [(1, top)], [(2, 0.9)], [(2, 0.3)]]
    # a number missing from a trial's config: that trial is left out of the panel
    assert [p["xy"] for p in _points(layers)] == [
        [(2, 0.02)], [(2, 0.02)], [(4, 0.5)], [(3, top)], [(8, 0.9)], [(4, 0.3)]]
    assert _points(none) == []
    title = [t for t in fig.findobj(Text) if t.get_text() == "s: darcy: searched values vs "
             "val_rel_l2"]
    assert len(title) == 1 and title[0].get_fontsize() == 10


def test_the_trials_figure_legend_is_in_the_first_panel_only():
    fig = trials_figure(_table(), metric="val_rel_l2", searched=["scale", "opt"],
                        best_trial="t0", title="s")
    legend = fig.axes[0].get_legend()
    texts = legend.get_texts()
    assert [t.get_text() for t in texts] == ["completed", "best", "stopped early", "failed",
                                             "diverged", "other"]
    assert {t.get_fontsize() for t in texts} == {7}
    assert fig.axes[1].get_legend() is None
    assert len(fig.axes) == 2 and tuple(fig.get_size_inches()) == pytest.approx((8.4, 3.4))


def test_a_trial_listed_twice_is_named_best_once():
    best = {"trial_id": "t0", "outcome": "completed", "last": 0.2, "config": {"lam": 1.0}}
    fig = trials_figure([best, dict(best, config={"lam": 2.0})], metric="m", searched=["lam"],
                        best_trial="t0", title="s")
    assert [p["label"] for p in _points(fig.axes[0])] == ["completed", "best", None, None]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["completed", "best"]


@pytest.mark.parametrize("lasts, top, yscale", [
    ([0.2, 0.5], 0.5 + 0.1 * 0.3, "linear"),  # a tenth of the range above the highest
    ([0.5, 0.5], 0.55, "linear"),  # no range: a tenth of the value
    ([-0.5, -0.5], -0.45, "linear"),
    ([0.0, 0.0], 1.0, "linear"),  # neither: 1 above
    ([], 1.0, "linear"),
    ([0.5, 10.0], 10.0 + 0.1 * 9.5, "linear"),  # x20 is not yet a log axis
    ([0.1, 10.0], 15.0, "log"),  # log: half as high again
    ([0.5, 10.25], 10.25 * 1.5, "log"),  # x20.5
    ([0.0, 10.0], 10.0 + 0.1 * 10.0, "linear"),
])
def test_a_trial_without_a_metric_is_drawn_above_the_others(lasts, top, yscale):
    table = [{"trial_id": f"t{i}", "outcome": "completed", "last": v, "config": {}}
             for i, v in enumerate(lasts)]
    table.append({"trial_id": "lost", "outcome": "failed", "last": None, "config": {}})
    fig = trials_figure(table, metric="m", searched=[], best_trial="lost", title="s")
    (ax,) = fig.axes  # no searched value: the trials' order is x
    assert ax.get_xlabel() == "trial" and ax.get_xscale() == "linear"
    points = _points(ax)  # the best trial has no metric: no star
    assert [p["xy"] for p in points] == [[(i, v)] for i, v in enumerate(lasts)] + \
        [[(len(lasts), pytest.approx(top))]]
    assert ax.get_yscale() == yscale


@pytest.mark.parametrize("values, xscale", [
    ([0.5, 10.0], "log"), ([0.5, 9.5], "linear"), ([0, 30], "linear"), ([-1.0, 30.0], "linear"),
])
def test_a_wide_positive_range_of_values_is_on_a_log_axis(values, xscale):
    table = [{"trial_id": f"t{i}", "outcome": "completed", "last": 0.1, "config": {"lr": v}}
             for i, v in enumerate(values)]
    fig = trials_figure(table, metric="m", searched=["lr"], best_trial=None, title="s")
    assert fig.axes[0].get_xscale() == xscale
    assert [p["xy"] for p in _points(fig.axes[0])] == [[(v, 0.1)] for v in values]


def test_plot_trials_saves_the_figure_as_png_and_closes_it(tmp_path):
    before = plt.get_fignums()
    path = tmp_path / "new" / "dir" / "p.png"
    got = plot_trials(_table(), path, metric="m", searched=["scale", "opt"], best_trial="t0",
                      title="t")
    assert got == path and _png_size(path) == (924, 374)  # 8.4 x 3.4 inches at 110 dpi
    assert path.read_bytes() == _saved(trials_figure(
        _table(), metric="m", searched=["scale", "opt"], best_trial="t0", title="t"),
        tmp_path / "f.png")
    again = tmp_path / "new" / "dir" / "p2.png"
    plot_trials(_table(), again, metric="m", searched=[], best_trial=None, title="t")
    assert _png_size(again) == (462, 374)
    assert plt.get_fignums() == before
