"""The embedded source model the package ships (mona_tune/models/shipped.py): it is the recipe's
model (same key), a first run copies it into the cache instead of training, and training again
with the recipe gives the same bits (on the CPU kind it was made on)."""

from __future__ import annotations

import json

import pytest
import torch

from mona_tune.models import ship, shipped
from mona_tune.models import source as src


def test_the_shipped_model_is_the_current_recipe_s():
    """A change of the recipe, the architecture or the digits split changes the key: then the
    shipped files must be written again (``python -m mona_tune.models.ship --write``)."""
    meta = shipped.read_meta()
    data = src.load_source_data("digits")
    recipe, key = src.embedded_recipe_key(data)
    assert meta["key"] == key, "the shipped weights are stale: run python -m " \
        "mona_tune.models.ship --write"
    assert meta["recipe"] == recipe and meta["arch"] == json.loads(json.dumps(src.EMBEDDED_ARCH))
    assert meta["threads"] == shipped.THREADS
    assert meta["heldout_accuracy"] >= 0.94


def test_a_first_run_copies_the_shipped_model_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("MONA_TUNE_CACHE", str(tmp_path))

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the package ships this model")

    monkeypatch.setattr(src, "_pretrain", no_training)
    model = src.embedded_source_model(src.load_source_data("digits"), progress=False)
    meta = shipped.read_meta()
    assert shipped.tensors_sha256(model.net.state_dict()) == meta["weights_sha256"]
    assert model.info["heldout_accuracy"] == meta["heldout_accuracy"]
    assert model.info["shipped"]["weights_sha256"] == meta["weights_sha256"]
    assert model.model_id == f"embedded-swin-{meta['key']}"
    # the cache holds the usual files, which other nodes receive (cluster/node_cache.py)
    assert sorted(p.name for p in (tmp_path / "source" / meta["key"]).iterdir()) == \
        ["lock", "meta.json", "model.pt"]


def test_another_recipe_trains_as_before(tmp_path, monkeypatch, fast_epochs):
    monkeypatch.setenv("MONA_TUNE_CACHE", str(tmp_path))
    monkeypatch.setitem(src.EMBEDDED_RECIPE, "epochs", dict(fast_epochs))
    calls = []
    real = src._pretrain

    def counted(*args, **kwargs):
        calls.append(args[2]["epochs"])
        return real(*args, **kwargs)

    monkeypatch.setattr(src, "_pretrain", counted)
    model = src.embedded_source_model(src.load_source_data("digits"), progress=False)
    assert calls == [2] and "shipped" not in model.info


def test_damaged_shipped_weights_are_not_used(tmp_path, monkeypatch):
    """A file whose bytes do not hash to the shipped sha256 is ignored (the caller trains)."""
    from safetensors.torch import load_file, save_file

    weights, meta_path = shipped.files()
    state = load_file(str(weights))
    first = sorted(state)[0]
    state[first] = state[first] + 1.0
    (tmp_path / "digits.json").write_text(meta_path.read_text())
    save_file(state, str(tmp_path / "digits.safetensors"))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    meta = shipped.read_meta()
    assert shipped.shipped_weights(meta["key"], src._embedded_net(10)) is None
    assert shipped.shipped_weights("another-key", src._embedded_net(10)) is None


@pytest.mark.drift
@pytest.mark.slow
def test_the_recipe_reproduces_the_shipped_weights_bit_for_bit():
    """Training again (one thread, the recipe's seed; about 80 s of one core) gives the shipped
    bits on the CPU kind, torch and timm they were made with. Elsewhere (another CPU, or another
    ATEN_CPU_CAPABILITY: ``make drift``) rounding differs and training drifts, so only the held-out
    accuracy is compared, within the tolerance measured across kernels, threads and seeds
    (shipped.ACCURACY_TOLERANCE)."""
    state, meta = ship.train()
    packaged = shipped.read_meta()
    assert meta["key"] == packaged["key"]
    if shipped.same_platform(packaged):
        from safetensors.torch import load_file

        reference = load_file(str(shipped.files()[0]))
        assert sorted(state) == sorted(reference)
        assert all(torch.equal(state[k], reference[k]) for k in state)
        assert meta["weights_sha256"] == packaged["weights_sha256"]
        assert meta["heldout_accuracy"] == packaged["heldout_accuracy"]
    else:
        assert abs(meta["heldout_accuracy"] - packaged["heldout_accuracy"]) <= \
            shipped.ACCURACY_TOLERANCE
