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
                epochs=1, probe_samples=40, num_threads=1, device="cpu", seed=3)


def test_methods_with_an_embedder_start_bit_identical(fast_source):
    """mona, emb, orca and ft differ only in stage 1: the same seed builds the same model."""
    models = {m: Trainer(TrainConfig(method=m, **TINY_RUN)).model.state_dict()
              for m in ("mona", "emb", "orca", "ft")}
    reference = models.pop("mona")
    for method, sd in models.items():
        assert sd.keys() == reference.keys()
        for k, v in sd.items():
            assert torch.equal(v, reference[k]), (method, k)
    # the projection really is the source's (adapted to the target's channels where they differ)
    from timm.models import adapt_input_conv

    trainer = Trainer(TrainConfig(method="ft", **TINY_RUN))
    src_w = trainer.source.patch_embed.proj.weight
    target_w = trainer.model.embedder.proj.weight
    assert torch.equal(target_w, adapt_input_conv(target_w.shape[1], src_w, src_w.shape[1]))
    assert torch.equal(trainer.model.embedder.proj.bias, trainer.source.patch_embed.proj.bias)
    # scratch: a random embedder and encoder
    scratch = Trainer(TrainConfig(method="scratch", **TINY_RUN)).model.state_dict()
    assert not torch.equal(scratch["embedder.proj.weight"], reference["embedder.proj.weight"])
    assert any(not torch.equal(v, reference[k]) for k, v in scratch.items()
               if k.startswith("encoder."))
