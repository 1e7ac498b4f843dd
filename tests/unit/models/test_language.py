"""The language source model on a tiny RoBERTa of random weights: loading from a save_pretrained
directory, labelled text as source data, the 1D path (row of tokens, ORCA's position
initialisation, the sequence head) and MoNA's stage-1 gradient through it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from files import labelled_sentences, write_labelled_text, write_tiny_roberta
from mona_tune.errors import MonaError
from mona_tune.models.assemble import build_target_model, pool
from mona_tune.models.language import LanguageSourceModel, sequence_tokens
from mona_tune.models.load import load_source_model
from mona_tune.models.source import decode_texts, encode_texts, load_source_data
from mona_tune.train.stage1 import mona_gradient

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    return write_tiny_roberta(tmp_path_factory.mktemp("roberta") / "tiny-roberta")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_labelled_text(tmp_path_factory.mktemp("text") / "topics.csv")


@pytest.fixture(scope="module")
def language(roberta_dir, text_file) -> LanguageSourceModel:
    return load_source_model("roberta-base", str(roberta_dir),
                             load_source_data(f"text:{text_file}"))


@pytest.mark.parametrize("length, max_tokens, tokens", [
    (1024, 512, 512),  # ORCA: 512 tokens of 2 values
    (128, 512, 128),   # one value a token
    (1000, 512, 500),  # ORCA's stack number 2 divides 1000
    (1021, 512, 511),  # a prime length: pieces of 2, the last one padded
    (128, 64, 64),
    (129, 64, 43),     # pieces of 3
])
def test_sequence_tokens(length, max_tokens, tokens):
    assert sequence_tokens(length, max_tokens) == tokens


def test_texts_travel_as_bytes():
    texts = ["plain", "", "ünïcode ✓", "a" * 10]
    rows = encode_texts(texts)
    assert rows.dtype == torch.uint8 and rows.shape == (4, 13)  # "ünïcode ✓": 2+1+2+4+1+3 bytes
    assert rows[0].tolist()[:6] == [112, 108, 97, 105, 110, 0]
    assert decode_texts(rows) == texts
    assert decode_texts(rows[[2, 0]]) == ["ünïcode ✓", "plain"]


def test_text_source_data_splits_a_labelled_file(text_file):
    data = load_source_data(f"text:{text_file}", probe_samples=16)
    texts, labels = labelled_sentences()
    assert data.modality == "text" and data.num_classes == 3 and data.name == f"text:{text_file}"
    assert len(data.y_pretrain) == 0  # a language model comes pretrained
    assert len(data.y_align) == 30 and len(data.y_probe) == 16  # min(1000, 60 // 2), then probe
    # labels are the sorted names' indices: food 0, sport 1, weather 2
    by_text = dict(zip(texts, labels))
    for rows, ys in ((data.x_align, data.y_align), (data.x_probe, data.y_probe)):
        for text, y in zip(decode_texts(rows), ys.tolist()):
            assert ["food", "sport", "weather"][y] == by_text[text]
    assert not set(decode_texts(data.x_align)) & set(decode_texts(data.x_probe))


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_text_source_data_reads_tsv_and_json_lines(tmp_path, suffix):
    rows = [("red sky", "a"), ("blue sea", "b")] * 5
    path = tmp_path / f"t{suffix}"
    if suffix == ".tsv":
        path.write_text("label\ttext\n" + "".join(f"{y}\t{t}\n" for t, y in rows))
    else:
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    data = load_source_data(f"text:{path}")
    assert data.num_classes == 2 and len(data.y_align) == 5 and len(data.y_probe) == 5
    got = dict(zip(decode_texts(data.x_align), data.y_align.tolist()))
    assert got == {"red sky": 0, "blue sea": 1}


@pytest.mark.parametrize("content, suffix, message", [
    ("text\nonly one column\n", ".csv", "a record lacks the 'label' field"),
    ("text,label\na,x\nb,x\nc,x\nd,x\n", ".csv", "needs at least 2 labels, has 1"),
    ("text,label\na,x\nb,y\n", ".csv", r"has too few records \(2\) for a probe"),
    ("text,label\n", ".txt", "use a .csv, .tsv or .jsonl file"),
    ('{"text": "a", "label": 1}\n{"text": \n', ".jsonl", "cannot be read: JSONDecodeError"),
])
def test_bad_text_source_data_is_named(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(MonaError, match=message):
        load_source_data(f"text:{path}")
    with pytest.raises(MonaError, match="not found"):
        load_source_data(f"text:{tmp_path / 'missing.csv'}")


def test_language_model_loads_from_a_save_pretrained_directory(language, roberta_dir):
    assert language.modality == "text"
    assert language.model_id == "roberta-base@tiny-roberta"
    assert language.embed_dim == 32
    assert language.max_tokens == 64  # 66 positions less padding_idx 1 less one
    assert language.net.config.hidden_dropout_prob == 0.0
    assert language.net.config.attention_probs_dropout_prob == 0.0
    assert not any(p.requires_grad for p in language.net.parameters())


def test_source_embedder_and_body_are_the_model(language, text_file):
    """e_s then f on the source text is exactly the transformer's own forward pass."""
    data = load_source_data(f"text:{text_file}")
    rows = data.x_align[:5]
    ids = language.prepare(rows)
    direct = language.tokenizer(decode_texts(rows), padding="longest", return_tensors="pt")
    assert torch.equal(ids, direct["input_ids"])
    tokens = language.embedder(ids)
    assert tokens.shape == (5, 1, ids.shape[1], 32)
    body = language.body().eval()
    with torch.no_grad():
        ours = body(tokens)
        mask = torch.ones_like(ids)  # the forward pass of the hub model, padding attended to
        theirs = language.net(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(ours[:, 0], theirs, atol=1e-5)
    # the body is a copy: training it leaves the source model alone
    assert body.encoder is not language.net.encoder
    assert all(p.requires_grad for p in body.parameters())


def test_the_1d_target_model_on_a_language_encoder(language):
    """128 values -> 64 tokens of 2 (the tiny model has 64 positions); the embedder starts from
    RoBERTa's LayerNorm and its position embeddings from ``padding_idx + 1`` on; the sequence
    head maps token t to output values 2t and 2t + 1."""
    torch.manual_seed(0)
    model = build_target_model(language, in_channels=2, in_shape=(128,), output="dense",
                               out_channels=1, out_shape=(127,))
    e, emb = model.embedder, language.net.embeddings
    assert e.grid == (1, 64) and e.piece == 2
    assert torch.equal(e.pos[0], emb.position_embeddings.weight[2:66])
    assert torch.equal(e.norm.weight, emb.LayerNorm.weight)
    head = model.predictor
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.copy_(torch.tensor([10.0, 20.0]))
        tokens = torch.zeros(3, 1, 64, 32)
        tokens[:, 0, :, 0] = torch.arange(64.0)  # token t carries t in its first feature
        head.fc.weight[:, 0] = torch.tensor([1.0, 1.0])
        out = head(tokens)
    assert out.shape == (3, 1, 127)  # 128 values cut to the target's 127
    want = torch.tensor([[t + 10.0, t + 20.0] for t in range(64)]).flatten()[:127]
    assert torch.equal(out[0, 0], want)
    assert model(torch.randn(4, 2, 128)).shape == (4, 1, 127)


def test_a_language_source_takes_1d_inputs_and_text_only(language, text_file):
    with pytest.raises(MonaError, match="text source model cannot take inputs of shape"):
        build_target_model(language, in_channels=1, in_shape=(16, 16), output="dense",
                           out_channels=1, out_shape=(16, 16))
    digits = load_source_data("digits")
    with pytest.raises(MonaError, match=r"source data digits is image, but the source model "
                                        r"roberta-base takes text: give it labelled text "
                                        r"\(--source-data text:FILE\)"):
        load_source_model("roberta-base", str(language.info["weights"]), digits)
    with pytest.raises(MonaError, match=r"source model embedded takes image: give it labelled "
                                        r"images"):
        load_source_model(None, None, load_source_data(f"text:{text_file}"))


def test_weights_for_a_language_model_are_a_directory(tmp_path, text_file, roberta_dir):
    from mona_tune.models.load import check_weights

    text = load_source_data(f"text:{text_file}")
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    for weights in (file, empty):
        with pytest.raises(MonaError, match="must be a directory written by save_pretrained"):
            load_source_model("roberta-base", str(weights), text)
    # the check made before anything loads (train and search flags)
    check_weights(str(roberta_dir), "roberta-base")
    with pytest.raises(MonaError, match="is a directory without config.json"):
        check_weights(str(empty), "roberta-base")
    with pytest.raises(MonaError, match="cannot read weights file"):
        check_weights(str(file), "roberta-base")


def test_mona_gradient_through_the_language_encoder_matches_finite_differences(language):
    """Φ(φe) = L_inner + λ L_outer(θf − α ∇θf L_inner), by central differences, in float64."""
    torch.manual_seed(1)
    model = build_target_model(language, in_channels=1, in_shape=(12,), output="dense",
                               out_channels=1, out_shape=(12,)).double()
    x, y = torch.randn(3, 1, 12, dtype=torch.float64), torch.randn(3, 1, 12, dtype=torch.float64)
    xs = torch.randn(6, 1, 5, 32, dtype=torch.float64)  # six embedded source texts of 5 tokens
    ys = torch.tensor([0, 0, 1, 1, 2, 2])
    alpha, lam = 0.5, 1.0

    def objective():
        theta = dict(model.encoder.named_parameters())
        with torch.enable_grad():
            inner = F.mse_loss(model(x), y)
            g = torch.autograd.grad(inner, list(theta.values()))
        moved = {n: (p - alpha * gi).detach() for (n, p), gi in zip(theta.items(), g)}
        with torch.no_grad():
            z = F.normalize(pool(functional_call(model.encoder, moved, (xs,))), dim=1)
            d2 = torch.cdist(z, z) ** 2
            same = ys[:, None] == ys[None, :]
            upper = torch.triu(torch.ones_like(d2, dtype=torch.bool), 1)
            outer = d2[same & upper].mean() + torch.log(torch.exp(-2 * d2[~same & upper]).mean())
        return (inner + lam * outer).item()

    grads, _ = mona_gradient(model, x, y, F.mse_loss, xs, ys, inner_lr=alpha, lam=lam)
    named = dict(model.embedder.named_parameters())
    by_name = dict(zip(named, grads))
    for name, idx in [("proj.weight", (0, 0)), ("proj.bias", (5,)), ("pos", (0, 3, 7)),
                      ("norm.weight", (2,))]:
        p, h = named[name], 1e-5
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + h
            up = objective()
            p[idx] = old - h
            down = objective()
            p[idx] = old
        assert by_name[name][idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5,
                                                          abs=1e-9), name


def test_checkpointed_language_layers_give_the_same_meta_gradient(language):
    """``grad_checkpointing`` recomputes each transformer layer in the backward pass, also at
    θ'f inside the functional call: the meta-gradient is unchanged."""
    torch.manual_seed(2)
    model = build_target_model(language, in_channels=1, in_shape=(12,), output="dense",
                               out_channels=1, out_shape=(12,))
    x, y = torch.randn(3, 1, 12), torch.randn(3, 1, 12)
    xs, ys = torch.randn(6, 1, 5, 32), torch.tensor([0, 0, 1, 1, 2, 2])

    def meta():
        grads, _ = mona_gradient(model, x, y, F.mse_loss, xs, ys, inner_lr=0.5, lam=1.0)
        return torch.cat([g.reshape(-1) for g in grads])

    plain = meta()
    model.encoder.grad_checkpointing = True
    again = meta()
    assert float((again - plain).norm() / plain.norm()) < 1e-5
