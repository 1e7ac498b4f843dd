"""`mona-tune search --warm-start` end to end: a real local Ray, a real SQLite MLflow store, real
Optuna. A first search (asked to warm-start from a store with nothing in it: it says so and
searches cold), then searches with one fixed setting changed (n_train) warm-started from it by
name: they name what they learnt on their parent run, and their first trials are the best past
configurations, best first. A search named that is not in the store is one line, exit status 2,
before Ray does anything. A warm-started search stopped by SIGTERM and resumed keeps what it
learnt: the study holds the past trials and its own, and no queued configuration runs twice."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from proc_net import command_env, wait_for
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


def _args(folder: Path, name: str, *extra: str) -> list[str]:
    space = folder / "tiny.yaml"
    space.write_text(textwrap.dedent(TINY))
    return ["search", "--space", str(space), "--name", name, "--seed", "5",
            "--storage", str(folder / "runs"), "--tracking-uri",
            f"sqlite:///{folder / 'mlflow.db'}", "--quiet", "--no-register", *extra]


def _trials(uri: str, search: str) -> list:
    """The search's trial runs in the order they started."""
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`mona.search_name` = '{search}' and "
                                            "tags.`mona.role` = 'trial'")
    return sorted(runs, key=lambda r: r.info.start_time)


def _config(run) -> tuple[float, float]:
    return float(run.data.params["lam"]), float(run.data.params["lr"])


@pytest.fixture(scope="module")
def first(ray_address, tmp_path_factory):
    """The first search, cold; its folder, store and its trials' (value, config), best first."""
    folder = tmp_path_factory.mktemp("warm-e2e")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    out = folder / "first.out"
    with open(out, "w") as fh, pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", fh)
        assert main(_args(folder, "first", "--warm-start")) == 0
    text = out.read_text()
    assert "warm start: no past search of the task in sqlite:///" in text, text[-2000:]
    assert "searching cold" in text and "  incumbent: best " in text
    assert (folder / "runs" / "first" / "incumbent.png").is_file()
    past = sorted((r.data.metrics["val_rel_l2"], _config(r)) for r in _trials(uri, "first")
                  if r.data.tags.get("mona.outcome") in ("completed", "stopped_early")
                  and math.isfinite(r.data.metrics.get("val_rel_l2", math.nan)))
    assert len(past) == 4
    return folder, uri, [config for _, config in past]


def test_a_warm_started_search_learns_from_the_last_one(first, capsys, monkeypatch):
    folder, uri, best_first = first
    monkeypatch.chdir(folder)
    t0 = time.time()
    code = main(_args(folder, "nope-s", "--warm-start", "nope"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.time() - t0 < 20
    assert err.startswith("mona-tune: error: --warm-start nope: no search of that name") \
        and "\n" not in err
    assert not (folder / "runs" / "nope-s").exists()

    assert main(_args(folder, "second", "--warm-start", "first", "--set", "n_train=80")) == 0
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

    started = _trials(uri, "second")
    assert {_config(r) for r in started[:2]} == set(best_first[:2])
    assert all(r.data.params["n_train"] == "80" for r in started)


def test_a_resumed_warm_started_search_keeps_what_it_learnt(first, capsys, monkeypatch):
    """SIGTERM once both best past configurations reported their first stage-2 epoch (a fault
    holds them before the second), then --resume in this process."""
    folder, uri, best_first = first
    monkeypatch.chdir(folder)
    go, exp = folder / "go", folder / "runs" / "third"
    pause = [{"at": [2, 2], "kind": "pause", "until": str(go), "seconds": 300}]
    with open(folder / "third.out", "w") as out, open(folder / "third.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mona_tune.cli",
             *_args(folder, "third", "--warm-start", "first", "--set", "n_train=80")],
            cwd=folder, stdout=out, stderr=err, start_new_session=True,
            env=command_env(MONA_TUNE_FAULT=json.dumps(pause), TUNE_GLOBAL_CHECKPOINT_S="1"))
    try:
        wait_for(lambda: sum(p.stat().st_size > 0 for p in exp.glob("trial_*/result.json")) >= 2
                 or proc.poll() is not None, 300, "two trials' first report")
        assert proc.poll() is None, (folder / "third.err").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert main(["search", "--name", "third", "--resume", "--storage",
                 str(folder / "runs")]) == 0
    out = capsys.readouterr().out
    assert "the study holds 8 trials" in out, out[-3000:]  # 4 learnt + 4 run
    configs = [_config(r) for r in _trials(uri, "third")]
    assert len(configs) == 4 and set(configs[:2]) == set(best_first[:2])
    assert len(set(configs)) == 4, configs  # a queued configuration ran once
