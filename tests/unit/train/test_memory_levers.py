"""The memory levers: gradient checkpointing of the encoder blocks (exact: the same gradients),
fp16 with a gradient scaler and bf16 autocast (close to float32: the meta-gradient's relative
error), and what checkpointing saves (the bytes autograd keeps for the backward pass)."""

from __future__ import annotations

import pytest
import torch
from test_stage1_gradient import mse, tiny_problem

from mona_tune.config import TrainConfig
from mona_tune.train.footprint import saved_activation_bytes
from mona_tune.train.stage1 import mona_gradient
from mona_tune.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1).double() for g in grads])


def rel_error(a, b) -> float:
    a, b = flat(a), flat(b)
    return float((a - b).norm() / b.norm())


def meta_gradient(model, x, y, xs, ys, first_order: bool, **kw):
    return mona_gradient(model, x, y, mse, xs, ys, inner_lr=0.5, lam=1.0,
                         first_order=first_order, **kw)[0]


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_checkpointing_gives_the_same_meta_gradient(first_order):
    """Recomputing each block in the backward pass, also inside the functional call at θ'f and
    through the double backward, changes nothing but rounding."""
    model, x, y, xs, ys = tiny_problem(torch.float32)
    plain = meta_gradient(model, x, y, xs, ys, first_order)
    model.encoder.grad_checkpointing = True
    checkpointed = meta_gradient(model, x, y, xs, ys, first_order)
    assert rel_error(checkpointed, plain) < 1e-5
    # the outer term is there (λ = 0 gives another gradient), so θ'f's recomputation was used
    assert rel_error(mona_gradient(model, x, y, mse, xs, ys, inner_lr=0.5, lam=0.0)[0],
                     plain) > 1e-3


def test_checkpointing_gives_the_same_stage2_gradient():
    model, x, y, _, _ = tiny_problem(torch.float32)
    params = list(model.parameters())
    plain = torch.autograd.grad(mse(model(x), y), params)
    model.encoder.grad_checkpointing = True
    again = torch.autograd.grad(mse(model(x), y), params)
    assert rel_error(again, plain) < 1e-6


def test_checkpointing_keeps_fewer_activations():
    model, x, y, xs, ys = tiny_problem(torch.float32)
    stage2 = lambda: mse(model(x), y)  # noqa: E731
    plain = saved_activation_bytes(stage2)
    model.encoder.grad_checkpointing = True
    assert saved_activation_bytes(stage2) < 0.5 * plain


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_loss_scale_scales_the_gradient_and_nothing_else(first_order):
    """fp16's scaler: the gradient returned is S times the unscaled one (θ'f unchanged)."""
    model, x, y, xs, ys = tiny_problem(torch.float64)
    plain = meta_gradient(model, x, y, xs, ys, first_order)
    scaled = meta_gradient(model, x, y, xs, ys, first_order, loss_scale=1024.0)
    assert rel_error([g / 1024.0 for g in scaled], plain) < 1e-9


# measured (embedded model, batch 4, source batch 8): second order bf16 0.0056, fp16 0.0009 at
# S = 1024 (0.023 at S = 1: float16 gradients underflow, hence the scaler); first order bf16
# 0.24, fp16 0.033 against first order in float32: its finite difference of two gradients loses
# most of its digits in low precision
@pytest.mark.parametrize("precision,first_order,bound", [
    ("bf16", False, 0.02), ("fp16", False, 0.005), ("bf16", True, 0.5), ("fp16", True, 0.1)])
@pytest.mark.usefixtures("fast_source")
def test_low_precision_meta_gradient_against_float32(precision, first_order, bound):
    """The embedded model under autocast (fp16 with the loss scaled by 1024, as its scaler
    does): the meta-gradient's relative error against float32."""
    cfg = TrainConfig(n_train=16, n_test=8, batch_size=4, source_batch_size=8, num_threads=1,
                      device="cpu", precision=precision, lam=1.0, inner_lr=0.1)
    t = Trainer(cfg)
    x, y = t.x_train[:4], t.y_train[:4]
    xs, ys = t._source_batch()
    scale = 1024.0 if precision == "fp16" else 1.0

    def grad(loss_scale=1.0):
        return mona_gradient(t.model, x, y, t._loss, xs, ys, inner_lr=0.1, lam=1.0,
                             first_order=first_order, loss_scale=loss_scale)[0]

    reference = grad()
    with t._autocast():
        low = [g / scale for g in grad(scale)]
    error = rel_error(low, reference)
    print(f"{precision} {'first' if first_order else 'second'} order: meta-gradient relative "
          f"error {error:.4f}")
    assert 0 < error < bound


@pytest.mark.usefixtures("fast_source")
def test_fp16_run_resumes_with_its_scaler(tmp_path):
    """fp16 trains through both stages with a gradient scaler whose state is checkpointed."""
    cfg = TrainConfig(n_train=16, n_test=8, batch_size=8, source_batch_size=8, warmup_epochs=1,
                      epochs=1, probe_samples=40, num_threads=1, device="cpu", precision="fp16",
                      grad_checkpointing=True)
    t = Trainer(cfg)
    assert t.scaler.is_enabled() and t.model.encoder.grad_checkpointing
    before = [p.detach().clone() for p in t.model.embedder.parameters()]
    t.stage, t.epoch = 1, 0
    m = t._run_epoch()
    assert m["stage"] == 1 and torch.isfinite(torch.tensor(m["train_loss"]))
    moved = any(not torch.equal(a, b) for a, b in zip(before, t.model.embedder.parameters()))
    assert moved or t.scaler.get_scale() < 2.0**16  # a step taken, or skipped and scale lowered
    t.save_checkpoint(tmp_path)
    again = Trainer.from_checkpoint(tmp_path)
    assert again.scaler.get_scale() == t.scaler.get_scale()
    assert again.scaler.state_dict()["_growth_tracker"] == t.scaler.state_dict()["_growth_tracker"]


def test_bf16_is_a_precision():
    assert TrainConfig(bf16=True).precision == "bf16"
    with pytest.raises(ValueError, match="bf16 true contradicts precision fp16"):
        TrainConfig(bf16=True, precision="fp16")
