"""Filling the nodes' caches before a search: which node prepares and with what, the cache entries
it ships, how another node writes them, and the whole step on a real one-node Ray."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mona_tune.cluster import node_cache
from mona_tune.cluster.nodes import Node
from mona_tune.errors import MonaError

# the data of these tests (12 + 4 samples) is theirs alone: its files are found by name
FIXED = dict(task="darcy", n_train=12, n_test=4, probe_samples=40, device="cpu")
DATA_FILES = ("piececonst_r85_N12_smooth1.mat", "piececonst_r85_N4_smooth2.mat")


def test_the_node_that_prepares_and_its_task():
    small = Node("s" * 56, "10.0.0.1", 2.0, 0.0)
    big = Node("b" * 56, "10.0.0.2", 16.0, 0.0)
    gpu = Node("g" * 56, "10.0.0.3", 16.0, 2.0)
    first, cpus, gpus, values = node_cache.fill_plan({"task": "darcy"}, [small, big, gpu],
                                                     "s" * 56, 1.0)
    assert (first, cpus, gpus) == (gpu, 8.0, 1.0)  # at most 8 threads; one GPU
    assert values == {"task": "darcy", "num_threads": 8}
    first, cpus, gpus, values = node_cache.fill_plan({"num_threads": 3}, [small, big], "b" * 56,
                                                     1.0)
    assert (first, cpus, gpus, values) == (big, 8.0, 0.0, {"num_threads": 3})  # no GPU there
    assert node_cache.fill_plan({}, [gpu], "x", 0.0)[2] == 0.0  # trials without a GPU
    assert node_cache.fill_plan({}, [gpu], "x", 0.25)[2] == 1.0
    one = Node("o" * 56, "10.0.0.8", 4.0, 1.0)
    assert node_cache.fill_plan({}, [one], "x", 0.25)[2] == 1.0  # its one GPU
    half = Node("h" * 56, "10.0.0.4", 0.5, 0.5)
    assert node_cache.fill_plan({"num_threads": None}, [half], "x", 0.5) == \
        (half, 0.5, 0.0, {"num_threads": 1})  # under one GPU: none; under one CPU: one thread
    twin_a, twin_b = Node("a" * 56, "10.0.0.5", 4.0, 0.0), Node("c" * 56, "10.0.0.6", 4.0, 0.0)
    assert node_cache.fill_plan({}, [twin_a, twin_b], "c" * 56, 0)[0] is twin_b  # tie: the driver's
    assert node_cache.fill_plan({}, [twin_a, twin_b], "a" * 56, 0)[0] is twin_a
    assert node_cache.fill_plan({}, [Node("d" * 56, "10.0.0.7", 7.0, 0.0)], "x", 0)[1:3] == \
        (7.0, 0.0)


def test_the_copy_has_what_is_left_of_the_deadline_but_at_least_a_minute():
    assert node_cache.copy_timeout(1800.0, 100.0) == 1700.0
    assert node_cache.copy_timeout(100.0, 50.0) == 60.0
    assert node_cache.copy_timeout(61.0, 0.5) == 60.5
    assert node_cache.PREPARE_TIMEOUT_S == 1800.0  # the whole step: half an hour


def test_the_nodes_that_can_hold_a_trial():
    cpu = Node("c" * 56, "10.0.0.1", 4, 0)
    gpu = Node("g" * 56, "10.0.0.2", 2, 1)
    small = Node("s" * 56, "10.0.0.3", 1, 0)
    assert node_cache.trial_nodes([cpu, gpu, small], 2, 0) == [cpu, gpu]
    assert node_cache.trial_nodes([cpu, gpu, small], 1, 0.5) == [gpu]
    assert node_cache.trial_nodes([cpu, gpu, small], 1, 0) == [cpu, gpu, small]
    assert node_cache.trial_nodes([cpu, gpu, small], 2, 1) == [gpu]
    with pytest.raises(MonaError) as err:
        node_cache.trial_nodes([cpu, gpu, small], 8, 0.5)
    assert str(err.value) == (
        "no Ray node can hold a trial of 8 CPU and 0.5 GPU (node 10.0.0.1 (cccccccc): 4 CPU, "
        "0 GPU, node 10.0.0.2 (gggggggg): 2 CPU, 1 GPU, node 10.0.0.3 (ssssssss): 1 CPU, 0 GPU); "
        "lower --cpus-per-trial / --gpus-per-trial or add nodes")


def _entry_files(root: Path) -> list[Path]:
    """The files of this module's data entry, of its source model's entry, of that model's
    pretrained probe error and of the source data (digits) in ``root``."""
    from mona_tune.config import TrainConfig
    from mona_tune.train import loaded

    cfg = TrainConfig(**FIXED)
    src = loaded.source_model(cfg)
    key = src.model_id.rsplit("-", 1)[1]
    found = [p for name in DATA_FILES for p in root.glob(f"data/*/{name}")]
    found += [root / "source" / key / name for name in ("model.pt", "meta.json")]
    found.append(root / "probe" / loaded.probe_key(src, loaded.source_data(cfg), "cpu")
                 / "error.json")
    found += list(root.glob("source-data/*/digits.npz"))
    assert len(found) == 6 and all(p.is_file() for p in found), found
    return found


def test_fill_caches_loads_and_ships_the_entries_used(fast_source, mona_cache):
    import torch

    out, files = node_cache.fill_caches({**FIXED, "num_threads": 2})
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    expected = {str(p.relative_to(mona_cache)): p.read_bytes() for p in _entry_files(mona_cache)}
    assert {k: files[k] for k in expected} == expected
    source = next(p.parent for p in _entry_files(mona_cache) if p.name == "model.pt")
    assert (source / "lock").is_file()  # the model's file lock: never shipped
    for stray in ("x.part", "y.lock"):
        (source / stray).write_bytes(b"z")
    out, files = node_cache.fill_caches(dict(FIXED))
    shipped = {Path(k).name for k in files}
    assert shipped >= {*DATA_FILES, "model.pt", "meta.json"}
    assert not shipped & {"lock", "x.part", "y.lock"}
    assert all(files[k] == (mona_cache / k).read_bytes() for k in files)
    assert out["cache_bytes"] == sum(len(b) for b in files.values())
    assert set(out) == {"data_s", "source_model_s", "probe_s", "cache_bytes", "provenance"}
    assert any(Path(k).parts[0] == "probe" for k in files)  # the trials' reference line
    assert out["provenance"]["source.data"] == "digits"  # what the driver logs (provenance.py)
    assert not any("file-hashes" in k for k in files), "the hash cache stays on its node"
    alone, none = node_cache.fill_caches(dict(FIXED), ship=False)  # a single node ships nothing
    assert none == {} and alone["cache_bytes"] == 0
    assert alone["provenance"] == out["provenance"]
    assert 0 <= out["data_s"] < 5 and 0 <= out["source_model_s"] < 5  # both found in memory


def test_cache_files_travel_between_node_caches(tmp_path, monkeypatch):
    """What one node prepared is written whole into another node's cache, once."""
    from mona_tune.cluster.node_cache import install_files

    files = {"source/k1/model.pt": b"weights", "data/k2/a.mat": b"x" * 10}
    monkeypatch.setenv("MONA_TUNE_CACHE", str(tmp_path / "b"))
    (tmp_path / "b" / "data" / "k2").mkdir(parents=True)
    (tmp_path / "b" / "data" / "k2" / "a.mat").write_bytes(b"y" * 9)  # cut short: written again
    assert install_files(files) == 2
    assert (tmp_path / "b" / "data" / "k2" / "a.mat").read_bytes() == b"x" * 10
    assert (tmp_path / "b" / "source" / "k1" / "model.pt").read_bytes() == b"weights"
    assert install_files(files) == 0  # complete: nothing written again
    assert not list((tmp_path / "b").rglob("*.part"))


def test_prepare_nodes_names_the_node_that_failed(local_ray):
    node = Node(local_ray.node_id, local_ray.ip, 2.0, 1.0)
    with pytest.raises(MonaError) as err:
        node_cache.prepare_nodes({**FIXED, "task": "nope"}, [node], 1, 0)
    assert str(err.value).startswith(f"{node.label}: preparing the data and the source model: ")
    with pytest.raises(MonaError, match="no Ray node can hold a trial of 4 CPU"):
        node_cache.prepare_nodes(FIXED, [node], 4, 0)


def test_prepare_nodes_on_a_real_ray(local_ray, fast_source, mona_cache):
    """The node with a GPU prepares; a second name for the same node stands for another node,
    which finds the cache complete (one disk)."""
    node = Node(local_ray.node_id, local_ray.ip, 2.0, 1.0)
    twin = Node(local_ray.node_id, "10.0.0.9", 2.0, 0.0)
    t0 = time.time()
    timings = node_cache.prepare_nodes(FIXED, [twin, node], 1, 0)
    elapsed = time.time() - t0
    assert timings["prepared_on"] == node.label
    assert 0 <= timings["copy_s"] <= elapsed  # the copy's own seconds
    assert timings["nodes"] == 2 and timings["nodes_filled"] == 0
    assert timings["cache_bytes"] == sum(p.stat().st_size for p in _entry_files(mona_cache))
    assert set(timings) == {"data_s", "source_model_s", "probe_s", "cache_bytes", "copy_s",
                            "nodes", "nodes_filled", "prepared_on", "provenance"}
    alone = node_cache.prepare_nodes(FIXED, [node], 1, 0)
    assert alone["nodes"] == 1 and alone["prepared_on"] == node.label
    assert "copy_s" not in alone and "nodes_filled" not in alone
