"""``--weights`` in the three Swin layouts: timm's, the original Microsoft release and Hugging
Face's ``save_pretrained``, written here from tiny random models, load onto a timm Swin that then
computes what the original computed."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mona_tune.cli import main
from mona_tune.errors import MonaError
from mona_tune.models.encoder import load_weights
from mona_tune.models.load import check_weights

pytestmark = pytest.mark.usefixtures("one_thread")

# every stage at least one window wide (Hugging Face pads smaller stages where timm shrinks the
# window); stages 0 and 1 have a shifted block
ARCH = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2, 1),
            num_heads=(1, 2, 4))
TINY_NAME = "mona_test_tiny_swin"  # registered with timm below, for the command line


def timm_net(num_classes=5):
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(**ARCH, num_classes=num_classes, drop_path_rate=0.0).eval()


def randomised(net, seed=0):
    """Every parameter drawn at random (norms and biases too: a mix-up of two would show)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


def hf_model(num_labels=5):
    from transformers import SwinConfig, SwinForImageClassification, SwinModel

    config = SwinConfig(image_size=ARCH["img_size"], patch_size=ARCH["patch_size"],
                        window_size=ARCH["window_size"], embed_dim=ARCH["embed_dim"],
                        depths=list(ARCH["depths"]), num_heads=list(ARCH["num_heads"]),
                        num_labels=num_labels)
    cls = SwinForImageClassification if num_labels else SwinModel
    return randomised(cls(config))


def microsoft_state_dict(net) -> dict:
    """``net``'s weights as microsoft/Swin-Transformer ships them: the inverse of timm's
    filter (downsample at the end of the stage before, ``head``) with the buffers it saves."""
    sd = {}
    for k, v in net.state_dict().items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k)
        sd[k.replace("head.fc.", "head.")] = v
    sd.update({k: b for k, b in net.named_buffers()
               if k.endswith(("relative_position_index", "attn_mask"))})
    return sd


def same_function(net, reference):
    x = torch.randn(2, 3, ARCH["img_size"], ARCH["img_size"], generator=torch.Generator()
                    .manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), atol=1e-5, rtol=0)


def hf_function(hf):
    """The Hugging Face model's features (B, h, w, D) or logits, as timm's net computes them."""
    def run(x):
        if hasattr(hf, "classifier"):
            return hf(x).logits
        out = hf(x).last_hidden_state
        side = int(out.shape[1] ** 0.5)
        return out.reshape(len(x), side, side, -1)
    return run


def features(net):
    return net.forward_features


# ---------------------------------------------------------------- Hugging Face
@pytest.fixture(scope="module")
def hf_classifier():
    return hf_model()


@pytest.fixture(scope="module")
def hf_dir(hf_classifier, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "swin"
    hf_classifier.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("form", ["directory", "safetensors file", "bin directory", "bin file"])
def test_hugging_face_classifier_loads_as_it_computes(form, hf_classifier, hf_dir, tmp_path):
    from safetensors.torch import load_file

    if form.startswith("bin"):
        sd = load_file(str(hf_dir / "model.safetensors"))
        sd.update({f"swin.{k}": b for k, b in hf_classifier.swin.named_buffers()
                   if k.endswith("relative_position_index")})  # saved by transformers 4
        assert any(k.endswith("attention.self.query.weight") for k in sd)
        (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
        torch.save(sd, tmp_path / "pytorch_model.bin")
        weights = tmp_path if form == "bin directory" else tmp_path / "pytorch_model.bin"
    else:
        weights = hf_dir if form == "directory" else hf_dir / "model.safetensors"
    check_weights(str(weights), "swin_tiny_patch4_window7_224")
    net = timm_net()
    load_weights(net, weights, "tiny")
    same_function(net, hf_function(hf_classifier))  # the classifier maps onto head.fc


def test_hugging_face_encoder_without_classifier_and_in_module_names(tmp_path):
    """``SwinModel`` (no classifier: the timm model keeps its own head) gives the same features;
    so does a state dict of transformers 5's modules (q_proj, o_proj, mlp.fc1, ...)."""
    hf = hf_model(num_labels=0)
    hf.save_pretrained(tmp_path / "swin")
    torch.save(hf.state_dict(), tmp_path / "modules.pt")
    for weights in (tmp_path / "swin", tmp_path / "modules.pt"):
        net = timm_net()
        head = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("head.")}
        load_weights(net, weights, "tiny")
        same_function(features(net), hf_function(hf))
        assert all(torch.equal(net.state_dict()[k], v) for k, v in head.items())


# ---------------------------------------------------------------- Microsoft
def test_microsoft_release_loads_as_it_computes(tmp_path):
    original = randomised(timm_net())
    sd = microsoft_state_dict(original)
    assert {"layers.0.downsample.reduction.weight", "head.weight",
            "layers.0.blocks.1.attn_mask",
            "layers.0.blocks.0.attn.relative_position_index"} <= set(sd)
    assert not any(k.startswith("layers.2.downsample") for k in sd)
    torch.save({"model": sd}, tmp_path / "swin_tiny.pth")
    check_weights(str(tmp_path / "swin_tiny.pth"), "swin_tiny_patch4_window7_224")
    net = timm_net()
    load_weights(net, tmp_path / "swin_tiny.pth", "tiny")
    same_function(net, original)
    # a 22k-class head does not fit a 5-class model: the encoder loads, the head is the model's
    sd["head.weight"], sd["head.bias"] = torch.zeros(7, 64), torch.zeros(7)
    torch.save({"model": sd}, tmp_path / "in22k.pth")
    load_weights(net := timm_net(), tmp_path / "in22k.pth", "tiny")
    same_function(features(net), features(original))


# ---------------------------------------------------------------- what does not map
def test_a_foreign_key_is_named_in_one_line(tmp_path):
    sd = microsoft_state_dict(randomised(timm_net()))
    sd["layers.0.blocks.0.foo"] = torch.zeros(2)
    sd["layers.5.blocks.0.attn.relative_position_bias_table"] = torch.zeros(49, 1)
    del sd["norm.weight"]
    torch.save({"model": sd}, tmp_path / "odd.pth")
    with pytest.raises(MonaError) as err:
        load_weights(timm_net(), tmp_path / "odd.pth", "tiny")
    assert str(err.value) == (
        f"--weights {tmp_path / 'odd.pth'} does not fit tiny (Microsoft layout): 2 keys do not "
        "map (layers.0.blocks.0.foo, layers.5.blocks.0.attn.relative_position_bias_table); "
        "1 missing (norm.weight)")


def test_hugging_face_keys_that_do_not_map(hf_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(hf_dir / "model.safetensors"))
    sd["swin.embeddings.mask_token"] = torch.zeros(1, 1, 16)
    del sd["swin.encoder.layers.1.blocks.0.attention.self.key.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(MonaError) as err:
        load_weights(timm_net(), tmp_path / "model.safetensors", "tiny")
    msg = str(err.value)
    assert "does not fit tiny (Hugging Face layout): 3 keys do not map (" in msg
    for key in ("swin.embeddings.mask_token", "attention.self.query.weight",
                "attention.self.value.weight"):
        assert key in msg
    assert "1 missing (layers.1.blocks.0.attn.qkv.weight)" in msg


def test_files_of_no_swin_layout(tmp_path):
    name = "swin_tiny_patch4_window7_224"
    torch.save({"encoder.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(MonaError, match=r"other.pt is no Swin checkpoint in the timm, Microsoft "
                                        r"or Hugging Face layout \(its keys: encoder.weight\)"):
        check_weights(str(tmp_path / "other.pt"), name)
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    (roberta / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(MonaError, match="holds a Hugging Face roberta model, not a Swin"):
        check_weights(str(roberta), name)
    (roberta / "config.json").write_text(json.dumps({"model_type": "swin"}))
    with pytest.raises(MonaError, match="without model.safetensors or pytorch_model.bin"):
        check_weights(str(roberta), name)


# ---------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def tiny_timm_name():
    """A tiny Swin under a timm name, as ``--source-model`` takes one."""
    import timm
    from timm.models import register_model

    if not timm.is_model(TINY_NAME):
        def mona_test_tiny_swin(pretrained=False, drop_path_rate=0.0, **_):
            from timm.models.swin_transformer import SwinTransformer

            return SwinTransformer(**ARCH, drop_path_rate=drop_path_rate)

        register_model(mona_test_tiny_swin)
    return TINY_NAME


def test_train_with_hugging_face_weights(tiny_timm_name, hf_dir, tmp_path, capsys):
    from mona_tune.train import loaded

    base = ["train", "--source-model", tiny_timm_name, "--n-train", "8", "--n-test", "4",
            "--batch-size", "4", "--source-batch-size", "4", "--probe-samples", "8",
            "--epochs", "1", "--warmup-epochs", "0", "--method", "ft", "--num-threads", "1",
            "--device", "cpu"]
    sd = microsoft_state_dict(timm_net())
    sd["layers.0.blocks.0.foo"] = torch.zeros(2)
    torch.save({"model": sd}, tmp_path / "odd.pth")
    loaded.clear()
    try:
        assert main([*base, "--weights", str(tmp_path / "odd.pth")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "1 key does not map (layers.0.blocks.0.foo)" in err[0]
        assert main([*base, "--weights", str(hf_dir)]) == 0
        final = json.loads(capsys.readouterr().out)
    finally:
        loaded.clear()
    assert final["source_model"] == f"{tiny_timm_name}@swin"
