"""benchmarks/peer_search.py: the hand-written search it measures against ``mona-tune search`` is
the same search (scheduler, seeded sampler, concurrency, space, fixed fields, trials, kept
checkpoints), compared on the two Tuners built and not run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def peer():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import peer_search

        yield peer_search
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture()
def both(peer, tmp_path):
    """(library, hand-written) Tuner settings for the same request."""
    from mona_tune.search.plan import plan_search

    plan = plan_search(peer.library_request(tmp_path, "peer-lib", n_train=123, num_samples=7))
    lib = peer.library_settings(plan)
    hand = peer.tuner_settings(peer.hand_tuner(tmp_path, "peer-hand", n_train=123,
                                               num_samples=7))
    return lib, hand


def test_the_scheduler_sampler_and_budget_are_the_librarys(both):
    lib, hand = both
    assert hand["scheduler"] == lib["scheduler"]
    assert lib["scheduler"]["time_attr"] == "stage2_epoch"
    assert lib["scheduler"]["rungs"] == [1, 2, 4]  # grace 1, reduction factor 2, max_t 6
    assert hand["searcher"] == lib["searcher"]  # TPE, startup trials, same seed's first draw
    assert lib["searcher"]["optuna"] and lib["searcher"]["max_concurrent"] == 2
    for key in ("metric", "mode", "num_samples", "num_to_keep"):
        assert hand[key] == lib[key], key
    assert lib["num_samples"] == 7


def test_the_trials_train_the_same_space_and_fixed_fields(both):
    lib, hand = both
    assert hand["param_space"] == lib["param_space"]
    assert lib["param_space"]["n_train"] == 123
    assert lib["param_space"]["num_threads"] == 1


def test_a_different_seed_would_show(peer, both, monkeypatch, tmp_path):
    lib, _ = both
    monkeypatch.setattr(peer, "SEED", 1)
    hand = peer.tuner_settings(peer.hand_tuner(tmp_path, "peer-hand-1", n_train=123,
                                               num_samples=7))
    assert hand["searcher"]["first_draw"] != lib["searcher"]["first_draw"]
