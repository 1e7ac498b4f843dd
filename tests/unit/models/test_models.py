"""Shapes of embedders, predictors and the assembled model; encoder weights files; source data."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from files import write_cifar_dir

from mona_tune.errors import MonaError
from mona_tune.models.assemble import build_target_model
from mona_tune.models.embedders import Embedder1D, Embedder2D
from mona_tune.models.encoder import SwinBody, create_timm_swin, load_weights
from mona_tune.models.predictors import ClassificationHead, DenseHead
from mona_tune.models.source import SourceModel, load_source_data


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(embed_dim=8, num_classes=3):
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=8, patch_size=2, window_size=2, embed_dim=embed_dim,
                           depths=(1, 1), num_heads=(2, 2), num_classes=num_classes,
                           drop_path_rate=0.0)


def tiny_source():
    return SourceModel("tiny", tiny_net(), (0.5,) * 3, (0.5,) * 3, tiny_net)


# ---------------------------------------------------------------- shapes
def test_embedder_2d_resizes_and_patches():
    e = Embedder2D(in_channels=3, img_size=32, patch_size=4, embed_dim=48)
    out = e(torch.randn(2, 3, 85, 85))
    assert out.shape == (2, 8, 8, 48)
    assert e(torch.randn(1, 3, 32, 32)).shape == (1, 8, 8, 48)  # no resize needed


def test_embedder_1d_pieces_and_positions():
    e = Embedder1D(in_channels=2, length=50, grid=(4, 4), embed_dim=8)  # 50 -> 16 pieces of 4
    assert e.piece == 4
    assert e(torch.randn(3, 2, 50)).shape == (3, 4, 4, 8)
    assert e.pos.shape == (1, 16, 8)


def test_embedder_1d_against_a_token_by_token_oracle():
    """Token k = LayerNorm(W · [channel 0 piece k, channel 1 piece k] + b) + pos[k], where piece
    k holds values k·P .. k·P+P−1 of the zero-padded sequence; token k sits at grid row k // W,
    column k % W."""
    torch.manual_seed(0)
    e = Embedder1D(in_channels=2, length=10, grid=(2, 3), embed_dim=5)  # 10 -> 6 pieces of 2
    with torch.no_grad():
        e.norm.weight.uniform_(0.5, 1.5)
        e.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 2, 10)
    out = e(x)
    assert e.piece == 2 and out.shape == (2, 2, 3, 5)
    padded = torch.cat([x, torch.zeros(2, 2, 2)], dim=2)  # 10 values, 12 places
    for n in range(2):
        for k in range(6):
            values = torch.cat([padded[n, 0, 2 * k:2 * k + 2], padded[n, 1, 2 * k:2 * k + 2]])
            z = e.proj.weight @ values + e.proj.bias
            z = (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + e.norm.eps)
            want = z * e.norm.weight + e.norm.bias + e.pos[0, k]
            torch.testing.assert_close(out[n, k // 3, k % 3], want, atol=1e-5, rtol=1e-5)


def test_dense_head_reads_a_1d_target_row_by_row():
    """A 1D target of the image's size is the 3-channel image's channel mean read row by row."""
    torch.manual_seed(1)
    head = DenseHead(6, (2, 2), img_size=4, out_channels=1, out_shape=(16,))
    tokens = torch.randn(2, 2, 2, 6)
    image = torch.nn.functional.pixel_shuffle(head.fc(tokens).permute(0, 3, 1, 2), 2)
    want = image.mean(1).reshape(2, 1, 16)
    torch.testing.assert_close(head(tokens), want, atol=1e-6, rtol=1e-6)
    pooled = DenseHead(6, (2, 2), img_size=4, out_channels=1, out_shape=(8,))
    pooled.load_state_dict(head.state_dict())
    torch.testing.assert_close(pooled(tokens), want.reshape(2, 1, 8, 2).mean(3), atol=1e-6,
                               rtol=1e-6)


def test_dense_head_shapes():
    tokens = torch.randn(2, 4, 4, 96)
    up = DenseHead(96, (4, 4), img_size=32, out_channels=1, out_shape=(85, 85))
    assert up.r == 8 and up.fc.out_features == 8 * 8 * 3
    assert up(tokens).shape == (2, 1, 85, 85)
    down = DenseHead(96, (4, 4), img_size=32, out_channels=2, out_shape=(20, 20))
    assert down(tokens).shape == (2, 2, 20, 20)
    seq = DenseHead(96, (4, 4), img_size=32, out_channels=1, out_shape=(100,))
    assert seq(tokens).shape == (2, 1, 100)


def test_dense_head_pools_like_orca_when_downsampling():
    head = DenseHead(4, (2, 2), img_size=4, out_channels=1, out_shape=(2, 2))
    tokens = torch.randn(1, 2, 2, 4)
    x = torch.nn.functional.pixel_shuffle(head.fc(tokens).permute(0, 3, 1, 2), 2)
    want = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 2)
    assert torch.allclose(head(tokens), want, atol=1e-6)


def test_classification_head():
    head = ClassificationHead(16, 5)
    tokens = torch.randn(3, 2, 2, 16)
    assert head(tokens).shape == (3, 5)
    assert torch.allclose(head(tokens), head.fc(tokens.mean((1, 2))))


def test_body_plugs_into_timm_swin():
    net = tiny_net().eval()
    body = SwinBody(net.layers, net.norm)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(body(net.patch_embed(x)), net.forward_features(x))


@pytest.mark.parametrize("random_encoder", [False, True])
def test_assembled_models(random_encoder):
    src = tiny_source()
    dense = build_target_model(src, 3, (85, 85), "dense", 1, (85, 85),
                               random_encoder=random_encoder)
    assert dense(torch.randn(2, 3, 85, 85)).shape == (2, 1, 85, 85)
    same = all(torch.equal(a, b) for a, b in zip(dense.encoder.state_dict().values(),
                                                  SwinBody(src.net.layers, src.net.norm)
                                                  .state_dict().values()))
    assert same != random_encoder
    seq = build_target_model(src, 2, (30,), "classes", 4, random_encoder=random_encoder)
    assert seq(torch.randn(5, 2, 30)).shape == (5, 4)


def test_target_encoder_is_a_copy():
    src = tiny_source()
    model = build_target_model(src, 3, (8, 8), "dense", 1, (8, 8))
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)
    assert not torch.equal(next(model.encoder.parameters()), next(src.net.layers.parameters()))


# ---------------------------------------------------------------- weights files
def test_weights_checkpoint_fits(tmp_path):
    torch.manual_seed(0)
    good = tiny_net()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": good.state_dict(), "epoch": 3}, path)
    net = tiny_net()
    load_weights(net, path, "tiny")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                  good.state_dict().values()))


def test_safetensors_fits_and_misfits(tmp_path):
    from safetensors.torch import save_file

    good = tiny_net()
    ok = tmp_path / "ok.safetensors"
    save_file({k: v.contiguous() for k, v in good.state_dict().items()}, str(ok))
    load_weights(tiny_net(), ok, "tiny")
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_net(embed_dim=12).state_dict().items()},
              str(bad))
    with pytest.raises(MonaError, match=r"--weights .*bad.safetensors does not fit tiny \(timm "
                                        r"layout\)"):
        load_weights(tiny_net(), bad, "tiny")


def test_checkpoint_misfit_names_the_problem(tmp_path):
    sd = tiny_net(num_classes=5).state_dict()  # another head: dropped, the model keeps its own
    sd.pop("norm.weight")
    sd["norm.bias"] = torch.zeros(3)
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "x.pt"
    torch.save(sd, path)
    with pytest.raises(MonaError) as err:
        load_weights(tiny_net(), path, "tiny")
    msg = str(err.value)
    assert "1 key does not map (extra.weight); 1 missing (norm.weight)" in msg
    assert "1 shape mismatch (norm.bias: file (3,) vs model (16,))" in msg
    assert "head" not in msg


def test_unreadable_and_missing_weights(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MonaError, match="cannot read weights file"):
        load_weights(tiny_net(), junk, "tiny")
    with pytest.raises(MonaError, match="not found"):
        load_weights(tiny_net(), tmp_path / "nope.pt", "tiny")


def test_timm_names_checked(tmp_path):
    with pytest.raises(MonaError, match="unknown timm model"):
        create_timm_swin("no_such_model_xyz", weights=str(tmp_path / "w.pt"))
    with pytest.raises(MonaError, match="not a timm Swin"):
        create_timm_swin("resnet18", weights=str(tmp_path / "w.pt"))


# ---------------------------------------------------------------- source data
def test_cifar10_pickles(tmp_path):
    root = write_cifar_dir(tmp_path / "cifar-10-batches-py", per_batch=20)
    d = load_source_data(f"cifar10:{root}", probe_samples=8)
    assert d.x_pretrain.shape == (100, 3, 32, 32) and d.x_pretrain.dtype == torch.uint8
    assert len(d.y_align) == 10 and len(d.y_probe) == 8
    with open(root / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    assert torch.equal(d.x_pretrain[0].flatten(), torch.from_numpy(first[b"data"][0]))


def test_cifar10_errors(tmp_path):
    with pytest.raises(MonaError, match="not found"):
        load_source_data(f"cifar10:{tmp_path / 'none'}")
    root = write_cifar_dir(tmp_path / "c")
    (root / "test_batch").unlink()
    with pytest.raises(MonaError, match="lacks test_batch"):
        load_source_data(f"cifar10:{root}")
    (root / "test_batch").write_bytes(b"garbage")
    with pytest.raises(MonaError, match="not a CIFAR-10 python pickle"):
        load_source_data(f"cifar10:{root}")


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    root = write_cifar_dir(tmp_path / "c")
    marker = tmp_path / "ran"
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [1], b"data": _RunsCode(marker)}, f)
    with pytest.raises(MonaError, match="data_batch_3 is not a CIFAR-10.*refusing"):
        load_source_data(f"cifar10:{root}")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # the same object does run code unrestricted
    assert marker.exists()


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_source_data("digits"), load_source_data("digits")
    assert torch.equal(a.y_probe, b.y_probe)
    assert (len(a.y_pretrain), len(a.y_align), len(a.y_probe)) == (1097, 300, 400)
    assert a.x_probe.shape[1:] == (3, 8, 8) and int(a.x_probe.max()) == 255


def test_digits_are_sklearns_read_from_the_cache_without_importing_sklearn(tmp_path):
    """The cached arrays equal scikit-learn's digits (scaled to 0..255); a new process that finds
    them in the cache loads the digits without importing sklearn (a second per trial process)."""
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    env = {**os.environ, "MONA_TUNE_CACHE": str(tmp_path)}
    code = ("import sys; from mona_tune.models.source import load_source_data; "
            "d = load_source_data('digits'); print(len(d.y_probe), 'sklearn' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs == [["400", "True"], ["400", "False"]]
    (path,) = tmp_path.glob("source-data/*/digits.npz")
    d = load_digits()
    with np.load(path) as f:
        np.testing.assert_array_equal(f["images"], np.round(d.images * (255.0 / 16.0)))
        np.testing.assert_array_equal(f["labels"], d.target)
        assert f["images"].dtype == np.uint8 and f["labels"].dtype == np.int64


def test_the_source_data_registry_matches_the_config():
    """config.SOURCE_DATA names the registered sources (the config checks a name without
    importing the models); a bad name or a missing directory is refused by the config."""
    from pydantic import ValidationError

    from mona_tune.config import SOURCE_DATA, TrainConfig
    from mona_tune.models.source import SOURCE_DATASETS, load_source_data, register_source_data

    assert set(SOURCE_DATASETS) == set(SOURCE_DATA)
    for ok in ("digits", "fractals", "cifar10:/data/c10", "text:/data/labelled.csv"):
        assert TrainConfig(source_data=ok).source_data == ok
    for bad in ("mnist", "cifar10", "cifar10:", "digits:x", "text"):
        with pytest.raises(ValidationError, match="source_data must be 'digits', 'fractals', "
                                                  "'cifar10:DIR', 'text:FILE'"):
            TrainConfig(source_data=bad)
    with pytest.raises(MonaError, match=r"unknown source data 'mnist' \(known: cifar10, "
                                        r"digits, fractals, text\)"):
        load_source_data("mnist")
    with pytest.raises(ValueError, match="registered twice"):
        register_source_data("digits")(lambda a, n: None)
