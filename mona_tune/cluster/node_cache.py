"""The embedded data and source model, prepared once for a whole cluster before any trial.

One node (the one with the most CPUs of those that can hold a trial) generates the data and trains
the embedded source model into its cache, in a task sized to that node. The cache entries it used
then travel through Ray's object store to every other such node, which writes whatever its own
cache lacks. Every node thus trains with the same bytes (no node retrains the source model inside
its first trial, nor races another trial for it), and a cache on a filesystem all nodes share is
simply found complete. Each step has a deadline that ends in a one-line error naming the node.
"""

from __future__ import annotations

import time
from pathlib import Path

from mona_tune.errors import MonaError

PREPARE_TIMEOUT_S = 1800.0
_MAX_THREADS = 8
_SKIP = (".lock", "lock")


def fill_caches(cfg_values: dict, ship: bool = True) -> tuple[dict, dict[str, bytes]]:
    """Load the task data, the source model and its pretrained probe error of ``cfg_values`` (the
    search's fixed fields) into this node's cache; returns the seconds each took (and the bytes
    cached, and under ``provenance`` what the search trains on: train/provenance.py), and the
    files of the cache entries used (relative path -> bytes; none unless ``ship``: a single node
    keeps them on its disk, and the object store holds no copy)."""
    import torch

    from mona_tune.cache import cache_root, used_entries
    from mona_tune.config import TrainConfig
    from mona_tune.train import loaded
    from mona_tune.train.provenance import provenance
    from mona_tune.train.trainer import resolve_device

    cfg = TrainConfig(**cfg_values)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out: dict = {}
    t = time.time()
    data = loaded.task_data(cfg)
    out["data_s"] = time.time() - t
    t = time.time()
    source = loaded.source_model(cfg)
    out["source_model_s"] = time.time() - t
    t = time.time()
    loaded.pretrained_probe_error(cfg, resolve_device(cfg.device))  # the trials' reference line
    out["probe_s"] = time.time() - t
    out["provenance"] = provenance(cfg, data, source)
    root = cache_root()
    files = {}
    for entry in used_entries() if ship else ():
        for f in sorted(root.joinpath(*entry).rglob("*")):
            if f.is_file() and f.name not in _SKIP and not f.name.endswith(_SKIP) \
                    and not f.name.endswith(".part"):
                files[str(f.relative_to(root))] = f.read_bytes()
    out["cache_bytes"] = sum(len(b) for b in files.values())
    return out, files


def install_files(files: dict[str, bytes]) -> int:
    """Write the cache files this node lacks (atomically); returns how many were written."""
    from mona_tune.cache import atomic_path, cache_root

    root = cache_root()
    written = 0
    for rel, blob in files.items():
        target = root / rel
        if target.is_file() and target.stat().st_size == len(blob):
            continue
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(blob)
        written += 1
    return written


def trial_nodes(nodes: list, cpus_per_trial: float, gpus_per_trial: float) -> list:
    """The nodes that can hold a trial; none is a one-line error (Ray would wait forever)."""
    able = [n for n in nodes if n.cpus >= cpus_per_trial and n.gpus >= gpus_per_trial]
    if not able:
        have = ", ".join(f"{n.label}: {n.cpus:g} CPU, {n.gpus:g} GPU" for n in nodes)
        raise MonaError(f"no Ray node can hold a trial of {cpus_per_trial:g} CPU and "
                        f"{gpus_per_trial:g} GPU ({have}); lower --cpus-per-trial / "
                        "--gpus-per-trial or add nodes")
    return able


def fill_plan(fixed: dict, able: list, here: str,
              gpus_per_trial: float) -> tuple[object, float, float, dict]:
    """Which of the ``able`` nodes prepares (the most CPUs, then GPUs; ties go to ``here``, the
    driver's node), its task's CPUs (at most ``_MAX_THREADS``) and GPUs (one when trials use a
    GPU and it has one), and the config it fills with (as many threads as CPUs unless set)."""
    first = max(able, key=lambda n: (n.cpus, n.gpus, n.node_id == here))
    cpus = min(first.cpus, float(_MAX_THREADS))
    gpus = 1.0 if gpus_per_trial > 0 and first.gpus >= 1 else 0.0
    values = {**fixed, "num_threads": fixed.get("num_threads") or max(1, int(cpus))}
    return first, cpus, gpus, values


def copy_timeout(timeout: float, elapsed: float) -> float:
    """What is left of ``timeout`` for copying the cache, never under a minute."""
    return max(60.0, timeout - elapsed)


def prepare_nodes(fixed: dict, nodes: list, cpus_per_trial: float, gpus_per_trial: float,
                  timeout: float = PREPARE_TIMEOUT_S) -> dict:
    """Fill the caches of every node that can hold a trial; returns timings (seconds),
    ``prepared_on`` (the node that prepared), ``nodes`` (those that can hold a trial),
    ``nodes_filled`` (those that received files) and ``cache_bytes``."""
    import ray

    from mona_tune.cluster.nodes import gather, pinned

    able = trial_nodes(nodes, cpus_per_trial, gpus_per_trial)
    first, cpus, gpus, values = fill_plan(fixed, able, ray.get_runtime_context().get_node_id(),
                                          gpus_per_trial)
    others = [n for n in able if n is not first]
    t0 = time.time()
    # the files stay in the object store and go from that node to the others, not via the driver
    timings_ref, files_ref = pinned(fill_caches, first, num_cpus=cpus, num_gpus=gpus,
                                    num_returns=2).remote(values, bool(others))
    timings: dict = dict(gather({first: timings_ref}, timeout,
                                "preparing the data and the source model")[first])
    if others:
        t1 = time.time()
        refs = {n: pinned(install_files, n, num_cpus=0).remote(files_ref) for n in others}
        written = gather(refs, copy_timeout(timeout, t1 - t0), "copying the prepared cache")
        timings["copy_s"] = time.time() - t1
        timings["nodes_filled"] = sum(1 for w in written.values() if w)
    timings["nodes"] = len(able)
    timings["prepared_on"] = first.label
    return timings
