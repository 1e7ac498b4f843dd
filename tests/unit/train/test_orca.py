"""Baselines as published: ORCA's start of the embedder (shared by every method with an embedder)
and ORCA's stage 1 on the optimal-transport dataset distance."""

from __future__ import annotations

import pytest
import torch

from mona_tune.config import TrainConfig
from mona_tune.models.assemble import build_target_model
from mona_tune.models.source import SourceModel
from mona_tune.train.trainer import Trainer


def _tiny_net(in_chans: int = 3):
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=8, patch_size=2, window_size=2, embed_dim=8, depths=(1, 1),
                           num_heads=(2, 2), num_classes=3, in_chans=in_chans,
                           drop_path_rate=0.0)


def tiny_source(seed: int = 0) -> SourceModel:
    torch.manual_seed(seed)
    return SourceModel("tiny", _tiny_net(), (0.5,) * 3, (0.5,) * 3, _tiny_net)


# ---------------------------------------------------------------- the embedder's start
@pytest.mark.parametrize("in_channels", [1, 3, 6])
def test_target_projection_comes_from_the_source(one_thread, in_channels):
    """An image replicated over the target's channels is projected exactly as the source projects
    it (1 channel: a grey image; 6: the RGB image twice), and the LayerNorm is the source's."""
    src = tiny_source()
    model = build_target_model(src, in_channels, (8, 8), "dense", 1, (8, 8))
    e, s = model.embedder, src.patch_embed
    image = torch.randn(2, 3, 8, 8)
    if in_channels == 1:
        image = image[:, :1].expand(-1, 3, -1, -1)
        target_input = image[:, :1]
    else:
        target_input = image.repeat(1, in_channels // 3, 1, 1)
    torch.testing.assert_close(e.proj(target_input), s.proj(image), rtol=1e-5, atol=1e-6)
    if in_channels == 3:
        assert torch.equal(e.proj.weight, s.proj.weight)
    assert torch.equal(e.proj.bias, s.proj.bias)
    assert torch.equal(e.norm.weight, s.norm.weight) and torch.equal(e.norm.bias, s.norm.bias)
    # the whole embedder then gives the source's tokens
    torch.testing.assert_close(e(target_input), s(image), rtol=1e-5, atol=1e-6)


def test_scratch_embedder_stays_random(one_thread):
    src = tiny_source()
    model = build_target_model(src, 3, (8, 8), "dense", 1, (8, 8), random_encoder=True)
    assert not torch.equal(model.embedder.proj.weight, src.patch_embed.proj.weight)


def test_1d_embedder_keeps_a_random_projection_and_the_source_norm(one_thread):
    src = tiny_source()
    with torch.no_grad():
        src.patch_embed.norm.weight.mul_(2.0)  # not LayerNorm's default, so a copy shows
    model = build_target_model(src, 2, (30,), "classes", 4)
    assert torch.equal(model.embedder.norm.weight, src.patch_embed.norm.weight)


TINY_RUN = dict(n_train=24, n_test=8, batch_size=8, source_batch_size=8, warmup_epochs=1,
                epochs=1, probe_samples=40, num_threads=1, device="cpu", seed=3,
                source_data="digits")


def test_methods_with_an_embedder_start_bit_identical(fast_source):
    """mona, emb, orca and ft differ only in stage 1: the same seed builds the same model."""
    trainers = {m: Trainer(TrainConfig(method=m, **TINY_RUN)) for m in ("mona", "emb", "orca", "ft")}
    reference = trainers["mona"].model.state_dict()
    for method, trainer in trainers.items():
        sd = trainer.model.state_dict()
        assert sd.keys() == reference.keys()
        for k, v in sd.items():
            assert torch.equal(v, reference[k]), (method, k)
    # the projection really is the source's (adapted to the target's channels where they differ)
    from timm.models import adapt_input_conv

    trainer = trainers["ft"]
    src_w = trainer.source.patch_embed.proj.weight
    target_w = trainer.model.embedder.proj.weight
    assert torch.equal(target_w, adapt_input_conv(target_w.shape[1], src_w, src_w.shape[1]))
    assert torch.equal(trainer.model.embedder.proj.bias, trainer.source.patch_embed.proj.bias)
    # scratch: a random embedder and encoder
    scratch = Trainer(TrainConfig(method="scratch", **TINY_RUN)).model.state_dict()
    assert not torch.equal(scratch["embedder.proj.weight"], reference["embedder.proj.weight"])
    assert any(not torch.equal(v, reference[k]) for k, v in scratch.items()
               if k.startswith("encoder."))


# ---------------------------------------------------------------- ORCA's OTDD
def otdd_plainly(x, lx, y, ly):
    """Squared OTDD from its definition with POT's differentiable ``ot.emd2``, pair by pair."""
    import ot

    def w2(a, b):
        cost = torch.stack([torch.stack([((ai - bj) ** 2).sum() for bj in b]) for ai in a])
        return ot.emd2(torch.full((len(a),), 1 / len(a), dtype=cost.dtype),
                       torch.full((len(b),), 1 / len(b), dtype=cost.dtype), cost)

    label = {(a, b): w2(x[lx == a], y[ly == b])
             for a in lx.unique().tolist() for b in ly.unique().tolist()}
    cost = torch.stack([torch.stack([((x[i] - y[j]) ** 2).sum() + label[int(lx[i]), int(ly[j])]
                                     for j in range(len(y))]) for i in range(len(x))])
    return ot.emd2(torch.full((len(x),), 1 / len(x), dtype=cost.dtype),
                   torch.full((len(y),), 1 / len(y), dtype=cost.dtype), cost)


def labelled_points(seed=0, n=9, d=3, classes=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = 3.0 * torch.randn(classes, d, generator=g, dtype=torch.float64)
    return centres[labels] + torch.randn(n, d, generator=g, dtype=torch.float64), labels


def test_otdd_matches_its_definition_and_its_gradient_finite_differences():
    from mona_tune.train.otdd import otdd

    x, lx = labelled_points(0, n=7)
    y, ly = labelled_points(1, n=8, classes=4)
    x.requires_grad_(True)
    value = otdd(x, lx, y, ly)
    torch.testing.assert_close(value, otdd_plainly(x, lx, y, ly), rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(value, x)
    assert grad.abs().max() > 0.1
    h = 1e-6
    with torch.no_grad():
        for i, k in [(0, 0), (3, 1), (6, 2), (2, 0)]:
            up, down = x.clone(), x.clone()
            up[i, k] += h
            down[i, k] -= h
            fd = (otdd(up, lx, y, ly) - otdd(down, lx, y, ly)) / (2 * h)
            assert grad[i, k].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-8), (i, k)


def test_otdd_is_zero_on_itself_and_grows_with_a_shifted_class():
    from mona_tune.train.otdd import otdd

    x, lx = labelled_points(2, n=12, d=4, classes=3)
    assert otdd(x, lx, x, lx).item() == pytest.approx(0.0, abs=1e-10)
    assert otdd(x, lx, x, (lx + 5) * 2).item() == pytest.approx(0.0, abs=1e-10)  # other names
    direction = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    values = []
    for shift in (0.0, 0.5, 1.0, 2.0, 4.0):
        moved = x.clone()
        moved[lx == 1] += shift * direction
        values.append(otdd(x, lx, moved, lx).item())
    assert values[0] == pytest.approx(0.0, abs=1e-10)
    assert all(b > a + 1e-6 for a, b in zip(values, values[1:])), values
    # the label term counts: the same points with one class relabelled are farther apart
    relabelled = lx.clone()
    relabelled[:4] = 1 - (lx[:4] == 1).long()  # mixes class 1 into the others
    assert otdd(x, lx, x, relabelled).item() > 1e-3


def test_pseudo_labels_are_the_kmeans_clusters():
    from mona_tune.train.otdd import fit_pseudo_label_centres, pseudo_labels

    g = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.0, 5.0, 10.0])
    truth = torch.arange(30) % 3
    fields = levels[truth].view(-1, 1, 1, 1) + 0.1 * torch.randn(30, 1, 4, 4, generator=g)
    centres = fit_pseudo_label_centres(fields, seed=0, k=3)
    labels = pseudo_labels(fields, centres)
    assert centres.shape == (3, 16)
    # the same partition as the three levels, up to the names of the clusters
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 3 and len({b for _, b in pairs}) == 3
    assert fit_pseudo_label_centres(fields[:2], seed=0, k=3).shape == (2, 16)


def embedded_otdd(trainer: Trainer, source_images: int = 100) -> float:
    """OTDD between the whole embedded training set (pseudo-labelled) and embedded source images."""
    from mona_tune.models.assemble import pool
    from mona_tune.train.otdd import otdd, pseudo_labels

    sd = trainer.source_data
    with torch.no_grad():
        target = pool(trainer.model.embedder(trainer.x_train))
        source = pool(trainer._embed_source(sd.x_align[:source_images]))
    labels = pseudo_labels(trainer.y_train, trainer.orca_centres)
    return otdd(target, labels, source, sd.y_align[:source_images]).item()


@pytest.mark.drift
def test_orca_stage1_through_the_trainer_lowers_the_otdd(fast_source):
    cfg = TrainConfig(**{**TINY_RUN, "method": "orca", "warmup_epochs": 3, "stage1_lr": 1e-2})
    seen: list[float] = []

    def after_epoch(trainer, m):
        assert m["stage"] == 1 and m["otdd"] > 0
        seen.append(embedded_otdd(trainer))
        if m["epoch"] == cfg.warmup_epochs:
            trainer.request_stop()

    trainer = Trainer(cfg, callback=after_epoch)
    before = embedded_otdd(trainer)
    frozen = {k: v.clone() for k, v in trainer.model.state_dict().items()
              if not k.startswith("embedder.")}
    assert trainer.fit()["stopped"]
    print("embedded OTDD before and after each stage-1 epoch", before, seen)
    assert len(seen) == 3 and seen[-1] < 0.9 * before, (before, seen)
    for k, v in trainer.model.state_dict().items():  # only the embedder moved
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
