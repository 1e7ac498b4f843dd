"""Fill the disk caches (task data, source model) once, before trials race for them."""

from __future__ import annotations

import time


def fill_caches(cfg_values: dict) -> dict:
    """Load the task data and the source model of ``cfg_values`` (the search's fixed fields);
    returns the seconds each took. Runs in a Ray worker (started by ``driver.warm_caches``): generated data
    and the trained embedded source model land in the user cache, where every trial finds them."""
    import torch

    from mona_tune.config import TrainConfig
    from mona_tune.train import resources

    cfg = TrainConfig(**cfg_values)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out: dict[str, float] = {}
    t = time.time()
    resources.task_data(cfg)
    out["data_s"] = time.time() - t
    t = time.time()
    resources.source_model(cfg)
    out["source_model_s"] = time.time() - t
    return out
