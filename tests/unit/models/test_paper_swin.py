"""The paper's architecture end to end on the CPU, at batch 1: the 2D embedder on an 85×85 Darcy
sample, Swin-Base at 224 (timm's architecture with random weights from a local file, the
``--weights`` path of offline clusters), the dense head back to 85×85, through one step of MoNA's
stage 1 (second order, gradient checkpointing), one step of stage 2 and the test metric. (A whole
``fit`` adds the source probes, a few hundred Swin-Base forward passes: minutes on two cores.)"""

from __future__ import annotations

import math

import pytest
import torch

from mona_tune.models.checkpoints import random_weights_file
from mona_tune.config import TrainConfig
from mona_tune.train.trainer import Trainer

ARCH = "swin_base_patch4_window7_224"


@pytest.mark.slow
def test_swin_base_runs_a_whole_mona_trial_at_batch_1():
    cfg = TrainConfig(source_model=ARCH, weights=random_weights_file(ARCH), device="cpu",
                      method="mona", batch_size=1, source_batch_size=2, n_train=3, n_test=1,
                      warmup_epochs=1, epochs=1, probe_samples=8, num_threads=2,
                      grad_checkpointing=True)
    t = Trainer(cfg)
    assert sum(p.numel() for p in t.model.encoder.parameters()) > 85e6  # Swin-B's body
    assert t.model.embedder.grid == (56, 56)  # 224 / patch 4
    with torch.no_grad():
        pred = t.model(t.x_train[:1])
    assert pred.shape == (1, 1, 85, 85)
    before = [p.detach().clone() for p in t.model.embedder.parameters()]
    logs = t.stage1_step(t.x_train[:1], t.y_train[:1])  # second order, through checkpointing
    assert math.isfinite(float(logs["outer_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.embedder.parameters()))
    encoder = [p.detach().clone() for p in t.model.encoder.parameters()]
    loss, _ = t.stage2_step(t.x_train[1:2], t.y_train[1:2])
    assert math.isfinite(float(loss))
    assert any(not torch.equal(a, b) for a, b in zip(encoder, t.model.encoder.parameters()))
    assert math.isfinite(t.evaluate(t.x_test, t.y_test))
    assert t.source.model_id == f"{ARCH}@{ARCH}.safetensors"
