"""``mona-tune train``: the JSON line, --out/--resume, and one-line exit-2 errors."""

from __future__ import annotations

import json

import pytest

from mona_tune.cli import main

pytestmark = pytest.mark.usefixtures("fast_source")


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("# a tiny run\nn_train: 24\nn_test: 8\nbatch_size: 8\nsource_batch_size: 8\n"
                    "probe_samples: 40\nnum_threads: 1\ndevice: cpu\nepochs: 3\n")
    return path


def run(capsys, *argv):
    code = main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_line_and_out_dir(capsys, tiny_yaml, tmp_path):
    code, out, err = run(capsys, "--config", tiny_yaml, "--method", "mona", "--lam", "0.5",
                         "--inner-lr", "1e-3", "--warmup-epochs", "1", "--epochs", "2",
                         "--out", tmp_path / "run")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    final = json.loads(lines[0])
    assert final["task"] == "darcy" and final["method"] == "mona"
    assert {"test_rel_l2", "source_probe_error", "source_probe_error_pretrained",
            "seconds"} <= set(final)
    assert "stage 1 epoch 1/1" in err and "stage 2 epoch 2/2" in err  # flags beat the file
    assert (tmp_path / "run" / "checkpoint" / "trainer.pt").is_file()
    assert json.loads((tmp_path / "run" / "final.json").read_text()) == final
    assert (tmp_path / "run" / "embedder" / "embedder.json").is_file()

    # an existing run is not overwritten; --resume continues it (here: already complete)
    code, _, err = run(capsys, "--config", tiny_yaml, "--warmup-epochs", "1", "--epochs", "2",
                       "--out", tmp_path / "run")
    assert code == 2 and "--resume" in err
    code, out, err = run(capsys, "--config", tiny_yaml, "--warmup-epochs", "1", "--epochs", "2",
                         "--out", tmp_path / "run", "--resume")
    assert code == 0 and json.loads(out)["test_rel_l2"] == pytest.approx(final["test_rel_l2"])
    code, _, err = run(capsys, "--config", tiny_yaml, "--epochs", "4",
                       "--out", tmp_path / "run", "--resume")
    assert code == 2 and "other settings" in err

    # the exported embedder starts another run (stage 1 skipped)
    code, out, err = run(capsys, "--config", tiny_yaml, "--epochs", "1", "--init-embedder",
                         tmp_path / "run" / "embedder")
    assert code == 0 and "stage 1" not in err and json.loads(out)["stage1_epochs"] == 0


def test_resume_after_an_interruption(capsys, tiny_yaml, tmp_path, monkeypatch):
    from mona_tune.train.trainer import Trainer

    code, out, _ = run(capsys, "--config", tiny_yaml, "--method", "emb", "--warmup-epochs", "1",
                       "--quiet")
    want = json.loads(out)

    real_fit = Trainer.fit

    def interrupted(self):  # the process dies after the second epoch's checkpoint
        def cb(trainer, m, inner=self.callback):
            inner(trainer, m)
            if len(trainer.history) == 2:
                raise KeyboardInterrupt
        self.callback = cb
        return real_fit(self)

    monkeypatch.setattr(Trainer, "fit", interrupted)
    code, _, _ = run(capsys, "--config", tiny_yaml, "--method", "emb", "--warmup-epochs", "1",
                     "--out", tmp_path / "r", "--quiet")
    assert code == 130
    monkeypatch.setattr(Trainer, "fit", real_fit)
    code, out, err = run(capsys, "--config", tiny_yaml, "--method", "emb", "--warmup-epochs", "1",
                         "--out", tmp_path / "r", "--resume")
    assert code == 0 and "resuming" in err and "stage 2 epoch 2/3" in err
    got = json.loads(out)
    assert got["test_rel_l2"] == pytest.approx(want["test_rel_l2"], abs=1e-6)
    assert got["source_probe_error"] == pytest.approx(want["source_probe_error"], abs=1e-6)


# the per-run TrainConfig fields that had no flag before (README: `--task pdebench-darcy
# --data-dir DIR --beta 0.1`): each reaches the config and beats the same key in --config
NEW_FLAGS = [
    ("--beta", "0.5", "beta", 0.5),
    ("--resolution", "32", "resolution", 32),
    ("--val-fraction", "0.25", "val_fraction", 0.25),
    ("--n-train", "64", "n_train", 64),
    ("--n-test", "16", "n_test", 16),
    ("--weight-decay", "0", "weight_decay", 0.0),
    ("--lr-warmup-epochs", "2.5", "lr_warmup_epochs", 2.5),
    ("--grad-clip", "0.5", "grad_clip", 0.5),
    ("--grad-clip", "none", "grad_clip", None),
    ("--probe-samples", "100", "probe_samples", 100),
]


def config_of(*argv):
    from mona_tune.cli import build_parser
    from mona_tune.cli.train import build_config

    return build_config(build_parser().parse_args(["train", *map(str, argv)]))


@pytest.mark.parametrize("flag, value, field, want", NEW_FLAGS)
def test_new_flags_reach_the_config_over_the_file(tmp_path, flag, value, field, want):
    from mona_tune.config import TrainConfig

    assert TrainConfig().model_dump()[field] != want  # the flag changes something
    assert getattr(config_of(flag, value), field) == want
    in_file = 0.75 if field == "val_fraction" else 9  # valid for each field, and not `want`
    path = tmp_path / "c.yaml"
    path.write_text(f"{field}: {in_file}\ntask: pdebench-darcy\n")
    cfg = config_of("--config", path, flag, value)
    assert getattr(cfg, field) == want and cfg.task == "pdebench-darcy"  # flag beats the file
    assert getattr(config_of("--config", path), field) == in_file  # no flag: the file's value


def test_documented_pdebench_line_builds_its_config(tmp_path):
    cfg = config_of("--task", "pdebench-darcy", "--data-dir", tmp_path, "--beta", "0.1",
                    "--resolution", "64")
    assert (cfg.task, cfg.data_dir, cfg.beta, cfg.resolution) == (
        "pdebench-darcy", str(tmp_path), 0.1, 64)


def test_every_per_run_field_has_a_flag():
    """A new TrainConfig field gets a flag (its type and help from the field), or joins the short
    list of --config-only ones."""
    from mona_tune.cli import build_parser
    from mona_tune.cli.train import train_flags
    from mona_tune.config import TrainConfig

    config_only = {"uniformity_t", "betas"}
    assert set(TrainConfig.model_fields) - set(train_flags()) == config_only
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a for a in train._actions}
    for name in train_flags():
        action = by_dest[name]
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.help.startswith(TrainConfig.model_fields[name].description)
    assert by_dest["grad_clip"].type.__name__ == "float_or_none"
    assert by_dest["n_train"].type is int and by_dest["lam"].type is float
    assert by_dest["bf16"].nargs == 0 and by_dest["first_order"].nargs == 0  # switches


def test_a_1d_task_on_a_language_source_model(capsys, tmp_path):
    """``--source-model roberta-base --weights DIR --source-data text:FILE`` on advection: MoNA's
    two stages on a tiny RoBERTa (random weights, written by save_pretrained), labelled text as
    the source data, the exported embedder tied to that model; digits instead of text is one
    line and exit 2."""
    from files import write_labelled_text, write_tiny_roberta

    weights = write_tiny_roberta(tmp_path / "tiny-roberta")
    text = write_labelled_text(tmp_path / "topics.csv")
    common = ["--task", "advection", "--source-model", "roberta-base", "--weights", weights,
              "--n-train", "16", "--n-test", "4", "--batch-size", "8",
              "--source-batch-size", "6", "--probe-samples", "16", "--num-threads", "1",
              "--device", "cpu"]
    code, out, err = run(capsys, *common, "--source-data", f"text:{text}", "--method", "mona",
                         "--warmup-epochs", "1", "--epochs", "1", "--out", tmp_path / "run")
    assert code == 0, err
    final = json.loads(out)
    assert final["source_model"] == "roberta-base@tiny-roberta"
    assert final["test_nrmse"] > 0 and 0 <= final["source_probe_error"] <= 1
    assert "stage 1 epoch 1/1" in err
    spec = json.loads((tmp_path / "run" / "embedder" / "embedder.json").read_text())
    assert spec["kind"] == "1d" and spec["grid"] == [1, 64] and spec["embed_dim"] == 32
    assert spec["source_model"] == "roberta-base@tiny-roberta"

    code, _, err = run(capsys, *common, "--epochs", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "source data digits is image, but the source model roberta-base takes text" in err


def test_your_own_arrays_dense_and_classes(capsys, tmp_path):
    """``--task arrays``: 2D class labels from an HDF5 file (cross-entropy, accuracy, the
    classification head) and a 1D field from .npz files, each one short MoNA run; no data
    folder is one line and exit 2."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    x = rng.normal(size=(48, 1, 12, 12)).astype(np.float32) + labels[:, None, None, None]
    with h5py.File(tmp_path / "shapes.h5", "w") as f:
        for split, part in (("train", slice(0, 36)), ("test", slice(36, 48))):
            f.create_dataset(f"{split}/x", data=x[part])
            f.create_dataset(f"{split}/y", data=labels[part])
    common = ["--task", "arrays", "--method", "mona", "--warmup-epochs", "1", "--epochs", "1",
              "--batch-size", "8", "--source-batch-size", "8", "--probe-samples", "40",
              "--num-threads", "1", "--device", "cpu"]
    code, out, err = run(capsys, *common, "--data-dir", tmp_path / "shapes.h5",
                         "--metric", "accuracy")
    assert code == 0, err
    final = json.loads(out)
    assert final["task"] == "arrays" and 0 <= final["test_accuracy"] <= 1
    assert "best_val_accuracy" in final

    u = rng.normal(size=(30, 1, 40)).astype(np.float32)
    (tmp_path / "field").mkdir()
    np.savez(tmp_path / "field" / "train.npz", x=u[:24], y=np.cumsum(u[:24], axis=2))
    np.savez(tmp_path / "field" / "test.npz", x=u[24:], y=np.cumsum(u[24:], axis=2))
    code, out, err = run(capsys, *common, "--data-dir", tmp_path / "field")
    assert code == 0, err
    assert json.loads(out)["test_rel_l2"] > 0

    code, _, err = run(capsys, "--task", "arrays", "--epochs", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "task arrays needs --data-dir" in err


def test_provenance_params_land_in_mlflow_and_hashes_come_from_the_cache(capsys, tiny_yaml,
                                                                         tmp_path):
    """A tracked run logs what it trains on; a second run takes the data file's hash from the
    cache (an entry changed on purpose shows through) and a changed file is hashed again."""
    import hashlib
    import os
    from pathlib import Path

    import mlflow

    from mona_tune import cache

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def params_of_run(*argv):
        code, _, err = run(capsys, "--config", tiny_yaml, "--epochs", "1", "--warmup-epochs",
                           "0", "--quiet", "--tracking-uri", uri, *argv)
        assert code == 0, err
        runs = mlflow.MlflowClient(uri).search_runs(
            [mlflow.MlflowClient(uri).get_experiment_by_name("mona-tune-darcy").experiment_id],
            order_by=["attributes.start_time DESC"])
        assert runs[0].info.status == "FINISHED" and runs[0].data.tags["mona.role"] == "train"
        return runs[0].data.params, err

    params, err = params_of_run()
    train_file = Path(params["data.train_file"])
    want = hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert params["data.train_sha256"] == want
    assert params["data.train_bytes"] == str(train_file.stat().st_size)
    assert params["data.test_sha256"] == hashlib.sha256(
        Path(params["data.test_file"]).read_bytes()).hexdigest()
    assert (params["data.n_train"], params["data.n_val"], params["data.n_test"]) == ("22", "2",
                                                                                     "8")
    assert params["data.dir"] == "embedded (generated)"
    assert params["source.model"].startswith("embedded-swin-")
    assert params["source.weights_sha256"] == "embedded" and params["source.data"] == "digits"
    assert params["scale"] == ""  # not declared
    assert f"train file {train_file} ({train_file.stat().st_size} bytes, sha256 {want})" in err

    # the cache entry of the file, altered: the next run reports what the cache says
    (entry,) = [e for e in cache.cache_dir("file-hashes").glob("*.json")
                if json.loads(e.read_text())["path"] == str(train_file.resolve())]
    entry.write_text(entry.read_text().replace(want, "c" * 64))
    params, _ = params_of_run("--seed", "1")
    assert params["data.train_sha256"] == "c" * 64
    # the file touched (a new mtime): hashed again
    st = train_file.stat()
    os.utime(train_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.file_sha256(train_file) == want
