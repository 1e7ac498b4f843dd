"""The Trainer on tiny real configurations: metrics, resume equality, stage-1 freezing,
exported embedders, divergence, CIFAR-10 source data."""

from __future__ import annotations

import json
import shutil
import math

import pytest
import torch

from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError
from mona_tune.train.trainer import Trainer, TrainingDiverged

from files import write_cifar_dir


pytestmark = pytest.mark.usefixtures("fast_source")


def tiny(**kw) -> TrainConfig:
    base = dict(n_train=24, n_test=8, batch_size=8, source_batch_size=8, warmup_epochs=2,
                epochs=3, probe_samples=40, probe_every=1, num_threads=1, device="cpu")
    return TrainConfig(**{**base, **kw})


def numeric(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and "seconds" not in k}


@pytest.mark.parametrize("method", ["mona", "emb", "orca", "ft", "scratch"])
def test_every_method_runs_and_reports(method):
    seen = []
    final = Trainer(tiny(method=method, warmup_epochs=1, epochs=2),
                    callback=lambda t, m: seen.append(m)).fit()
    stages = [(m["stage"], m["epoch"], m["stage2_epoch"]) for m in seen]
    if method in ("ft", "scratch"):
        assert stages == [(2, 1, 1), (2, 2, 2)]
    else:
        assert stages == [(1, 1, 0), (2, 1, 1), (2, 2, 2)]
    for m in seen:
        assert {"stage", "epoch", "stage2_epoch", "train_loss", "val_rel_l2", "lr",
                "epoch_seconds"} <= set(m)
        assert ("source_probe_error" in m) == (m["stage"] == 2)
    if method == "mona":
        assert {"inner_loss", "outer_loss", "align_loss", "uniform_loss"} <= set(seen[0])
    if method == "orca":
        assert "otdd" in seen[0]
    assert {"task", "method", "test_rel_l2", "val_rel_l2", "best_val_rel_l2",
            "source_probe_error", "source_probe_error_pretrained", "seconds"} <= set(final)
    assert final["method"] == method and final["task"] == "darcy"
    assert all(math.isfinite(v) for v in numeric(final).values())
    assert 0 <= final["source_probe_error"] <= 1


def run_with_stop(cfg, stop_at, directory):
    """Stop after global epoch ``stop_at`` (checkpoint in the callback), restore, finish."""
    def cb(trainer, m):
        if len(trainer.history) == stop_at:
            trainer.save_checkpoint(directory)
            trainer.request_stop()

    first = Trainer(cfg, callback=cb).fit()
    assert first["stopped"]
    restored = Trainer.from_checkpoint(directory)
    final = restored.fit()
    return final, restored.history


def test_resume_gives_the_same_final_metrics(tmp_path):
    cfg = tiny(method="mona")  # 2 stage-1 epochs then 3 stage-2 epochs
    straight = Trainer(cfg)
    want = straight.fit()
    for stop_at in (1, 4):  # inside stage 1, inside stage 2
        got, history = run_with_stop(cfg, stop_at, tmp_path / f"ckpt{stop_at}")
        assert numeric(got) == pytest.approx(numeric(want), abs=1e-6, rel=0), stop_at
        assert [numeric(h) for h in history] == [numeric(h) for h in straight.history]


def test_checkpoint_is_complete_and_loads_weights_only(tmp_path, monkeypatch):
    t = Trainer(tiny(method="emb", warmup_epochs=1, epochs=1))
    t.fit()
    t.save_checkpoint(tmp_path / "c")
    state = torch.load(tmp_path / "c" / "trainer.pt", weights_only=True)
    assert {"embedder", "encoder", "predictor", "opt1", "opt2", "sched", "rng", "stage", "epoch",
            "history", "cfg"} <= set(state)
    assert {"torch", "numpy", "python", "data_gen", "source_gen"} <= set(state["rng"])
    assert json.loads((tmp_path / "c" / "config.json").read_text())["method"] == "emb"
    with pytest.raises(MonaError, match="no trainer checkpoint"):
        Trainer.from_checkpoint(tmp_path / "nothing")
    # restoring asks torch for tensors only, whatever torch's default (False before torch 2.6)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: loads.append(kw) or real_load(*a, **kw))
    Trainer.from_checkpoint(tmp_path / "c")
    assert [kw.get("weights_only") for kw in loads] == [True]


@pytest.mark.parametrize("method", ["mona", "orca"])
def test_only_the_embedder_moves_in_stage_1(method):
    t = Trainer(tiny(method=method, warmup_epochs=1, epochs=1))
    start = {k: v.clone() for k, v in t.model.state_dict().items()}
    snap = {}

    def cb(trainer, m):
        if m["stage"] == 1:
            snap.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
            trainer.request_stop()

    t.callback = cb
    t.fit()
    for k, v in start.items():
        assert torch.equal(v, snap[k]) != k.startswith("embedder."), k


def test_exported_embedder_round_trip_and_misfit(tmp_path):
    t = Trainer(tiny(method="mona", warmup_epochs=1, epochs=1))
    t.fit()
    t.save_embedder(tmp_path / "emb")
    meta = json.loads((tmp_path / "emb" / "embedder.json").read_text())
    assert {"task", "in_channels", "in_shape", "embed_dim", "img_size", "patch_size",
            "source_model"} <= set(meta)
    cfg = tiny(method="mona", init_embedder=str(tmp_path / "emb"))
    u = Trainer(cfg)
    assert cfg.stage1_epochs == 0 and u.stage == 2
    for a, b in zip(u.model.embedder.state_dict().values(),
                    t.model.embedder.state_dict().values()):
        assert torch.equal(a, b)

    meta["in_channels"] = 5
    (tmp_path / "emb" / "embedder.json").write_text(json.dumps(meta))
    with pytest.raises(MonaError, match="does not fit"):
        Trainer(cfg)
    meta["in_channels"], meta["source_model"] = 3, "another-model"
    (tmp_path / "emb" / "embedder.json").write_text(json.dumps(meta))
    with pytest.raises(MonaError, match="learned for source model"):
        Trainer(cfg)
    with pytest.raises(MonaError, match="not an exported embedder"):
        Trainer(tiny(init_embedder=str(tmp_path / "missing")))
    # a checkpoint of a run that started from an export restores without reading that export
    u.save_checkpoint(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "emb")
    r = Trainer.from_checkpoint(tmp_path / "ckpt")
    for a, b in zip(r.model.embedder.state_dict().values(),
                    u.model.embedder.state_dict().values()):
        assert torch.equal(a, b)


def test_diverging_run_stops_with_a_clear_error(monkeypatch):
    t = Trainer(tiny(method="ft", epochs=2))
    monkeypatch.setattr(t, "_loss", lambda pred, y: pred.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match="training diverged: the training loss is nan"):
        t.fit()


def test_cifar10_source_data(tmp_path):
    root = write_cifar_dir(tmp_path / "cifar", per_batch=20)
    final = Trainer(tiny(method="mona", warmup_epochs=1, epochs=1, probe_samples=8,
                         source_data=f"cifar10:{root}")).fit()
    assert math.isfinite(final["test_rel_l2"])
    assert final["source_model"].startswith("embedded-swin-")


def test_device_checks():
    if not torch.cuda.is_available():
        with pytest.raises(MonaError, match="CUDA is not available"):
            Trainer(tiny(device="cuda"))
    with pytest.raises(MonaError, match="unknown device"):
        Trainer(tiny(device="gpu0"))
