"""``mona-tune compare``: its statistics against hand computations and scipy, the ridge reference
against an independent closed form, and one tiny real run through the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from mona_tune.cli import main
from mona_tune.tasks import TaskData, get_task
from mona_tune.train.ridge import ridge_baseline
from mona_tune.train.compare import (
    FAILS,
    FEW,
    HOLDS,
    NOISE,
    claims,
    describe,
    markdown_table,
    paired,
    summarise,
    t_interval,
    verdict,
)


def test_describe_gives_mean_sd_and_standard_error_not_swapped():
    d = describe([1.0, 2.0, 3.0, 4.0, 6.0, float("nan"), None])
    # by hand: mean 16/5; squared deviations 4.84 + 1.44 + 0.04 + 0.64 + 7.84 = 14.8 over n-1 = 4
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(3.2)
    assert d["sd"] == pytest.approx(math.sqrt(3.7))
    assert d["se"] == pytest.approx(math.sqrt(3.7 / 5))
    one = describe([0.5])
    assert one["mean"] == 0.5 and one["n"] == 1 and math.isnan(one["se"])


def test_t_interval_matches_scipy_and_a_hand_computation():
    diffs = [-0.010, -0.020, 0.005, -0.015, -0.012]
    low, high = t_interval(diffs)
    ref = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-10)
    # t_{0.975, 4} = 2.7764451; mean −0.0104, sd 0.0096333
    half = 2.7764451 * np.std(diffs, ddof=1) / math.sqrt(5)
    assert (low, high) == pytest.approx((-0.0104 - half, -0.0104 + half), abs=1e-6)
    assert all(math.isnan(v) for v in t_interval([0.1]))


@pytest.mark.parametrize("low,high,direction,want", [
    (-0.3, -0.1, "min", HOLDS), (0.1, 0.3, "min", FAILS), (-0.1, 0.2, "min", NOISE),
    (0.1, 0.3, "max", HOLDS), (-0.3, -0.1, "max", FAILS), (-0.1, 0.2, "max", NOISE),
    (math.nan, math.nan, "min", FEW),
])
def test_verdict_in_words(low, high, direction, want):
    assert verdict(low, high, direction) == want


def fake_runs(values: dict[str, list[float]], probe: dict[str, list[float]]) -> list[dict]:
    """Run records as ``compare`` makes them, for fixed numbers (seeds in scrambled order)."""
    runs = []
    for seed in (3, 0, 2, 1, 4):
        for method, per_seed in values.items():
            if seed < len(per_seed):
                runs.append({"method": method, "seed": seed, "history": [], "final": {
                    "test_rel_l2": per_seed[seed], "source_probe_error": probe[method][seed],
                    "source_probe_error_pretrained": 0.05, "seconds": 10.0 + seed}})
    return runs


def test_differences_are_paired_by_seed():
    # the seeds differ far more than the methods; mona is lower than ft by 0.010 ± 0.001 on
    # every seed, so only a paired comparison sees it
    ft = [0.10, 0.20, 0.30, 0.40, 0.50]
    mona = [v - d for v, d in zip(ft, [0.010, 0.011, 0.009, 0.010, 0.012])]
    emb = [v + 0.001 * (-1) ** i for i, v in enumerate(ft)]
    probe = {"ft": [0.2] * 5, "mona": [0.1, 0.3, 0.2, 0.2, 0.2], "emb": [0.2] * 5}
    runs = fake_runs({"ft": ft, "mona": mona, "emb": emb[:4]}, probe)  # emb lacks seed 4

    p = paired(runs, "mona", "ft", "test_rel_l2", "min")
    diffs = [m - f for m, f in zip(mona, ft)]
    assert p["n"] == 5 and p["mean"] == pytest.approx(np.mean(diffs))
    ref = stats.ttest_rel(mona, ft).confidence_interval(0.95)
    assert (p["low"], p["high"]) == pytest.approx((ref.low, ref.high), rel=1e-9)
    assert p["verdict"] == HOLDS
    unpaired = stats.ttest_ind(mona, ft).confidence_interval(0.95)
    assert unpaired.low < 0 < unpaired.high  # the same numbers unpaired: within noise

    q = paired(runs, "mona", "emb", "test_rel_l2", "min")
    assert q["n"] == 4
    assert q["mean"] == pytest.approx(np.mean([mona[s] - emb[s] for s in range(4)]))

    rows = claims(runs, ["ft", "emb", "mona"], "test_rel_l2", "min")
    assert [(r["other"], r["quantity"]) for r in rows] == [
        ("ft", "test_rel_l2"), ("ft", "source_probe_error"),
        ("emb", "test_rel_l2"), ("emb", "source_probe_error")]
    assert rows[1]["verdict"] == NOISE  # probe: mona − ft = −0.1, +0.1, 0, 0, 0
    assert claims(runs, ["ft", "emb"], "test_rel_l2", "min") == []


def test_table_shows_mean_and_standard_error_the_references_and_the_verdicts():
    ft = [1.0, 2.0, 3.0, 4.0, 6.0]
    runs = fake_runs({"ft": ft, "mona": [v - 0.5 for v in ft], "scratch": ft},
                     {"ft": [0.1] * 5, "mona": [0.1] * 5, "scratch": [0.9] * 5})
    methods = ["ft", "mona", "scratch"]
    result = {"task": "darcy", "metric": "rel_l2", "direction": "min", "methods": methods,
              "seeds": 5, "epochs": 3, "warmup_epochs": 1,
              "summary": summarise(runs, methods, "test_rel_l2"),
              "ridge": {"alpha": 100.0, "val_rel_l2": 0.2, "test_rel_l2": 0.25, "seconds": 1.0},
              "paired": claims(runs, methods, "test_rel_l2", "min")}
    table = markdown_table(result)
    assert "| ft | 3.2000 ± 0.8602 (sd 1.9235) | 0.100 ± 0.000 (sd 0.000) | 12 |" in table
    assert "| scratch (reference) | 3.2000 ± 0.8602" in table
    assert "| ridge (reference; α = 100 chosen on validation) | 0.2500 |" in table
    assert "| (pretrained encoder) | | 0.050 | |" in table
    assert "| mona − ft | test rel_l2 | -0.5000 | [-0.5000, -0.5000] | 5 | holds |" in table


def test_ridge_reference_against_an_independent_closed_form():
    rng = np.random.default_rng(0)
    n_train, n_val, n_test, side = 24, 8, 8, 4
    n = n_train + n_val + n_test
    a = rng.standard_normal((n, 1, side, side))
    coords = np.broadcast_to(np.linspace(0, 1, side), (n, 1, side, side))  # constant channel
    x = np.concatenate([a, coords], axis=1)
    w = rng.standard_normal((side * side, side * side)) / side
    y = (a.reshape(n, -1) @ w + 0.5 + 0.6 * rng.standard_normal((n, side * side)))
    y = y.reshape(n, 1, side, side)
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in (("x", x), ("y", y))}
    parts = np.split(np.arange(n), [n_train, n_train + n_val])
    data = TaskData(*(t[k][idx] for idx in parts for k in ("x", "y")), decode=lambda p: p)
    alphas = (0.01, 1.0, 10.0, 100.0, 1e4)
    got = ridge_baseline(data, get_task("darcy"), alphas)

    # closed form with intercept on the raw flattened inputs, rel-L2 by hand
    xs = [x[idx].reshape(len(idx), -1).astype(np.float32).astype(np.float64) for idx in parts]
    ys = [y[idx].reshape(len(idx), -1).astype(np.float32).astype(np.float64) for idx in parts]
    mx, my = xs[0].mean(0), ys[0].mean(0)

    def rel_l2(alpha, i):
        xc = xs[0] - mx
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ (ys[0] - my))
        pred = (xs[i] - mx) @ coef + my
        return np.mean(np.linalg.norm(pred - ys[i], axis=1) / np.linalg.norm(ys[i], axis=1))

    vals = [rel_l2(alpha, 1) for alpha in alphas]
    best = alphas[int(np.argmin(vals))]
    assert alphas[0] < best < alphas[-1]  # the choice is a real one
    assert got["alpha"] == best
    assert got["val_rel_l2"] == pytest.approx(min(vals), rel=1e-5)
    assert got["test_rel_l2"] == pytest.approx(rel_l2(best, 2), rel=1e-5)


@pytest.mark.usefixtures("fast_source")
def test_compare_end_to_end_through_the_command_line(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("n_train: 24\nn_test: 8\nbatch_size: 8\nprobe_samples: 40\n"
                      "source_data: digits\nnum_threads: 1\ndevice: cpu\n")
    out = tmp_path / "cmp"
    code = main(["compare", "--task", "darcy", "--methods", "ft,mona", "--seeds", "2",
                 "--epochs", "2", "--warmup-epochs", "1", "--config", str(config),
                 "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    table = json.loads((out / "table.json").read_text())
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 4 and all(sum("source_probe_error" in h for h in r["history"]) == 2
                                  for r in runs)
    # the summary and the paired rows recomputed from the runs' own final metrics
    finals = {(r["method"], r["seed"]): r["final"] for r in runs}
    for method in ("ft", "mona"):
        values = [finals[(method, s)]["test_rel_l2"] for s in (0, 1)]
        got = table["summary"][method]["test_rel_l2"]
        assert got["mean"] == pytest.approx(np.mean(values))
        assert got["se"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(2))
    diffs = [finals[("mona", s)]["test_rel_l2"] - finals[("ft", s)]["test_rel_l2"] for s in (0, 1)]
    row = next(p for p in table["paired"] if p["quantity"] == "test_rel_l2")
    ref = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert (row["low"], row["high"]) == pytest.approx((ref.low, ref.high))
    assert row["verdict"] in (HOLDS, FAILS, NOISE)
    assert table["ridge"]["test_rel_l2"] > 0 and table["ridge"]["alpha"] > 0
    assert "| mona − ft | test rel_l2 |" in stdout and "| ridge (reference" in stdout
    assert (out / "table.md").read_text().strip() == stdout.strip()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["compare", "--methods", "ft,nope"]) == 2
    assert "unknown nope" in capsys.readouterr().err


@pytest.mark.usefixtures("fast_source")
def test_compare_a_1d_task(capsys, tmp_path):
    """The 1D path (embedder on the encoder's patch grid, dense 1D head) through compare, with
    the generated advection file and its nRMSE; ridge on the flattened input beside it."""
    config = tmp_path / "c.yaml"
    config.write_text("n_train: 20\nn_test: 4\nbatch_size: 8\nprobe_samples: 40\n"
                      "source_data: digits\nnum_threads: 1\ndevice: cpu\n")
    out = tmp_path / "cmp"
    code = main(["compare", "--task", "advection", "--methods", "ft,mona", "--seeds", "2",
                 "--epochs", "1", "--warmup-epochs", "1", "--config", str(config),
                 "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    table = json.loads((out / "table.json").read_text())
    runs = json.loads((out / "runs.json").read_text())
    assert {(r["method"], r["seed"]) for r in runs} == {(m, s) for m in ("ft", "mona")
                                                        for s in (0, 1)}
    assert all(r["final"]["test_nrmse"] > 0 for r in runs)
    assert table["ridge"]["test_nrmse"] > 0
    assert "| mona − ft | test nrmse |" in stdout


def test_logistic_reference_of_a_classification_task():
    """Classes get multinomial logistic regression (C = 1/α chosen on validation): the same
    error rates as scikit-learn's on the raw flattened inputs (the orthonormal basis of the
    centred training inputs changes no prediction: the penalised optimum lies in their span)."""
    from sklearn.linear_model import LogisticRegression

    from mona_tune.tasks import resolve_task
    from mona_tune.config import TrainConfig

    rng = np.random.default_rng(1)
    n, k = 90, 3
    labels = np.arange(n) % k
    x = rng.standard_normal((n, 2, 5)) + 0.8 * labels[:, None, None] * np.linspace(-1, 1, 5)
    parts = np.split(np.arange(n), [54, 72])
    t = {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(labels)}
    data = TaskData(*(t[key][idx] for idx in parts for key in ("x", "y")), decode=lambda p: p)
    task = get_task("waveforms")  # a classification task: error rate, min
    alphas = (0.1, 10.0)
    got = ridge_baseline(data, task, alphas)
    flat = [x[idx].reshape(len(idx), -1).astype(np.float32).astype(np.float64) for idx in parts]

    def error(alpha, i):
        model = LogisticRegression(C=1 / alpha, max_iter=5000, tol=1e-10).fit(flat[0],
                                                                               labels[parts[0]])
        return float(np.mean(model.predict(flat[i]) != labels[parts[i]]))

    vals = [error(a, 1) for a in alphas]
    best = int(np.argmin(vals))
    assert got["name"] == "logistic regression" and got["alpha"] == alphas[best]
    assert got["val_error_rate"] == pytest.approx(vals[best], abs=1 / 18 + 1e-9)
    assert got["test_error_rate"] == pytest.approx(error(alphas[best], 2), abs=1 / 18 + 1e-9)
    assert resolve_task(TrainConfig(task="waveforms")).output == "classes"


@pytest.mark.usefixtures("fast_source")
def test_compare_a_classification_task(capsys, tmp_path):
    """The embedded classification task through compare: cross-entropy, the error rate, the
    pooled linear head; logistic regression as the linear reference."""
    config = tmp_path / "c.yaml"
    config.write_text("n_train: 40\nn_test: 20\nbatch_size: 8\nprobe_samples: 40\n"
                      "source_data: digits\nnum_threads: 1\ndevice: cpu\n")
    out = tmp_path / "cmp"
    code = main(["compare", "--task", "waveforms", "--methods", "ft,mona", "--seeds", "2",
                 "--epochs", "1", "--warmup-epochs", "1", "--config", str(config),
                 "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    table = json.loads((out / "table.json").read_text())
    runs = json.loads((out / "runs.json").read_text())
    assert all(0 <= r["final"]["test_error_rate"] <= 1 for r in runs)
    # 20 test samples: an error rate is a multiple of 1/20
    assert all(abs(r["final"]["test_error_rate"] * 20 - round(r["final"]["test_error_rate"] * 20))
               < 1e-6 for r in runs)
    assert table["ridge"]["name"] == "logistic regression"
    assert "| logistic regression (reference; α = " in stdout
    assert "| mona − ft | test error_rate |" in stdout
