"""What a run trains on, as MLflow params and as the lines it prints at its start.

``data.*``: the data folder, each data file by the split it holds (``data.train_file``,
``data.train_bytes``, ``data.train_sha256``; ``all`` for one file of every split) and the sample
counts; ``source.*``: the source model and the hash of its weights (``embedded`` for the
embedded Swin), the source data and, where they are files, their path and hash; ``platform.*``:
torch, timm, the CPU and torch's kernel choice on it (``cpu_capability``: another one rounds
differently, and trained numbers move within the spread benchmarks/cpu_spread.py measures).
Hashes come from the per-node cache of :mod:`mona_tune.cache`, so a trial does not re-read a
multi-GB file.
Values are local paths, names and numbers: nothing that holds a password.
"""

from __future__ import annotations

from mona_tune.config import TrainConfig
from mona_tune.cache import file_sha256, path_bytes, path_sha256
from mona_tune.models.shipped import platform_info
from mona_tune.models.source import DEFAULT_SOURCE_DATA, SourceModel
from mona_tune.tasks import TaskData

EMBEDDED = "embedded"


def _hashed(prefix: str, path) -> dict:
    return {f"{prefix}_bytes": path_bytes(path), f"{prefix}_sha256": path_sha256(path)}


def provenance(cfg: TrainConfig, data: TaskData, source: SourceModel) -> dict[str, object]:
    """The params of what ``cfg`` trains on: ``data`` and ``source`` as loaded for it."""
    out: dict[str, object] = {"data.dir": cfg.data_dir or f"{EMBEDDED} (generated)"}
    for role, path in data.files.items():
        out[f"data.{role}_file"] = str(path)
        out[f"data.{role}_bytes"] = path.stat().st_size
        out[f"data.{role}_sha256"] = file_sha256(path)
    out.update({"data.n_train": len(data.x_train), "data.n_val": len(data.x_val),
                "data.n_test": len(data.x_test)})
    out["source.model"] = source.model_id
    if cfg.weights:
        out["source.weights"] = cfg.weights
        out.update(_hashed("source.weights", cfg.weights))
    else:  # the embedded Swin, or weights its library downloaded (not hashed here)
        out["source.weights"] = EMBEDDED if cfg.source_model is None else "downloaded"
        out["source.weights_sha256"] = EMBEDDED if cfg.source_model is None else "unknown"
    name, _, argument = (cfg.source_data or DEFAULT_SOURCE_DATA).partition(":")
    out["source.data"] = name
    if argument:
        out["source.data_path"] = argument
        out.update(_hashed("source.data", argument))
    out.update({f"platform.{k}": v for k, v in platform_info().items()})
    return out


def provenance_lines(p: dict[str, object]) -> list[str]:
    """``p`` (:func:`provenance`) as a few lines for a run's start."""
    lines = [f"trains on data {p['data.dir']}: {p['data.n_train']} train, {p['data.n_val']} "
             f"val, {p['data.n_test']} test samples"]
    roles = [k[len("data."):-len("_file")] for k in p if k.endswith("_file")]
    lines += [f"  {role} file {p[f'data.{role}_file']} ({p[f'data.{role}_bytes']} bytes, "
              f"sha256 {p[f'data.{role}_sha256']})" for role in roles]
    weights = p["source.weights"]
    if "source.weights_bytes" in p:
        weights = (f"{weights} ({p['source.weights_bytes']} bytes, "
                   f"sha256 {p['source.weights_sha256']})")
    lines.append(f"  source model {p['source.model']}, weights {weights}")
    data = p["source.data"]
    if "source.data_path" in p:
        data = (f"{data} {p['source.data_path']} ({p['source.data_bytes']} bytes, "
                f"sha256 {p['source.data_sha256']})")
    lines.append(f"  source data {data}")
    return lines


def announce(trainer, file=None) -> dict[str, object]:
    """The provenance of a built ``Trainer``, printed (stderr: a train run's stdout is its JSON
    line) and returned for the run's params."""
    import sys

    p = provenance(trainer.cfg, trainer.data, trainer.source)
    print("\n".join(provenance_lines(p)), file=file or sys.stderr, flush=True)
    return p
