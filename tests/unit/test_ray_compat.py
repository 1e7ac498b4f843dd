"""Ray's private API that mona-tune uses (``mona_tune/ray_compat.py``) is all there in the
installed Ray, and the package's bound on ``ray`` is the versions that list was read from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import ray

from mona_tune import ray_compat


def test_every_private_name_is_in_the_installed_ray():
    assert ray_compat.missing() == [], (
        f"Ray {ray.__version__} lacks private names mona-tune uses (read from Ray "
        f"{', '.join(ray_compat.TESTED)}); see mona_tune/ray_compat.py")


def test_the_names_set_in_init_are_on_real_instances():
    """The check above reads sources; here the searchers and schedulers are built as the search
    builds them and each name it reads is on the instance."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    optuna_search = OptunaSearch(metric="score", mode="min")
    limiter = ConcurrencyLimiter(optuna_search, max_concurrent=2)
    built = {"OptunaSearch": optuna_search, "ConcurrencyLimiter": limiter,
             "SearchGenerator": SearchGenerator(limiter),
             "BasicVariantGenerator": BasicVariantGenerator(),
             "ASHAScheduler": ASHAScheduler(metric="score", mode="min", time_attr="t", max_t=4)}
    checked = 0
    for owner, attr, kind, _ in ray_compat.PRIVATE_NAMES:
        name = owner.rsplit(":", 1)[-1]
        if kind == "instance" and name in built:
            assert hasattr(built[name], attr), f"{owner}.{attr}"
            checked += 1
    assert checked >= 12


def test_a_missing_name_is_reported(monkeypatch):
    monkeypatch.setattr(ray_compat, "PRIVATE_NAMES", (
        ("ray.tune.search.optuna:OptunaSearch", "_no_such_state", "instance", "a test"),
        ("ray.tune.search:NoSuchClass", "", "class", "a test"),
        ("ray.tune.search:ConcurrencyLimiter", "live_trials", "instance", "a test")))
    assert ray_compat.missing() == ["ray.tune.search.optuna:OptunaSearch._no_such_state",
                                    "ray.tune.search:NoSuchClass"]


def test_the_ray_bound_is_the_versions_tested():
    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    ray_dep = next(d for d in deps["project"]["dependencies"] if d.startswith("ray["))
    upper = re.search(r"<\s*([\d.]+)", ray_dep)
    assert upper, f"{ray_dep}: no upper bound"
    major, minor = (int(x) for x in ray_compat.TESTED[-1].split(".")[:2])
    assert upper.group(1) == f"{major}.{minor + 1}", ray_dep
    installed = ".".join(ray.__version__.split(".")[:2])
    if installed not in ray_compat.TESTED:
        pytest.fail(f"Ray {ray.__version__} is installed; mona_tune/ray_compat.py was read from "
                    f"{ray_compat.TESTED}")


def test_the_tuner_search_alg_of_something_else_is_none():
    assert ray_compat.tuner_search_alg(object()) is None
    ray_compat.snapshot_soon(object())  # no checkpoint manager: nothing to ask, no error
