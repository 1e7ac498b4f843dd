"""``scale: paper``: a run that would train on an embedded input stops with one line naming the
input and the flag that gives it, in ``mona-tune train`` and ``mona-tune search`` alike."""

from __future__ import annotations

import pytest

from mona_tune.config import TrainConfig, check_scale, toy_inputs
from mona_tune.errors import MonaError
from mona_tune.search.plan import SearchRequest, plan_search

REAL = {"data_dir": "/data/darcy", "source_model": "swin_base_patch4_window7_224.ms_in22k",
        "source_data": "cifar10:/data/cifar-10-batches-py"}


@pytest.mark.parametrize("field, value, line", [
    ("data_dir", None, "generated data (no --data-dir DIR)"),
    ("source_model", None, "the embedded 0.3 M-parameter Swin (no --source-model NAME)"),
    ("source_data", None, "the embedded digits (no --source-data cifar10:DIR or text:FILE)"),
    ("source_data", "digits", "the embedded digits (--source-data digits, not cifar10:DIR or "
                              "text:FILE)"),
    ("source_data", "fractals", "the embedded fractals (--source-data fractals, not "
                                "cifar10:DIR or text:FILE)"),
])
def test_each_embedded_input_is_named_with_its_flag(field, value, line):
    cfg = TrainConfig(**{**REAL, field: value, "scale": "paper"})
    assert toy_inputs(cfg) == [line]
    with pytest.raises(MonaError) as e:
        check_scale(cfg, "space x.yaml")
    assert str(e.value) == f"space x.yaml declares scale: paper, but this run would train on {line}"
    assert "\n" not in str(e.value)


def test_real_inputs_pass_and_a_toy_scale_checks_nothing():
    check_scale(TrainConfig(**REAL, scale="paper"), "x")
    check_scale(TrainConfig(**{**REAL, "source_data": "text:/d/t.csv"}, scale="paper"), "x")
    check_scale(TrainConfig(scale="toy"), "x")
    check_scale(TrainConfig(), "x")
    assert len(toy_inputs(TrainConfig())) == 3  # every missing input in one line


def test_a_paper_space_without_data_stops_before_ray(tmp_path):
    """``search --space darcy-paper`` without the inputs: one line from the plan, before Ray
    starts or anything is written."""
    import ray

    req = SearchRequest(space="darcy-paper", name="p", storage=str(tmp_path / "runs"),
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        fixed={"source_model": REAL["source_model"]})
    with pytest.raises(MonaError, match=r"^space darcy-paper.yaml declares scale: paper, but "
                       r"this run would train on generated data \(no --data-dir DIR\), the "
                       r"embedded digits"):
        plan_search(req)
    assert not ray.is_initialized()
    assert list(tmp_path.iterdir()) == []
    # --set scale=toy runs the paper space's settings on the toy, on purpose
    plan = plan_search(SearchRequest(**{**req.__dict__, "fixed": {"scale": "toy"}}))
    assert plan.space.fixed["scale"] == "toy"
