"""`mona-tune search` end to end on a real local Ray cluster and a real MLflow SQLite store.

One Ray cluster serves the module. The search in `test_search_asha_mlflow_registry_best` is made
deterministic: random sampling with a fixed seed over a learning rate that is either sensible
(3e-3) or useless (1e-7), everything else fixed, so the sensible trials are the same run and never
stop one another (ASHA stops a trial strictly worse than its rung's cutoff); the trainer's
test-only fault hook holds every useless trial before its first stage-2 epoch until two sensible
ones have reported theirs (ASHA's first rung), so every useless trial is stopped at that rung
whatever the speed of the machine. The driver-kill resume of the same search is in
tests/system/test_faults.py.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from services import local_ray

from mona_tune.cli import main
from mona_tune.tracking import mlflow_runs as mr

pytestmark = pytest.mark.slow

TINY = """
searched:
  lr: {choice: [3.0e-3, 1.0e-7]}
fixed:
  lam: 0.5
  warmup_epochs: 1
  epochs: 4
  batch_size: 16
  n_train: 60
  n_test: 16
  resolution: 29
  device: cpu
budget: {num_samples: 6, max_concurrent: 2}
scheduler: {grace_period: 1, reduction_factor: 2}
"""
GOOD_LR, USELESS_LR = 3.0e-3, 1.0e-7
SEED = 11
SEQUENCE = ["good", "good", "useless", "good", "useless", "useless"]  # the lrs SEED samples


def asha_faults(folder: Path) -> list[dict]:
    """A sensible trial marks that its first stage-2 epoch reached ASHA (its report returned);
    a useless one waits before that epoch until two such marks exist (one per process: the
    sensible trials share their config)."""
    return [{"at": [2, 2], "kind": "touch", "match": {"lr": GOOD_LR},
             "path": f"{folder}/rung1_{{pid}}"},
            {"at": [2, 1], "kind": "pause", "match": {"lr": USELESS_LR},
             "until": f"{folder}/rung1_*", "count": 2, "seconds": 300}]


def check_asha_stops(grid, trials: int = 6) -> dict[str, int]:
    """What the seeded search of ``trials`` trials gives when uninterrupted: the sequence of
    learning rates, every useless trial stopped at the first rung (stage-2 epoch 1), every
    sensible one run to the end. Returns trial id -> last stage-2 epoch."""
    assert len(grid) == trials and not grid.errors
    ordered = sorted(grid, key=lambda r: r.metrics["trial_id"])
    lrs = ["good" if r.config["lr"] == GOOD_LR else "useless" for r in ordered]
    assert lrs == SEQUENCE[:trials], lrs
    stage2 = {r.metrics["trial_id"]: r.metrics["stage2_epoch"] for r in ordered}
    reached = [stage2[r.metrics["trial_id"]] for r in ordered]
    assert reached == [1 if lr == "useless" else 4 for lr in lrs], (lrs, reached)
    return stage2


@pytest.fixture(scope="module")
def faults_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults") / "faults.json"


@pytest.fixture(scope="module")
def ray_address(faults_file):
    with local_ray(faults_file) as address:
        yield address


def _space(tmp_path: Path, text: str, name: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _runs(uri: str, search: str):
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    parents = client.search_runs([exp.experiment_id],
                                 filter_string=f"tags.`mona.search_name` = '{search}' and "
                                               "tags.`mona.role` = 'search'")
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mona.search_name` = '{search}' and "
                                                "tags.`mona.role` = 'trial'")
    return client, parents, children


def _result_grid(exp_path: Path):
    """Ray's own view of the experiment (what `Tuner.fit()` returned)."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    return ResultGrid(ExperimentAnalysis(str(exp_path), default_metric="val_rel_l2",
                                         default_mode="min"))


def test_search_asha_mlflow_registry_best(ray_address, faults_file, tmp_path, capsys,
                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    faults_file.write_text(json.dumps(asha_faults(tmp_path)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space(tmp_path, TINY, "tiny.yaml")
    t0 = time.time()
    code = main(["search", "--task", "darcy", "--space", str(space), "--name", "e2e",
                 "--search", "random", "--seed", str(SEED), "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", uri, "--max-t", "4", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    print(f"search took {time.time() - t0:.1f}s")

    grid = _result_grid(tmp_path / "runs" / "e2e")
    stage2 = check_asha_stops(grid)
    stopped = [t for t, e in stage2.items() if e < 4]

    client, parents, children = _runs(uri, "e2e")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.params["task"] == "darcy" and parent.data.params["scheduler"] == "asha"
    assert parent.data.params["seed"] == str(SEED)
    assert "mona_tune_version" in parent.data.params
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"space.yaml",
                                                                          "curves.png"}
    # exactly one child per trial, each with both stages' metrics and an outcome
    by_trial = {c.data.tags["ray_trial_id"]: c for c in children}
    assert len(children) == 6 and set(by_trial) == set(stage2)
    for trial_id, c in by_trial.items():
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_rel_l2")]
        assert steps == sorted(set(steps)), "an epoch was logged twice"
        assert steps[0] == 1 and len(steps) == 1 + stage2[trial_id]  # stage 1 + stage 2 epochs
        stage = [m.value for m in client.get_metric_history(c.info.run_id, "stage")]
        assert stage[0] == 1 and stage[-1] == 2
        assert "embedder/embedder.json" in {
            a.path for a in client.list_artifacts(c.info.run_id, "embedder")}
        outcome = c.data.tags["mona.outcome"]
        if trial_id in stopped:
            assert outcome == "stopped_early"
        else:
            assert outcome == "completed"
            assert "test_rel_l2" in c.data.metrics and "source_probe_error" in c.data.metrics

    # the best: Ray's ResultGrid, the registry alias and `mona-tune best` agree. The sensible
    # trials are one run (same config and seed), so they tie: any of them may be the best, but the
    # registry, the parent's tag and the printed summary name the same one.
    best = grid.get_best_result(metric="val_rel_l2", mode="min")
    assert by_trial[best.metrics["trial_id"]].info.run_id == best.metrics["mlflow_run_id"]
    tied = {c.info.run_id for c in children
            if c.data.metrics["val_rel_l2"] == best.metrics["val_rel_l2"]}
    mv = client.get_model_version_by_alias("mona-darcy-embedder", "best")
    best_run = mv.run_id
    assert best_run in tied, (best_run, tied)
    assert parent.data.tags["mona.best_run_id"] == best_run
    best_trial = next(t for t, c in by_trial.items() if c.info.run_id == best_run)
    assert f"best trial {best_trial}" in out and best_run in out

    export = tmp_path / "exported"
    assert main(["best", "--name", "e2e", "--tracking-uri", uri, "--top", "3", "--export",
                 str(export)]) == 0
    listing = capsys.readouterr().out.splitlines()
    first_row = next(line for line in listing if line.startswith("1 ")).split()
    assert first_row[1] in tied, (first_row, tied)  # `best` may rank any tied trial first
    meta = json.loads((export / "embedder.json").read_text())
    assert meta["lam"] == pytest.approx(best.config["lam"])
    assert json.loads((export / "mona_best.json").read_text())["run_id"] == first_row[1]
    assert (tmp_path / "runs" / "e2e" / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("task", ["advection", "burgers", "diffusion-reaction",
                                  "diffusion-sorption", "waveforms"])
def test_search_a_1d_task_with_its_packaged_space(task, ray_address, faults_file,
                                                  tmp_path, capsys, monkeypatch):
    """The task's packaged space over its generated file (PDEBench's layout; the arrays layout
    for the waveform classes), trimmed to one short trial: tracked as one child run with the
    task's metric per epoch, the best embedder registered under the task's name."""
    monkeypatch.chdir(tmp_path)
    faults_file.write_text("[]")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["search", "--task", task, "--name", "s1d", "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", uri, "--num-samples", "1", "--max-t", "2",
                 "--set", "epochs=2", "--set", "n_train=40", "--set", "n_test=8",
                 "--set", "device=cpu", "--sampler", "random", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name(f"mona-tune-{task}")
    children = client.search_runs([exp.experiment_id],
                                  filter_string="tags.`mona.role` = 'trial'")
    assert len(children) == 1
    run = children[0]
    assert run.data.tags["mona.outcome"] == "completed" and run.data.params["task"] == task
    stage1 = int(run.data.params["warmup_epochs"])
    metric = "error_rate" if task == "waveforms" else "nrmse"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, f"val_{metric}")]
    assert steps == list(range(1, stage1 + 3)), steps  # every stage-1 and stage-2 epoch, once
    assert 0 <= run.data.metrics[f"test_{metric}"] < 10
    version = client.get_model_version_by_alias(f"mona-{task}-embedder", "best")
    assert version.run_id == run.info.run_id


def test_search_a_1d_task_on_a_language_source_model(ray_address, faults_file, tmp_path, capsys,
                                                     monkeypatch):
    """The paper's 1D pairing through the whole search: a RoBERTa (tiny, random weights, a
    save_pretrained directory as --weights on an offline cluster) with labelled text as source
    data; the weights folder and the text file pass the per-node check, the trial is tracked with
    the model it was aligned to."""
    from files import write_labelled_text, write_tiny_roberta

    monkeypatch.chdir(tmp_path)
    faults_file.write_text("[]")
    weights = write_tiny_roberta(tmp_path / "tiny-roberta")
    text = write_labelled_text(tmp_path / "topics.csv")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["search", "--task", "advection", "--name", "lang", "--storage",
                 str(tmp_path / "runs"), "--tracking-uri", uri, "--num-samples", "1",
                 "--max-t", "1", "--source-model", "roberta-base", "--weights", str(weights),
                 "--source-data", f"text:{text}", "--set", "epochs=1", "--set", "n_train=16",
                 "--set", "n_test=4", "--set", "probe_samples=16", "--set", "device=cpu",
                 "--sampler", "random", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    client = mr.get_client(uri)
    exp = client.get_experiment_by_name("mona-tune-advection")
    children = client.search_runs([exp.experiment_id],
                                  filter_string="tags.`mona.role` = 'trial'")
    assert len(children) == 1
    run = children[0]
    assert run.data.tags["mona.outcome"] == "completed"
    assert run.data.params["source_model"] == "roberta-base"
    assert run.data.params["source_data"] == f"text:{text}"
    assert run.data.metrics["source_probe_error"] >= 0 and run.data.metrics["test_nrmse"] > 0
    # what the trial and the driver trained on: the weights folder and the text file hashed
    import hashlib

    from mona_tune.cache import path_sha256

    prov = {k: v for k, v in run.data.params.items() if k.startswith(("data.", "source."))}
    assert prov["source.weights_sha256"] == path_sha256(weights)
    assert prov["source.data_sha256"] == hashlib.sha256(text.read_bytes()).hexdigest()
    assert prov["source.data"] == "text" and prov["source.data_path"] == str(text)
    assert prov["data.all_file"].endswith(".hdf5") and prov["data.n_test"] == "4"
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`mona.role` = 'search'")
    assert {k: parent.data.params[k] for k in prov} == prov
    assert f"sha256 {prov['data.all_sha256']}" in out


@pytest.mark.parametrize("kind", ["dense", "classes"])
def test_search_your_own_arrays(kind, ray_address, faults_file, tmp_path, capsys, monkeypatch):
    """``--task arrays`` with the packaged space: a 1D field from .npz files, or 2D class labels
    from one HDF5 file ranked by accuracy (direction max); the search ranks by the metric the
    data configure, and ``best`` finds it again."""
    import h5py
    import numpy as np

    monkeypatch.chdir(tmp_path)
    faults_file.write_text("[]")
    rng = np.random.default_rng(0)
    if kind == "dense":
        x = rng.normal(size=(40, 1, 32)).astype(np.float32)
        y = np.cumsum(x, axis=2)
        (tmp_path / "data").mkdir()
        np.savez(tmp_path / "data" / "train.npz", x=x[:32], y=y[:32])
        np.savez(tmp_path / "data" / "test.npz", x=x[32:], y=y[32:])
        data, extra, metric, mode = tmp_path / "data", [], "val_rel_l2", "min"
    else:
        y = np.arange(40) % 2
        x = rng.normal(size=(40, 2, 8, 8)).astype(np.float32) + y[:, None, None, None]
        data = tmp_path / "mine.h5"
        with h5py.File(data, "w") as f:
            for split, part in (("train", slice(0, 32)), ("test", slice(32, 40))):
                f.create_dataset(f"{split}/x", data=x[part])
                f.create_dataset(f"{split}/y", data=y[part])
        extra, metric, mode = ["--set", "metric=accuracy"], "val_accuracy", "max"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = f"my-{kind}"  # tracked under the user's own task name
    code = main(["search", "--task", "arrays", "--data-dir", str(data), "--name", "own",
                 "--task-name", name, "--storage", str(tmp_path / "runs"), "--tracking-uri", uri,
                 "--num-samples", "2", "--max-t", "1", "--set", "epochs=1",
                 "--set", "device=cpu", "--sampler", "random", "--quiet", *extra])
    out, err = capsys.readouterr()
    assert code == 0, (out + err)[-3000:]
    client = mr.get_client(uri)
    assert client.get_experiment_by_name("mona-tune-arrays") is None
    exp = client.get_experiment_by_name(f"mona-tune-{name}")
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`mona.role` = 'search'")
    assert parent[0].data.params["metric"] == metric and parent[0].data.params["mode"] == mode
    children = client.search_runs([exp.experiment_id],
                                  filter_string="tags.`mona.role` = 'trial'")
    assert len(children) == 2 and all(metric in r.data.metrics for r in children)
    assert client.get_registered_model(f"mona-{name}-embedder") is not None
    assert main(["best", "--task", name, "--tracking-uri", uri]) == 0
    assert metric in capsys.readouterr().out
