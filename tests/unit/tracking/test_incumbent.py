"""``tracking.incumbent``: the best validation metric so far against wall time and stage-2 epochs
spent, from trial runs in a real SQLite store (``past_searches.py``), with hand-made oracles."""

from __future__ import annotations

import pytest
from conftest import empty_mlflow_store
from past_searches import T0_MS, Trial, write_search

from mona_tune.tracking import mlflow_runs as mr
from mona_tune.tracking.incumbent import (
    EpochReport,
    incumbent_curve,
    log_incumbent,
    search_reports,
)

# in time order: 0.20 (trial 1), 0.15, 0.12 (trial 2), 0.30 (trial 3), 0.10 (1), 0.08 (2)
TRIALS = [Trial({"lam": 0.1}, reports=[(0, 0.20), (4000, 0.10)]),
          Trial({"lam": 0.2}, reports=[(1000, 0.15), (2000, 0.12), (5000, 0.08)]),
          Trial({"lam": 0.3}, outcome="stopped_early", reports=[(3000, 0.30)]),
          Trial({"lam": 0.4}, outcome="failed")]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    uri = empty_mlflow_store(tmp_path_factory.mktemp("inc") / "mlflow.db")
    parent = write_search(uri, "s1", TRIALS, searched=("lam",), fixed={"epochs": 3})
    exp = mr.get_client(uri).get_run(parent).info.experiment_id
    return uri, exp, parent


def test_the_stage2_reports_of_every_trial_numbered_in_start_order(search):
    reports = search_reports(*search, "val_rel_l2")  # stage-1 epochs are not counted
    assert sorted((r.time_ms - T0_MS, r.trial, r.value) for r in reports) == [
        (0, 1, 0.20), (1000, 2, 0.15), (2000, 2, 0.12), (3000, 3, 0.30), (4000, 1, 0.10),
        (5000, 2, 0.08)]


def test_the_incumbent_improves_where_a_report_beats_every_earlier_one(search):
    curve = incumbent_curve(search_reports(*search, "val_rel_l2"), "min", search="s1")
    assert curve.seconds == [0.0, 1.0, 2.0, 4.0, 5.0]
    assert curve.epochs == [1, 2, 3, 5, 6]
    assert curve.values == [0.20, 0.15, 0.12, 0.10, 0.08]
    assert curve.trials == [1, 2, 2, 1, 2]
    assert (curve.total_epochs, curve.total_seconds, curve.best) == (6, 5.0, 0.08)
    assert curve.reached(0.11, "min") == (1, 5, 4.0)
    assert curve.reached(0.05, "min") is None
    assert curve.describe() == ("best 0.08 reached after 6 of 6 stage-2 epochs, 5 of 5 s "
                                "(trial 2)")


def test_the_parent_run_gets_the_history_at_epochs_spent_and_their_moments(search):
    uri, _, parent = search
    curve = incumbent_curve(search_reports(*search, "val_rel_l2"), "min", search="s1")
    log_incumbent(uri, parent, curve, "val_rel_l2")
    history = mr.get_client(uri).get_metric_history(parent, "incumbent_val_rel_l2")
    assert [(m.step, m.value, m.timestamp - T0_MS) for m in history] == [
        (1, 0.20, 0), (2, 0.15, 1000), (3, 0.12, 2000), (5, 0.10, 4000), (6, 0.08, 5000)]


def test_a_maximised_metric_and_a_search_that_ends_without_improving():
    reports = [EpochReport(10_000, 2, 0.5), EpochReport(9_000, 1, 0.7),
               EpochReport(12_500, 1, 0.6), EpochReport(9_000, 2, 0.7)]
    curve = incumbent_curve(reports, "max")
    assert (curve.epochs, curve.values, curve.trials) == ([1], [0.7], [1])
    assert (curve.total_epochs, curve.total_seconds, curve.t0_ms) == (4, 3.5, 9_000)
    assert incumbent_curve([], "min").describe() == "no trial reported a stage-2 epoch"
