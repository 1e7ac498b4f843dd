"""The trainer's wiring, each part against an oracle written here (not the trainer's own code):

- the reported metrics recomputed from the model's raw predictions (decoded with normalisation
  statistics computed here, on the right split, rel-L2 written here);
- the training loss decoded before it is taken;
- one stage-1 step of ``mona``: the embedder moves by the AdamW step (written here) of the gradient
  ``stage1.mona_gradient`` gives for this λ, this α and these source labels, and not by the one of
  another λ, another α or shuffled labels;
- stage 2 moves every parameter; ``scratch`` starts from a random encoder, ``ft`` from the
  pretrained one;
- the learning-rate schedule (linear warm-up then cosine decay) at every step;
- the best validation value is the lowest of a lower-is-better metric.

Tiny data (22 training samples), the embedded source model trained for 2 epochs, no Ray.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.io
import torch

from mona_tune.config import TrainConfig
from mona_tune.train.stage1 import mona_gradient
from mona_tune.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("fast_source")

EPS = 1e-5  # the normaliser's std guard (FNO's UnitGaussianNormalizer)
ADAM_EPS = 1e-8  # torch's AdamW default


def tiny(**kw) -> TrainConfig:
    base = dict(n_train=24, n_test=8, batch_size=32, source_batch_size=8, warmup_epochs=1,
                epochs=1, probe_samples=40, num_threads=1, device="cpu")
    return TrainConfig(**{**base, **kw})


def decode(pred: torch.Tensor, y_fit: torch.Tensor) -> torch.Tensor:
    """Undo a per-grid-point Gaussian normalisation fitted on the training targets ``y_fit``."""
    return pred * (y_fit.std(0) + EPS) + y_fit.mean(0)


def rel_l2(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample ‖pred − y‖₂ / ‖y‖₂."""
    num = ((pred - y) ** 2).sum(dim=(1, 2, 3)).sqrt()
    return num / (y**2).sum(dim=(1, 2, 3)).sqrt()


@torch.no_grad()
def metric_of(model, x, y, y_fit) -> float:
    model.eval()
    try:
        return float(rel_l2(decode(model(x), y_fit), y).mean())
    finally:
        model.train()


def stop_after(n: int):
    def cb(trainer, m):
        if len(trainer.history) == n:
            trainer.request_stop()
    return cb


# ---------------------------------------------------------------- metrics, splits, schedule
@pytest.fixture(scope="module")
def ft_run():
    """``ft``, 3 epochs of 3 steps, no weight decay: the trainer, its initial model, the result."""
    cfg = tiny(method="ft", epochs=3, batch_size=8, lr_warmup_epochs=1.0, weight_decay=0.0,
               lr=1e-3)
    trainer = Trainer(cfg)
    initial = copy.deepcopy(trainer.model)
    final = trainer.fit()
    return trainer, initial, final


def test_reported_metrics_are_the_decoded_predictions_on_the_right_split(ft_run):
    trainer, _, final = ft_run
    d = trainer.data
    test = metric_of(trainer.model, d.x_test, d.y_test, d.y_train)
    val = metric_of(trainer.model, d.x_val, d.y_val, d.y_train)
    assert final["test_rel_l2"] == pytest.approx(test, rel=1e-5)
    assert final["val_rel_l2"] == pytest.approx(val, rel=1e-5)
    assert trainer.history[-1]["val_rel_l2"] == pytest.approx(val, rel=1e-5)
    # the splits differ, so a metric on the wrong one would show
    assert abs(test - val) > 1e-3
    train = metric_of(trainer.model, d.x_train, d.y_train, d.y_train)
    assert abs(train - val) > 1e-3
    # an undecoded prediction is far off (the targets are ~1e-2, normalised ones ~1)
    with torch.no_grad():
        trainer.model.eval()
        raw = float(rel_l2(trainer.model(d.x_test), d.y_test).mean())
        trainer.model.train()
    assert raw > 10 * test


def test_splits_come_from_the_files(ft_run):
    """Validation rows are training-file rows not trained on; test rows are the test file's."""
    trainer, _, _ = ft_run
    d = trainer.data
    train_path, test_path = (p.strip() for p in d.info["data_files"].split(","))
    u_train_file = scipy.io.loadmat(train_path)["sol"]
    u_test_file = scipy.io.loadmat(test_path)["sol"]

    def rows(y: torch.Tensor, file_u: np.ndarray) -> list[int]:
        flat = file_u.reshape(len(file_u), -1)
        out = []
        for sample in y.reshape(len(y), -1).double().numpy():
            hits = np.flatnonzero(np.abs(flat - sample).max(1) < 1e-6)
            assert len(hits) == 1
            out.append(int(hits[0]))
        return out

    train_rows = rows(d.y_train, u_train_file)
    val_rows = rows(d.y_val, u_train_file)
    assert len(val_rows) == 2 and not set(val_rows) & set(train_rows)
    assert len(set(train_rows) | set(val_rows)) == 24
    assert rows(d.y_test, u_test_file) == list(range(8))


def test_training_loss_is_taken_on_decoded_predictions():
    """With learning rates of 1e-12 the model does not move: each epoch's training loss is the
    mean rel-L2 of the initial model's decoded predictions on the training set."""
    cfg = tiny(method="emb", batch_size=8, stage1_lr=1e-12, lr=1e-12)
    trainer = Trainer(cfg)
    d = trainer.data
    want = metric_of(trainer.model, d.x_train, d.y_train, d.y_train)
    trainer.fit()
    assert [h["stage"] for h in trainer.history] == [1, 2]
    for h in trainer.history:
        assert h["train_loss"] == pytest.approx(want, rel=1e-4)
    assert trainer.history[0]["lr"] == 1e-12  # stage 1 reports the embedder's learning rate


def schedule(step: int, total: int, warm: int) -> float:
    """Linear warm-up to 1 over ``warm`` steps, then a half cosine from 1 to 0 at ``total``."""
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))


def test_learning_rate_schedule(ft_run):
    trainer, _, _ = ft_run
    assert trainer.steps_per_epoch == 3  # 22 samples, batches of 8
    # the learning rate used by the last step of each epoch: steps 2, 5, 8 of 9, warm-up 3
    got = [h["lr"] for h in trainer.history]
    want = [1e-3 * schedule(s, 9, 3) for s in (2, 5, 8)]
    assert got == pytest.approx(want, rel=1e-9)
    assert want == pytest.approx([1e-3, 0.75e-3, 1e-3 * (1 - math.sqrt(3) / 2) / 2])
    # every step, read from a fresh trainer's optimiser (warm-up of 1.5 epochs = 5 steps of 12)
    fresh = Trainer(tiny(method="ft", epochs=4, batch_size=8, lr_warmup_epochs=5 / 3, lr=2e-3))
    seen = []
    for _ in range(12):
        seen.append(fresh.opt2.param_groups[0]["lr"])
        fresh.opt2.step()
        fresh.sched.step()
    assert seen == pytest.approx([2e-3 * schedule(s, 12, 5) for s in range(12)], rel=1e-9)


def test_best_validation_is_the_lowest(ft_run):
    trainer, _, final = ft_run
    vals = [h["val_rel_l2"] for h in trainer.history]
    assert len(vals) == 3 and min(vals) < max(vals)
    assert final["best_val_rel_l2"] == min(vals)
    assert final["val_rel_l2"] == vals[-1]


def test_stage_2_moves_every_parameter(ft_run):
    trainer, initial, _ = ft_run
    before = dict(initial.named_parameters())
    still = [n for n, p in trainer.model.named_parameters() if torch.equal(p, before[n])]
    assert still == []
    for part in ("embedder", "encoder", "predictor"):
        assert any(n.startswith(part + ".") for n in before)


def test_scratch_starts_from_a_random_encoder_ft_and_mona_from_the_pretrained_one():
    def encoder_state(method):
        t = Trainer(tiny(method=method))
        return t.model.encoder.state_dict(), t.source.body().state_dict()

    pretrained = None
    for method in ("ft", "mona"):
        state, pretrained = encoder_state(method)
        assert state.keys() == pretrained.keys()
        assert all(torch.equal(state[k], pretrained[k]) for k in state)
    state, _ = encoder_state("scratch")
    weights = [k for k, v in pretrained.items() if k.endswith("weight") and v.dim() >= 2]
    assert len(weights) >= 4
    assert all(not torch.allclose(state[k], pretrained[k]) for k in weights)


# ---------------------------------------------------------------- one stage-1 step
def adamw_first_step(p: torch.Tensor, g: torch.Tensor, lr: float, wd: float) -> torch.Tensor:
    """AdamW's first step: bias-corrected moments are g and g², so the step is g / (|g| + eps)."""
    return p * (1 - lr * wd) - lr * g / (g.abs() + ADAM_EPS)


def clipped(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(norm) + 1e-6))
    return [g * scale for g in grads]


def source_batch_is_labelled_consistently(trainer, xs, ys) -> None:
    """Every source token row is the embedding of an alignment image of the label beside it."""
    sd = trainer.source_data
    with torch.no_grad():
        all_tokens = trainer.source_embedder(trainer.source.prepare(sd.x_align))
    flat = all_tokens.flatten(1)
    for tok, label in zip(xs.flatten(1), ys):
        j = int(torch.argmin((flat - tok).abs().amax(1)))
        assert torch.allclose(flat[j], tok, atol=1e-6)
        assert int(sd.y_align[j]) == int(label)


def test_one_mona_step_follows_the_stage1_gradient():
    lr, wd, lam, alpha = 1e-3, 5e-3, 1.0, 1.0
    cfg = tiny(method="mona", lam=lam, inner_lr=alpha, stage1_lr=lr, weight_decay=wd,
               epochs=1, grad_clip=1.0)
    trainer = Trainer(cfg, callback=stop_after(1))
    assert trainer.steps_per_epoch == 1
    model = copy.deepcopy(trainer.model)
    data_state = trainer.data_gen.get_state()
    source_state = trainer.source_gen.get_state()
    xs, ys = trainer._source_batch()
    trainer.source_gen.set_state(source_state)
    source_batch_is_labelled_consistently(trainer, xs, ys)
    assert len(torch.unique(ys)) >= 2

    order = torch.randperm(len(trainer.x_train), generator=torch.Generator().set_state(data_state))
    x, y = trainer.x_train[order], trainer.y_train[order]
    y_fit = trainer.data.y_train

    def loss_fn(pred, target):
        return rel_l2(decode(pred, y_fit), target).mean()

    logs = {}

    def expected_step(lam_, alpha_, labels):
        grads, logs[lam_, alpha_, labels is ys] = mona_gradient(
            model, x, y, loss_fn, xs, labels, inner_lr=alpha_, lam=lam_)
        return [adamw_first_step(p.detach(), g, lr, wd)
                for p, g in zip(model.embedder.parameters(), clipped(list(grads), 1.0))]

    out = trainer.fit()
    assert out["stopped"] and trainer.history[0]["stage"] == 1
    reported = trainer.history[0]
    got = [p.detach() for p in trainer.model.embedder.parameters()]

    def gap(want):
        return max(float((a - b).abs().max()) for a, b in zip(got, want))

    assert gap(expected_step(lam, alpha, ys)) < 1e-7
    # one step: the epoch's losses are that step's
    want = logs[lam, alpha, True]
    assert reported["train_loss"] == pytest.approx(float(want["loss"]), rel=1e-6)
    for key in ("inner_loss", "outer_loss", "align_loss", "uniform_loss"):
        assert reported[key] == pytest.approx(float(want[key]), rel=1e-6)
    assert reported["lr"] == lr
    # each of λ, α and the labels changes the step: the trainer follows these very values
    shuffled = ys[torch.randperm(len(ys), generator=torch.Generator().manual_seed(1))]
    assert not torch.equal(shuffled, ys)
    for wrong in (expected_step(0.0, alpha, ys), expected_step(lam, 0.1, ys),
                  expected_step(lam, alpha, shuffled)):
        assert gap(wrong) > 1e-4
    # the encoder and predictor did not move
    for part in ("encoder", "predictor"):
        for a, b in zip(getattr(trainer.model, part).parameters(),
                        getattr(model, part).parameters()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("size, counts", [(8, [2, 2, 2, 2]), (7, [3, 2, 2]), (2, [2])])
def test_source_batches_are_class_balanced(size, counts):
    """``source_batch_size // 2`` classes in equal shares (the remainder to the first ones), so
    that the alignment loss has same-class pairs and the uniformity loss different-class ones."""
    trainer = Trainer(tiny(method="mona", source_batch_size=size))
    seen = set()
    for _ in range(3):
        xs, ys = trainer._source_batch()
        assert len(xs) == size
        labels, n = torch.unique(ys, return_counts=True)
        assert sorted(n.tolist(), reverse=True) == counts
        seen.add(tuple(labels.tolist()))
    source_batch_is_labelled_consistently(trainer, xs, ys)
    if len(counts) > 1:
        assert len(seen) > 1  # different classes from one batch to the next


def test_stage1_options_reach_the_gradient(monkeypatch):
    """``first_order`` and ``uniformity_t`` change the gradient by little (the first-order form
    approximates the second-order one), so a pass-through wrapper records what the trainer asks."""
    from mona_tune.train import stage1

    calls = []

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return mona_gradient(*args, **kwargs)

    monkeypatch.setattr(stage1, "mona_gradient", recorded)
    cfg = tiny(method="mona", first_order=True, uniformity_t=3.0, lam=0.25, inner_lr=0.5)
    Trainer(cfg, callback=stop_after(1)).fit()
    assert calls == [{"inner_lr": 0.5, "lam": 0.25, "t": 3.0, "first_order": True,
                      "loss_scale": 1.0}]


def test_divergence_names_where_it_happened(monkeypatch):
    """The second batch of the first stage-2 epoch gives a NaN loss: the error says so."""
    from mona_tune.train.trainer import TrainingDiverged

    trainer = Trainer(tiny(method="ft", batch_size=8))
    real, calls = trainer._loss, []

    def loss(pred, y):
        calls.append(1)
        return real(pred, y) * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(trainer, "_loss", loss)
    with pytest.raises(TrainingDiverged, match=r"the training loss is nan at stage 2 epoch 1 "
                                               r"step 1 \(method ft, lr 0.001,"):
        trainer.fit()
    # a finite loss whose gradient is not: sqrt(|x − x|) is 0 with an infinite slope
    trainer = Trainer(tiny(method="ft", batch_size=8))
    monkeypatch.setattr(trainer, "_loss", lambda pred, y: real(pred, y)
                        + (pred - pred.detach()).abs().sqrt().sum())
    with pytest.raises(TrainingDiverged, match=r"the gradient norm is (nan|inf) at stage 2 "
                                               r"epoch 1 step 0 "):
        trainer.fit()


def adamw(p, g, state, lr, wd, betas=(0.9, 0.98), eps=ADAM_EPS):
    """One AdamW step with bias correction (Loshchilov & Hutter), moments kept in ``state``."""
    t = state["t"] = state.get("t", 0) + 1
    m = state["m"] = betas[0] * state.get("m", 0) + (1 - betas[0]) * g
    v = state["v"] = betas[1] * state.get("v", 0) + (1 - betas[1]) * g * g
    m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
    return p * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)


def test_two_stage_2_steps_follow_clipped_adamw():
    """Two stage-2 steps (batches of 11 of 22): AdamW written here, on gradients clipped to
    norm 1e-3, learning rates 1 and 0.5 times ``lr`` (no warm-up, cosine over 2 steps)."""
    lr, wd, clip = 1e-3, 0.05, 1e-3
    cfg = tiny(method="ft", batch_size=11, lr=lr, weight_decay=wd, grad_clip=clip,
               lr_warmup_epochs=0.0)
    trainer = Trainer(cfg)
    model = copy.deepcopy(trainer.model)
    order = torch.randperm(22, generator=torch.Generator().set_state(trainer.data_gen.get_state()))
    y_fit = trainer.data.y_train
    trainer.fit()

    def replay(max_norm):
        m = copy.deepcopy(model)
        params = list(m.parameters())
        states = [{} for _ in params]
        for idx, factor in zip(order.split(11), (1.0, 0.5)):
            loss = rel_l2(decode(m(trainer.x_train[idx]), y_fit), trainer.y_train[idx]).mean()
            grads = torch.autograd.grad(loss, params)
            if max_norm is not None:
                grads = clipped(list(grads), max_norm)
            with torch.no_grad():
                for p, g, s in zip(params, grads, states):
                    p.copy_(adamw(p, g, s, lr * factor, wd))
        return params

    got = [p.detach() for p in trainer.model.parameters()]

    def gap(want):
        return max(float((a - b.detach()).abs().max()) for a, b in zip(got, want))

    assert gap(replay(clip)) < 2e-6
    assert gap(replay(None)) > 2e-5  # the clipping matters here


def test_the_stage1_registry_holds_every_method_with_a_stage_1():
    """config.Method names the methods; those with a stage 1 are registered, ft and scratch
    (no stage 1) are not, and a name cannot be registered twice."""
    from mona_tune.config import METHODS
    from mona_tune.train.stage1 import STAGE1_METHODS, register_stage1

    assert set(STAGE1_METHODS) == set(METHODS) - {"ft", "scratch"}
    assert {n: m.uses_source for n, m in STAGE1_METHODS.items()} == \
        {"mona": True, "emb": False, "orca": True}
    with pytest.raises(ValueError, match="registered twice"):
        register_stage1("emb", uses_source=False)(lambda b: None)
