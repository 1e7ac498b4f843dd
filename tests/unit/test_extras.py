"""A feature whose optional package is missing (mona_tune/extras.py) says so in one line that names
the extra, before anything trains or Ray starts: orca's OTDD (POT, [orca]) and a language source
model (transformers, [language])."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mona_tune.cli import main
from mona_tune.errors import MonaError


@pytest.fixture
def without(monkeypatch):
    """Make ``import module`` fail as where the package is not installed."""
    def hide(module: str) -> None:
        monkeypatch.setitem(sys.modules, module, None)
    return hide


def test_train_with_orca_and_no_pot_is_one_line_naming_the_extra(without, capsys, tmp_path):
    without("ot")
    code = main(["train", "--method", "orca", "--epochs", "1", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "mona-tune: error: orca's OTDD (exact optimal transport, POT) needs the package 'ot', "
        "which is not installed here: pip install 'mona-tune[orca]'"]
    assert not (tmp_path / "run").exists()


def test_search_with_a_language_model_and_no_transformers_stops_before_ray(without, tmp_path):
    from mona_tune.search.plan import SearchRequest, plan_search

    without("transformers")
    req = SearchRequest(task="advection", storage=str(tmp_path / "runs"),
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        fixed={"source_model": "roberta-base"})
    with pytest.raises(MonaError, match=r"pip install 'mona-tune\[language\]'"):
        plan_search(req)
    assert not (tmp_path / "runs").exists()


def test_the_otdd_itself_names_the_extra(without):
    from mona_tune.train.otdd import _plan

    without("ot")
    with pytest.raises(MonaError, match=r"mona-tune\[orca\]"):
        _plan(np.ones((2, 3)))


def test_installed_extras_pass(tmp_path):
    from mona_tune.config import TrainConfig
    from mona_tune.extras import check_extras

    check_extras(TrainConfig(method="orca"))  # POT is installed here (make install: every extra)
    check_extras(TrainConfig(source_model="swin_tiny_patch4_window7_224"))  # timm: no extra
