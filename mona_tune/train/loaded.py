"""Heavy shared things, loaded once per process and keyed by the config fields they depend on.

Ray reuses actors across trials; with these caches a new trial of the same task and source model
finds the task data, the source data, the source model and the pretrained probe reference
already in memory (the probe reference also on disk, per node). Everything returned is shared:
callers must not modify it in place.
"""

from __future__ import annotations

import functools

import torch

from mona_tune.config import TrainConfig
from mona_tune.models.load import load_source_model
from mona_tune.models.source import DEFAULT_SOURCE_DATA, SourceData, SourceModel, load_source_data
from mona_tune.tasks import TaskData, get_task

# bump when the probe's definition changes: the values cached on disk are then computed again
PROBE_CACHE_FORMAT = 1

# The TrainConfig fields a task loader may read (see mona_tune.tasks).
TASK_DATA_FIELDS = ("task", "data_dir", "n_train", "n_test", "val_fraction", "resolution", "beta",
                    "nu", "rho", "target_kind")


def task_data(cfg: TrainConfig) -> TaskData:
    return _task_data(tuple((f, getattr(cfg, f)) for f in TASK_DATA_FIELDS))


@functools.lru_cache(maxsize=4)
def _task_data(fields: tuple) -> TaskData:
    # Load through a config holding only these fields, so the cache key is complete by design.
    cfg = TrainConfig(**dict(fields))
    return get_task(cfg.task).load(cfg)


def source_data(cfg: TrainConfig) -> SourceData:
    return _source_data(cfg.source_data or DEFAULT_SOURCE_DATA, cfg.probe_samples)


@functools.lru_cache(maxsize=2)
def _source_data(spec: str, probe_samples: int) -> SourceData:
    return load_source_data(spec, probe_samples)


def source_model(cfg: TrainConfig) -> SourceModel:
    return _source_model(cfg.source_model, cfg.weights, cfg.source_data or DEFAULT_SOURCE_DATA,
                         cfg.probe_samples)


@functools.lru_cache(maxsize=2)
def _source_model(name: str | None, weights: str | None, data_spec: str,
                  probe_samples: int) -> SourceModel:
    return load_source_model(name, weights, _source_data(data_spec, probe_samples))


def pretrained_probe_error(cfg: TrainConfig, device: torch.device) -> float:
    """``source_probe_error`` of the pretrained encoder: the reference line of every run.

    Computed once per node and device type and kept on disk under ``probe/``, keyed by the bytes
    of the source model and of its probe images (not by names or paths): the search's preparation
    computes it and ships it with the cache, so its trials, and later runs, read it instead of
    probing again (at paper scale, 400 probe images through a Swin-B: about 3 minutes on a 2-core
    CPU, which evaluates 0.41 s per image)."""
    return _pretrained_probe_error(cfg.source_model, cfg.weights, cfg.source_data or DEFAULT_SOURCE_DATA,
                                   cfg.probe_samples, str(device))


def probe_key(src: SourceModel, data: SourceData, device_type: str) -> str:
    """What the pretrained probe's value depends on: the source model's weights and
    normalisation, the probe images and labels, the probe's settings and the device type."""
    from mona_tune.cache import config_key
    from mona_tune.models.shipped import tensors_sha256
    from mona_tune.train.probe import FOLDS, REPEATS

    return config_key({
        "format": PROBE_CACHE_FORMAT, "folds": FOLDS, "repeats": REPEATS, "device": device_type,
        "weights": tensors_sha256(src.net.state_dict()), "mean": list(src.mean),
        "std": list(src.std), "probe": tensors_sha256({"x": data.x_probe, "y": data.y_probe})})


@functools.lru_cache(maxsize=4)
def _pretrained_probe_error(name, weights, data_spec, probe_samples, device: str) -> float:
    import copy
    import json

    from mona_tune.cache import atomic_path, cache_dir
    from mona_tune.train.probe import source_probe_error

    src = _source_model(name, weights, data_spec, probe_samples)
    data = _source_data(data_spec, probe_samples)
    path = cache_dir("probe", probe_key(src, data, torch.device(device).type)) / "error.json"
    try:
        return float(json.loads(path.read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    body = src.body().to(device)
    source_embedder = copy.deepcopy(src.embedder).to(device)

    def embed(images):
        return source_embedder(src.prepare(images.to(device)))

    error = source_probe_error(body, embed, data.x_probe, data.y_probe)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"error": error, "source_model": src.model_id,
                                   "source_data": data_spec, "probe_samples": probe_samples,
                                   "device": device}) + "\n")
    return error


def clear() -> None:
    """Forget everything cached (tests)."""
    for f in (_task_data, _source_data, _source_model, _pretrained_probe_error):
        f.cache_clear()
