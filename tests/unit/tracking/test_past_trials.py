"""``tracking.past_trials``: the trials of past searches read back from a real SQLite store that
the project's tracking helpers wrote (``tests/past_searches.py``)."""

from __future__ import annotations

import pytest
from conftest import empty_mlflow_store
from past_searches import Trial, write_search

from mona_tune.errors import MonaError
from mona_tune.tracking.past_trials import past_trials

FIXED = {"method": "mona", "epochs": 6, "batch_size": 16, "n_train": 1000}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = empty_mlflow_store(tmp_path_factory.mktemp("past") / "mlflow.db")
    write_search(uri, "old", [Trial({"lam": 0.2}, reports=[(0, 0.2), (10, 0.1)]),
                              Trial({"lam": 0.7}, outcome="failed")],
                 searched=("lam",), fixed=FIXED)
    write_search(uri, "new", [Trial({"lam": 0.3}, outcome="stopped_early", reports=[(0, 0.3)])],
                 searched=("lam",), fixed=FIXED)
    return uri


def test_every_trial_of_the_task_oldest_first_with_its_last_value_and_params(store):
    trials = past_trials(store, "darcy", "val_rel_l2")
    assert [(t.search, t.outcome, t.value) for t in trials] == [
        ("old", "completed", 0.1), ("old", "failed", None), ("new", "stopped_early", 0.3)]
    assert trials[0].params["lam"] == "0.2" and trials[0].params["n_train"] == "1000"
    assert trials[0].trial_id == "t00"


def test_a_named_search_only(store):
    assert [t.value for t in past_trials(store, "darcy", "val_rel_l2", search="new")] == [0.3]


def test_a_named_search_the_store_lacks_is_one_line(store):
    with pytest.raises(MonaError, match=r"--warm-start gone: no search of that name of task "
                                        r"darcy in sqlite:///.*another tracking store"):
        past_trials(store, "darcy", "val_rel_l2", search="gone")


def test_a_task_without_searches_is_nothing_or_one_line_when_a_search_is_named(store):
    assert past_trials(store, "burgers", "val_nrmse") == []
    with pytest.raises(MonaError, match="--warm-start old: no search of task burgers"):
        past_trials(store, "burgers", "val_nrmse", search="old")
