"""``search.warm_start``: which past trials a new search learns from, and that the Optuna
searcher the search builds receives exactly them, keeps them through Tune's save and restore of
its state (what ``--resume`` does), and samples the best past configurations first.

The store is a real SQLite MLflow store written by the tracking helpers (``past_searches.py``):
search ``a`` has the new search's settings, with a completed and a stopped trial inside the new
space, one outside it, a failed and a diverged one; search ``b`` (newer) searched another space
under other settings (``n_train`` 500, ``inner_lr`` searched)."""

from __future__ import annotations

import optuna
import pytest
from conftest import empty_mlflow_store
from past_searches import Trial, write_search

from mona_tune.config import SearchConfig, SearchSpace
from mona_tune.errors import MonaError
from mona_tune.search import warm_start as ws
from mona_tune.search.space import to_param_space
from mona_tune.search.tuner import _searcher
from mona_tune.tracking.past_trials import past_trials

FIXED = {"method": "mona", "epochs": 6, "batch_size": 16, "n_train": 1000}
NEW_SPACE = SearchSpace.model_validate({
    "searched": {"lam": {"uniform": [0.0, 1.0]}, "lr": {"loguniform": [1e-3, 1e-2]},
                 "warmup_epochs": {"randint": [0, 3]}},
    "fixed": FIXED})
A0 = {"lam": 0.2, "lr": 3e-3, "warmup_epochs": 2}  # completed, 0.09
A1 = {"lam": 0.8, "lr": 1.5e-3, "warmup_epochs": 2}  # stopped, 0.12
A5 = {"lam": 0.6, "lr": 2.5e-3, "warmup_epochs": 2}  # completed, 0.095


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = empty_mlflow_store(tmp_path_factory.mktemp("warm") / "mlflow.db")
    fixed_a = {**FIXED, "warmup_epochs": 2}
    write_search(uri, "a", [
        Trial({"lam": 0.2, "lr": 3e-3}, reports=[(0, 0.2), (5, 0.09)]),
        Trial({"lam": 0.8, "lr": 1.5e-3}, outcome="stopped_early", reports=[(1, 0.12)]),
        Trial({"lam": 0.5, "lr": 2e-3}, outcome="failed"),
        Trial({"lam": 0.9, "lr": 9e-3}, outcome="diverged", reports=[(2, 0.3)]),
        Trial({"lam": 0.4, "lr": 5e-2}, reports=[(3, 0.085)]),  # lr outside the new space
        Trial({"lam": 0.6, "lr": 2.5e-3}, reports=[(4, 0.095)]),
    ], searched=("lam", "lr"), fixed=fixed_a)
    write_search(uri, "b", [
        Trial({"lam": 0.3, "lr": 4e-3, "inner_lr": 0.1}, reports=[(0, 0.07)]),
        Trial({"lam": 0.7, "lr": 6e-3, "inner_lr": 0.2}, reports=[(1, 0.08)]),
    ], searched=("lam", "lr", "inner_lr"), fixed={**fixed_a, "n_train": 500})
    return uri


def _warm(store: str, source: str = "auto", first: int = 2) -> ws.WarmStart:
    scfg = SearchConfig(space_file="x", name="new", storage="/tmp/x", tracking_uri=store,
                        warm_start=source, warm_start_first=first)
    return ws.learn_from_store(scfg, NEW_SPACE, {**FIXED, "task": "darcy"},
                               metric="val_rel_l2", mode="min")


def test_auto_keeps_the_trials_of_the_same_settings_inside_the_space_best_first(store):
    warm = _warm(store)
    assert warm.points == [A0, A5, A1] and warm.rewards == [0.09, 0.095, 0.12]
    assert warm.first == [A0, A5]
    assert warm.searches == {"a": 3} and warm.differs == {}
    assert warm.dropped == {"failed": 1, "diverged": 1, "outside the space": 1,
                            "with other settings": 2}
    line = warm.describe("STORE")
    assert line.startswith("warm start: learnt from 3 trials of a (3); dropped 1 failed, "
                           "1 diverged, 1 outside the space, 2 with other settings")
    assert warm.params()["warm_start_searches"] == "a:3"
    assert line.endswith("; the best 2 configurations run first")
    assert "run first" not in _warm(store, first=0).describe("STORE")


def test_a_named_search_of_other_settings_is_kept_and_its_differences_named(store):
    """b searched inner_lr, which the new search fixes: each of its trials has other settings
    than the other (inner_lr 0.1, 0.2); as many differences, as many trials: the newer kept."""
    warm = _warm(store, "b")
    assert warm.points == [{"lam": 0.7, "lr": 6e-3, "warmup_epochs": 2}]
    assert warm.rewards == [0.08] and warm.first == warm.points
    assert warm.differs == {"inner_lr": ("0.2", "0.001"), "n_train": ("500", "1000")}
    assert warm.dropped == {"with other settings": 1}
    assert "their settings differ in inner_lr (0.2 there, 0.001 here), n_train (500 there, " \
           "1000 here)" in warm.describe("S")


def test_nothing_to_learn_from_is_a_cold_search_and_says_so(store):
    warm = ws.select(past_trials(store, "darcy", "val_rel_l2", search="a")[2:4], NEW_SPACE,
                     ws.settings_of({**FIXED, "task": "darcy"}, NEW_SPACE.searched),
                     mode="min", first=2)
    assert warm.points == [] and warm.describe("S") == (
        "warm start: none of the 2 past trials of the task fits (1 failed, 1 diverged) in S; "
        "searching cold")
    assert ws.select([], NEW_SPACE, {}, mode="min", first=2).describe("S") == \
        "warm start: no past search of the task in S; searching cold"


def test_a_named_search_missing_from_the_store_is_one_line(store):
    with pytest.raises(MonaError, match="--warm-start gone: no search of that name"):
        _warm(store, "gone")


@pytest.mark.parametrize("dist, text, value", [
    ({"uniform": [0, 1]}, "1.0", 1.0), ({"uniform": [0, 1]}, "1.5", None),
    ({"loguniform": [1e-3, 1e-2]}, "0.0005", None), ({"randint": [0, 3]}, "3", None),
    ({"randint": [0, 3]}, "2", 2), ({"randint": [0, 3]}, "1.5", None),
    ({"quniform": [0, 1, 0.25]}, "0.75", 0.75), ({"quniform": [0, 1, 0.25]}, "0.7", None),
    ({"choice": ["mona", "emb"]}, "emb", "emb"), ({"choice": [16, 32]}, "64", None),
    ({"uniform": [0, 1]}, "nan", None), ({"uniform": [0, 1]}, None, None),
])
def test_value_in_takes_only_values_inside_the_distribution(dist, text, value):
    from mona_tune.config import Distribution

    assert ws.value_in(Distribution.model_validate(dist), text) == value


def _built(warm: ws.WarmStart):
    """The search's searcher (ResumableSearch > ConcurrencyLimiter > OnceOptunaSearch) as the
    Tuner sets it up, and the Optuna search inside it."""
    scfg = SearchConfig(space_file="x", name="new", storage="/tmp/x", tracking_uri="sqlite://",
                        num_samples=8, max_concurrent=2, seed=3)
    alg = _searcher(scfg, "val_rel_l2", "min", warm)
    alg.set_search_properties("val_rel_l2", "min", to_param_space(NEW_SPACE, "darcy"))
    return alg, alg.searcher.searcher


def _study(optuna_search) -> list[tuple]:
    return [(t.state.name, t.params, t.value) for t in optuna_search._ot_study.trials]


def test_the_sampler_receives_exactly_the_kept_trials_then_runs_the_best_first(store):
    warm = _warm(store)
    _, optuna_search = _built(warm)
    assert _study(optuna_search) == [("COMPLETE", A0, 0.09), ("COMPLETE", A5, 0.095),
                                     ("COMPLETE", A1, 0.12), ("WAITING", {}, None),
                                     ("WAITING", {}, None)]
    got = [optuna_search.suggest(f"t{i}") for i in range(3)]
    assert got[:2] == [A0, A5]
    assert got[2] not in (A0, A5)  # then TPE samples
    states = [t.state for t in optuna_search._ot_study.trials]
    assert states.count(optuna.trial.TrialState.RUNNING) == 3


def test_a_cold_search_has_an_empty_study(store):
    _, optuna_search = _built(ws.WarmStart(source="auto"))
    assert _study(optuna_search) == []


def test_restoring_the_saved_searcher_keeps_what_it_learnt_and_runs_nothing_twice(store,
                                                                                    tmp_path):
    warm = _warm(store)
    alg, optuna_search = _built(warm)
    assert optuna_search.suggest("t0") == A0
    alg.save_to_dir(str(tmp_path), session_str="s")
    # Tune on --resume: the searcher as pickled with the Tuner, set up again, then its state
    again, restored = _built(warm)
    again.restore_from_dir(str(tmp_path))
    restored = again.searcher.searcher
    assert _study(restored)[:3] == _study(optuna_search)[:3]
    assert [s for s, _, _ in _study(restored)] == ["COMPLETE"] * 3 + ["RUNNING", "WAITING"]
    assert restored.suggest("t1") == A5  # the second best, once
    restored.on_trial_complete("t0", {"val_rel_l2": 0.05})
    assert [s for s, _, _ in _study(restored)] == ["COMPLETE"] * 4 + ["RUNNING"]
