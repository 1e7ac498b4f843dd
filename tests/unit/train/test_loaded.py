"""The pretrained probe reference on disk (``loaded.pretrained_probe_error``): computed once per
node and device type, keyed by the bytes of the source model and of its probe images."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mona_tune.config import TrainConfig
from mona_tune.train import loaded, probe

CFG = TrainConfig(task="darcy", n_train=12, n_test=4, probe_samples=40, device="cpu")
CPU = torch.device("cpu")


def test_computed_once_then_read_from_disk(fast_source, mona_cache, monkeypatch):
    calls = []
    real = probe.source_probe_error
    monkeypatch.setattr(probe, "source_probe_error",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    key = loaded.probe_key(loaded.source_model(CFG), loaded.source_data(CFG), "cpu")
    path = mona_cache / "probe" / key / "error.json"
    path.unlink(missing_ok=True)
    loaded.clear()
    first = loaded.pretrained_probe_error(CFG, CPU)
    assert calls == [1] and 0.0 <= first <= 1.0
    saved = json.loads(path.read_text())
    assert saved["error"] == first and saved["device"] == "cpu" and saved["probe_samples"] == 40

    # a new process (the cache in memory cleared) reads the file and probes nothing
    loaded.clear()
    assert loaded.pretrained_probe_error(CFG, CPU) == first and calls == [1]

    # a damaged entry is probed again and rewritten
    path.write_text("{not json")
    loaded.clear()
    assert loaded.pretrained_probe_error(CFG, CPU) == first and calls == [1, 1]
    assert json.loads(path.read_text())["error"] == first


def test_key_follows_the_weights_the_probe_images_and_the_device(fast_source):
    src, data = loaded.source_model(CFG), loaded.source_data(CFG)
    key = loaded.probe_key(src, data, "cpu")
    assert loaded.probe_key(src, data, "cpu") == key
    assert loaded.probe_key(src, data, "cuda") != key

    changed = {k: v.clone() for k, v in src.net.state_dict().items()}
    name = next(k for k, v in changed.items() if v.is_floating_point())
    changed[name].view(-1)[0] += 1e-3
    moved = dataclasses.replace(src, net=_StateOnly(changed))
    assert loaded.probe_key(moved, data, "cpu") != key
    assert loaded.probe_key(dataclasses.replace(src, net=_StateOnly(src.net.state_dict())),
                            data, "cpu") == key

    fewer = dataclasses.replace(data, x_probe=data.x_probe[1:], y_probe=data.y_probe[1:])
    assert loaded.probe_key(src, fewer, "cpu") != key
    relabelled = dataclasses.replace(data, y_probe=data.y_probe.roll(1))
    assert loaded.probe_key(src, relabelled, "cpu") != key


class _StateOnly(torch.nn.Module):
    """A module whose state dict is the given tensors (all the key reads of a model)."""

    def __init__(self, state: dict):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):
        return dict(self._state)

    def eval(self):
        return self

    def requires_grad_(self, requires_grad: bool = True):
        return self


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
def test_the_tensor_hash_reads_every_byte_of_any_dtype(dtype):
    """``shipped.tensors_sha256``, which the probe key hashes weights and probe images with."""
    from mona_tune.models.shipped import tensors_sha256

    def key(t):
        return tensors_sha256({"w": t, "s": torch.tensor(3, dtype=dtype)})

    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(dtype)
    u = t.clone()
    u[2, 3] += 1
    assert key(t) == key(t.clone()) and key(t) != key(u)
    assert key(t) != key(t.reshape(4, 3))  # the shape counts, not only the bytes
