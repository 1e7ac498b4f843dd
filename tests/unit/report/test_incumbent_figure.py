"""``report.incumbent`` and ``mona-tune best --curves``: several searches' incumbent curves from a
real SQLite store overlaid in one PNG; a search the store lacks is one line, exit status 2."""

from __future__ import annotations

import pytest
from conftest import empty_mlflow_store
from past_searches import Trial, write_search

from mona_tune.cli import main
from mona_tune.report.incumbent import plot_incumbents
from mona_tune.tracking.incumbent import IncumbentCurve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = empty_mlflow_store(tmp_path_factory.mktemp("curves") / "mlflow.db")
    write_search(uri, "cold", [Trial({"lam": 0.1}, reports=[(0, 0.2), (3000, 0.1)]),
                               Trial({"lam": 0.5}, reports=[(1000, 0.3), (4000, 0.09)])],
                 searched=("lam",), fixed={"epochs": 2})
    write_search(uri, "warm", [Trial({"lam": 0.4}, reports=[(0, 0.12), (2000, 0.085)])],
                 searched=("lam",), fixed={"epochs": 2})
    return uri


def test_best_curves_overlays_the_searches_and_prints_each_incumbent(store, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    code = main(["best", "--task", "darcy", "--curves", "cold", "warm", "--out", str(out),
                 "--tracking-uri", store])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "cold: best 0.09 reached after 4 of 4 stage-2 epochs, 4 of 4 s (trial 2)" in text
    assert "warm: best 0.085 reached after 2 of 2 stage-2 epochs, 2 of 2 s (trial 1)" in text
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_a_search_the_store_lacks_is_one_line(store, tmp_path, capsys):
    code = main(["best", "--task", "darcy", "--curves", "cold", "nope", "--out",
                 str(tmp_path / "x.png"), "--tracking-uri", store])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("mona-tune: error: --curves nope: no search of that name")
    assert not (tmp_path / "x.png").exists()


def test_a_curve_without_reports_leaves_the_figure_empty_but_written(tmp_path):
    path = plot_incumbents([IncumbentCurve(search="none")], "val_rel_l2", tmp_path / "i.png", "t")
    assert path.read_bytes().startswith(PNG_MAGIC)
