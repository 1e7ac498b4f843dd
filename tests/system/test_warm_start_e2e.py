"""`mona-tune search --warm-start` end to end: a real local Ray, a real SQLite MLflow store, real
Optuna. A first search (asked to warm-start from a store with nothing in it: it says so and
searches cold), then a second with one fixed setting changed (n_train) warm-started from it by
name: it names what it learnt on its parent run, and its first trials are the best past
configurations, best first. A search named that is not in the store is one line, exit status 2,
before Ray does anything."""

from __future__ import annotations

import math
import textwrap
import time

import pytest
from services import local_ray

from mona_tune.cli import main
from mona_tune.tracking import mlflow_runs as mr

pytestmark = pytest.mark.slow

TINY = """
searched:
  lam: {uniform: [0.0, 1.0]}
  lr: {loguniform: [1.0e-4, 1.0e-2]}
fixed: {warmup_epochs: 1, epochs: 2, batch_size: 16, n_train: 60, n_test: 16, resolution: 29,
        device: cpu}
budget: {num_samples: 4, max_concurrent: 2}
scheduler: {kind: fifo}
"""


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    with local_ray(tmp_path_factory.mktemp("faults") / "faults.json") as address:
        yield address


def _search(tmp_path, name: str, *extra: str) -> int:
    space = tmp_path / "tiny.yaml"
    space.write_text(textwrap.dedent(TINY))
    return main(["search", "--space", str(space), "--name", name, "--seed", "5",
                 "--storage", str(tmp_path / "runs"), "--tracking-uri",
                 f"sqlite:///{tmp_path / 'mlflow.db'}", "--quiet", "--no-register", *extra])


def _trials(uri: str, search: str) -> list:
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    return client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`mona.search_name` = '{search}' and "
                                            "tags.`mona.role` = 'trial'")


def test_a_warm_started_search_learns_from_the_last_one(ray_address, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _search(tmp_path, "first", "--warm-start") == 0
    out = capsys.readouterr().out
    assert "warm start: no past search of the task in sqlite:///" in out, out[-2000:]
    assert "searching cold" in out and "  incumbent: best " in out
    assert (tmp_path / "runs" / "first" / "incumbent.png").is_file()

    past = sorted((r.data.metrics["val_rel_l2"], float(r.data.params["lam"]),
                   float(r.data.params["lr"])) for r in _trials(uri, "first")
                  if r.data.tags.get("mona.outcome") in ("completed", "stopped_early")
                  and math.isfinite(r.data.metrics.get("val_rel_l2", math.nan)))
    assert len(past) == 4

    t0 = time.time()
    code = _search(tmp_path, "nope-s", "--warm-start", "nope")
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.time() - t0 < 20
    assert err.startswith("mona-tune: error: --warm-start nope: no search of that name") \
        and "\n" not in err
    assert not (tmp_path / "runs" / "nope-s").exists()

    assert _search(tmp_path, "second", "--warm-start", "first", "--set", "n_train=80") == 0
    out = capsys.readouterr().out
    assert ("warm start: learnt from 4 trials of first (4); their settings differ in n_train "
            "(60 there, 80 here); the best 2 configurations run first") in out, out[-3000:]

    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    parent = client.search_runs([exp.experiment_id],
                                filter_string="tags.`mona.search_name` = 'second' and "
                                              "tags.`mona.role` = 'search'")[0]
    assert parent.data.params["warm_start"] == "first"
    assert parent.data.params["warm_start_searches"] == "first:4"
    assert parent.data.params["warm_start_trials"] == "4"
    history = client.get_metric_history(parent.info.run_id, "incumbent_val_rel_l2")
    assert history and history[-1].step == 4 * 2  # 4 trials x 2 stage-2 epochs (FIFO)

    started = sorted(_trials(uri, "second"), key=lambda r: r.info.start_time)
    firsts = {(float(r.data.params["lam"]), float(r.data.params["lr"])) for r in started[:2]}
    assert firsts == {(lam, lr) for _, lam, lr in past[:2]}
    assert all(r.data.params["n_train"] == "80" for r in started)
