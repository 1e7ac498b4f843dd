"""The source probe: which encoder it scores, on which images, and that it can tell them apart.

Oracles independent of the probe's own code: split indices checked as sets, features built to be
memorisable but meaningless, the probe images compared byte for byte with the other source parts,
and encoders damaged on purpose.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from mona_tune.config import TrainConfig
from mona_tune.train import loaded
from mona_tune.train.probe import (
    linear_probe_error,
    probe_estimate,
    probe_splits,
    source_probe,
)
from mona_tune.train.trainer import Trainer

PROBE_IMAGES = 160

# One source model and one set of source data (``load_source_data``, cached by ``loaded``) for
# the whole module: the trainers below share them.
pytestmark = pytest.mark.usefixtures("fast_source")


def clearly_above(a: float, se_a: float, b: float, se_b: float) -> bool:
    """``a`` exceeds ``b`` by more than twice the standard error of their difference."""
    return a - b > 2 * math.hypot(se_a, se_b)


def tiny(**kw) -> TrainConfig:
    base = dict(method="ft", n_train=24, n_test=8, batch_size=8, epochs=1, lr=1e-7,
                probe_samples=PROBE_IMAGES, num_threads=1, device="cpu")
    return TrainConfig(**{**base, **kw})


def labels_of(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(c, k) for k, c in enumerate(counts)])


def test_splits_never_score_what_they_fit_and_score_every_image_once_per_repeat():
    labels = np.random.default_rng(1).permutation(labels_of([40, 30, 20, 10]))
    splits = probe_splits(labels, folds=5, repeats=3, seed=0)
    assert len(splits) == 15
    for fit, score in splits:
        assert set(fit).isdisjoint(score) and len(fit) + len(score) == len(labels)
        # stratified: each class's share of a scored fold is its share of the whole, ±1 image
        for k, total in enumerate([40, 30, 20, 10]):
            assert abs((labels[score] == k).sum() - total / 5) <= 1
    for r in range(3):
        scored = np.concatenate([s for _, s in splits[5 * r:5 * r + 5]])
        assert sorted(scored) == list(range(len(labels)))
    # the repeats are different shuffles, the seed fixes them
    assert not np.array_equal(splits[0][1], splits[5][1])
    again = probe_splits(labels, folds=5, repeats=3, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_fewer_folds_when_a_class_is_small():
    splits = probe_splits(labels_of([10, 10, 3]), folds=5, repeats=1)
    assert len(splits) == 3 and all(set(f).isdisjoint(s) for f, s in splits)
    single = probe_splits(labels_of([10, 10, 1]), folds=5, repeats=2)
    assert len(single) == 4 and all(set(f).isdisjoint(s) for f, s in single)


def test_estimate_is_the_mean_of_the_fold_errors_with_the_corrected_standard_error():
    rng = np.random.default_rng(0)
    labels = labels_of([30, 30, 30])
    features = rng.standard_normal((90, 4)) + labels[:, None] * 0.8  # partly separable
    errors = [linear_probe_error(features, labels, f, s) for f, s in probe_splits(labels)]
    assert len(set(errors)) > 1
    est = probe_estimate(features, labels)
    j, ratio = len(errors), (90 / 5) / (90 - 90 / 5)
    assert est.splits == j
    assert est.error == pytest.approx(sum(errors) / j, abs=1e-12)
    assert est.se == pytest.approx(math.sqrt((1 / j + ratio) * np.var(errors, ddof=1)), rel=1e-9)


class Memoriser(nn.Module):
    """Features that identify every image and say nothing about its class: sin of a random
    projection at a huge frequency. 512 of them let a linear probe fit any labelling of the few
    images it is fitted on (fewer than 256), and generalise to none."""

    def __init__(self, width: int, dim: int = 256):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(width, dim, generator=torch.Generator().manual_seed(3)))

    def forward(self, tokens):  # (N, width) -> (N, 1, 1, dim), what ``pool`` expects
        return torch.sin(1e3 * tokens @ self.proj)[:, None, None, :]


@pytest.mark.drift
def test_features_that_memorise_the_fit_samples_do_not_score_well():
    data = loaded.source_data(tiny())
    flat = data.x_probe.flatten(1).float() / 255  # the "embedder": the raw pixels

    encoder = Memoriser(flat.shape[1])
    est = source_probe(encoder, lambda images: images.flatten(1).float() / 255, data.x_probe,
                       data.y_probe)
    chance = 1 - np.bincount(data.y_probe.numpy()).max() / len(data.y_probe)
    assert est.error > 0.8 * chance, est
    # whereas the same probe does fit its own samples perfectly: scored there it would be ~0
    feats = encoder(flat).flatten(1).detach().double().numpy()
    fit, _ = probe_splits(data.y_probe.numpy())[0]
    assert linear_probe_error(feats, data.y_probe.numpy(), fit, fit) == 0.0


def test_probe_images_are_disjoint_from_pretraining_and_alignment_images():
    data = loaded.source_data(tiny())  # load_source_data(None, PROBE_IMAGES), cached

    def rows(x: torch.Tensor) -> set[bytes]:
        return {bytes(r.contiguous().numpy().tobytes()) for r in x}

    probe = rows(data.x_probe)
    assert len(data.x_probe) == PROBE_IMAGES and len(probe) > 0.95 * PROBE_IMAGES
    assert probe.isdisjoint(rows(data.x_pretrain))
    assert probe.isdisjoint(rows(data.x_align))
    assert len(torch.unique(data.y_probe)) == data.num_classes  # every class is probed


# ---------------------------------------------------------------- inside the trainer
def damage(module: nn.Module, seed: int = 0) -> None:
    """Every weight replaced by standard normal noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def test_the_trainer_probes_its_own_encoder_and_damage_shows():
    def damage_after_first_epoch(trainer, metrics):  # runs after that epoch's probe
        if metrics["stage2_epoch"] == 1:
            damage(trainer.model.encoder)

    trainer = Trainer(tiny(epochs=2, probe_every=1), callback=damage_after_first_epoch)
    final = trainer.fit()
    sd = trainer.source_data

    def probe_of(encoder):
        return source_probe(encoder, trainer._embed_source, sd.x_probe, sd.y_probe)

    # the reported error is that of the trainer's (fine-tuned) encoder, recomputed here
    got = probe_of(trainer.model.encoder)
    assert final["source_probe_error"] == pytest.approx(got.error, abs=1e-12)
    assert final["source_probe_error_se"] == pytest.approx(got.se, abs=1e-12)
    intact, damaged = trainer.history
    assert damaged["source_probe_error"] == final["source_probe_error"]
    assert 0 < intact["source_probe_error_se"] < 0.2 and 0 < damaged["source_probe_error_se"] < 0.2
    # damage to the trainer's encoder shows in its probe, not in the pretrained reference
    assert clearly_above(damaged["source_probe_error"], damaged["source_probe_error_se"],
                         intact["source_probe_error"], intact["source_probe_error_se"])
    pretrained = probe_of(trainer.source.body())  # a fresh copy of the source model's encoder
    assert final["source_probe_error_pretrained"] == pytest.approx(pretrained.error, abs=1e-12)


@pytest.mark.drift
def test_a_damaged_encoder_scores_worse_than_the_pretrained_one():
    cfg = tiny()
    src, sd = loaded.source_model(cfg), loaded.source_data(cfg)
    embedder = copy.deepcopy(src.patch_embed)

    def embed(images):
        return embedder(src.prepare(images))

    pretrained = source_probe(src.body(), embed, sd.x_probe, sd.y_probe)
    noisy = src.body()
    damage(noisy, seed=1)
    damaged = source_probe(noisy, embed, sd.x_probe, sd.y_probe)
    assert clearly_above(damaged.error, damaged.se, pretrained.error, pretrained.se)
