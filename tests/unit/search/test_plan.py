"""``search.plan``: a search request checked and turned into what the driver runs, without Ray."""

from __future__ import annotations

import json

import pytest

from mona_tune.errors import MonaError
from mona_tune.search.plan import SearchRequest, plan_search

SPACE = """\
searched:
  lam: {uniform: [0.0, 1.0]}
fixed: {epochs: 3, n_train: 40}
budget: {num_samples: 5, max_concurrent: 3}
scheduler: {kind: asha, grace_period: 2}
checkpoint: {num_to_keep: 4}
"""


@pytest.fixture
def req(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    return SearchRequest(space=str(tmp_path / "space.yaml"), name="s1",
                         storage=str(tmp_path / "runs"),
                         tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_space_file_fills_what_the_request_leaves_open(req, tmp_path):
    plan = plan_search(req)
    s = plan.scfg
    assert (s.num_samples, s.max_concurrent, s.scheduler.kind, s.scheduler.grace_period,
            s.checkpoint.num_to_keep) == (5, 3, "asha", 2, 4)
    assert s.storage == str(tmp_path / "runs") and s.name == "s1" and not plan.resume
    assert plan.param_space["epochs"] == 3 and "lam" in plan.param_space
    assert not (tmp_path / "runs").exists()  # planning writes nothing


def test_a_task_name_is_what_the_search_is_tracked_under(req):
    assert plan_search(req).scfg.tracking_task == "darcy"
    req.task_name = "heat-1d.v2"
    scfg = plan_search(req).scfg
    assert (scfg.task, scfg.task_name, scfg.tracking_task) == ("darcy", "heat-1d.v2",
                                                               "heat-1d.v2")


def test_the_request_beats_the_space_file(req):
    req.num_samples, req.max_concurrent, req.scheduler, req.checkpoint_keep = 2, 1, "fifo", 1
    req.sampler, req.fixed = "random", {"epochs": 5}
    plan = plan_search(req)
    s = plan.scfg
    assert (s.num_samples, s.max_concurrent, s.scheduler.kind, s.checkpoint.num_to_keep,
            s.sampler) == (2, 1, "fifo", 1, "random")
    assert plan.param_space["epochs"] == 5 and "epochs: 5" in plan.space_yaml


@pytest.mark.parametrize("field, value, line", [
    ("num_samples", 0, "--num-samples 0: input should be greater than or equal to 1"),
    ("time_budget_s", 0.0, "--time-budget 0.0: input should be greater than 0"),
    ("reduction_factor", 1.0, "--reduction-factor 1.0: input should be greater than 1"),
    ("dashboard_port", 0, "--dashboard-port 0: input should be greater than or equal to 1"),
    ("max_t", 1, "--grace-period 2: above max_t 1"),
    ("name", "a b", "--name 'a b': use letters, digits"),
    ("task_name", "my task", "--task-name my task: value error, use letters, digits"),
])
def test_a_bad_value_is_one_line_naming_its_flag(req, field, value, line):
    setattr(req, field, value)
    with pytest.raises(MonaError) as err:
        plan_search(req)
    assert str(err.value).startswith(line)


def test_a_name_taken_and_a_resume_of_nothing_are_refused(req, tmp_path):
    (tmp_path / "runs" / "s1").mkdir(parents=True)
    with pytest.raises(MonaError, match=r"--name s1: .* already exists; add --resume"):
        plan_search(req)
    req.resume, req.name = True, "nope"
    with pytest.raises(MonaError, match=r"--resume: no search 'nope' under"):
        plan_search(req)


def test_a_resume_reads_the_saved_search_and_takes_the_new_address(req, tmp_path):
    plan = plan_search(req)
    saved = {"search_config": {**plan.scfg.model_dump(mode="json"), "sampler": "random"},
             "space_yaml": plan.space_yaml, "param_space_fixed": {"epochs": 3, "n_train": 40}}
    (tmp_path / "runs" / "s1").mkdir(parents=True)
    (tmp_path / "runs" / "s1" / "mona_search.json").write_text(json.dumps(saved))
    again = plan_search(SearchRequest(name="s1", resume=True, storage=str(tmp_path / "runs"),
                                      address="10.0.0.1:6379", num_samples=99))
    assert again.resume and again.scfg.sampler == "random" and again.scfg.num_samples == 5
    assert again.scfg.address == "10.0.0.1:6379"
    assert again.scfg.tracking_uri == plan.scfg.tracking_uri


@pytest.mark.parametrize("change, line", [
    ({"resume": True}, "--warm-start: a resumed search keeps what it learnt when it started"),
    ({"sampler": "random"}, "--warm-start needs --sampler optuna (random sampling learns"),
])
def test_warm_start_with_resume_or_random_sampling_is_one_line(req, change, line):
    req.warm_start = "auto"
    for k, v in change.items():
        setattr(req, k, v)
    with pytest.raises(MonaError) as err:
        plan_search(req)
    assert str(err.value).startswith(line)


def test_warm_start_names_a_search_or_auto(req):
    req.warm_start = "x'y"
    with pytest.raises(MonaError, match="--warm-start \"x'y\": not a search name"):
        plan_search(req)
    req.warm_start, req.warm_start_first = "auto", 3
    s = plan_search(req).scfg
    assert (s.warm_start, s.warm_start_first) == ("auto", 3)
