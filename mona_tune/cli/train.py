"""``mona-tune train``: flags over an optional YAML file -> TrainConfig -> Trainer -> JSON line.

Progress goes to stderr, one line per epoch; the final metrics go to stdout as ONE JSON line.
With ``--out DIR`` a complete checkpoint is kept in ``DIR/checkpoint`` after every epoch, and at
the end ``DIR/final.json`` and the learned embedder ``DIR/embedder`` (for ``--init-embedder``);
``--resume`` continues from ``DIR/checkpoint``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

from mona_tune.cli.common import float_or_none, read_yaml
from mona_tune.errors import MonaError


# TrainConfig fields set through --config alone: a pair, and the paper's constant t = 2
CONFIG_ONLY = ("uniformity_t", "betas")


def _flag_type(annotation):
    """The argparse type of a TrainConfig field: its own scalar type, ``float_or_none`` where
    ``none`` switches the field off, ``str`` for a choice (TrainConfig validates the value, so a
    bad one is the same one-line error as in a --config file); None for a boolean switch."""
    import types
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (types.UnionType, typing.Union) and len(args) == 1
    base = args[0] if optional else annotation
    if base is bool:
        return None
    if base is float and optional:
        return float_or_none
    if base in (int, float, str):
        return base
    if typing.get_origin(base) is typing.Literal:
        return str
    raise TypeError(f"no flag type for {annotation!r}")  # a new kind of field: say how here


def train_flags() -> dict[str, object]:
    """TrainConfig field -> its flag's argparse type (None: a switch), every field but
    :data:`CONFIG_ONLY`."""
    from mona_tune.config import TrainConfig

    return {name: _flag_type(field.annotation) for name, field in TrainConfig.model_fields.items()
            if name not in CONFIG_ONLY}


def _help(name: str) -> str:
    from mona_tune.config import TrainConfig

    field = TrainConfig.model_fields[name]
    text = field.description or name.replace("_", " ")
    return text if field.default in (None, False) else f"{text} (default: {field.default})"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="YAML file of TrainConfig fields; flags override it")
    for name, typ in train_flags().items():
        flag = "--" + name.replace("_", "-")
        if typ is None:
            parser.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS,
                                help=_help(name))
        else:
            parser.add_argument(flag, dest=name, type=typ, default=argparse.SUPPRESS,
                                help=_help(name))
    parser.add_argument("--out", type=Path, default=None,
                        help="keep a checkpoint per epoch, final.json and the embedder here")
    parser.add_argument("--resume", action="store_true", help="continue from --out DIR")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="log the run to this MLflow store (experiment mona-tune-<task>, "
                             "role train): its config, what it trains on, its metrics")


def _overrides(args: argparse.Namespace) -> dict:
    keys = set(train_flags())
    return {k: v for k, v in vars(args).items() if k in keys}


def build_config(args: argparse.Namespace):
    from mona_tune.config import TrainConfig

    base = read_yaml(args.config) if "config" in args else {}
    return TrainConfig(**{**base, **_overrides(args)})


def _progress(cfg):
    def show(trainer, m: dict) -> None:
        stage, total = m["stage"], (cfg.stage1_epochs if m["stage"] == 1 else cfg.epochs)
        val = f"val_{trainer.metric}"
        parts = [f"[{cfg.method} {cfg.task}] stage {stage} epoch {m['epoch']}/{total}",
                 f"train_loss {m['train_loss']:.4g}", f"{val} {m[val]:.4g}"]
        if "outer_loss" in m:
            parts.append(f"inner {m['inner_loss']:.4g} align {m['align_loss']:.4g} "
                         f"uniform {m['uniform_loss']:.4g}")
        for name in ("otdd", "mmd"):
            if name in m:
                parts.append(f"{name} {m[name]:.4g}")
        parts.append(f"lr {m['lr']:.2e}")
        if "source_probe_error" in m:
            parts.append(f"source_probe_error {m['source_probe_error']:.3f}")
        parts.append(f"{m['epoch_seconds']:.1f}s")
        print("  ".join(parts), file=sys.stderr, flush=True)
    return show


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _check_places(cfg, out: Path | None) -> None:
    """The output folder, the weights file and an ``--init-embedder`` folder, before the data and
    the models load."""
    from mona_tune.extras import check_extras
    from mona_tune.models.assemble import embedder_files
    from mona_tune.paths import check_creatable

    if out is not None:
        check_creatable(out, "--out")
    check_extras(cfg)
    if cfg.weights:  # weights that cannot be read: before the model is built
        from mona_tune.models.load import check_weights

        check_weights(cfg.weights, cfg.source_model)
    if cfg.init_embedder:
        d = Path(cfg.init_embedder).expanduser()
        _, weights_path = embedder_files(d)
        from safetensors import safe_open

        try:
            with safe_open(str(weights_path), "pt"):  # reads the header only
                pass
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError
            raise MonaError(f"cannot read the embedder in {d}: {type(e).__name__}: {e}") from None


class _Tracked:
    """The MLflow run of ``--tracking-uri``: params at the start (config and provenance),
    metrics per epoch (step: the global epoch) and at the end; a no-op without the flag."""

    def __init__(self, uri: str | None):
        from mona_tune.tracking import mlflow_runs as mr
        from mona_tune.tracking.server import check_store

        self.mr, self.run_id = mr, None
        self.uri = mr.normalize_tracking_uri(uri) if uri else None
        if self.uri:  # a store that does not answer: one line before the data load
            check_store(self.uri)

    def start(self, trainer, provenance: dict) -> None:
        if self.uri:
            cfg = trainer.cfg
            exp = self.mr.ensure_experiment(self.uri, cfg.task)
            self.run_id = self.mr.start_train_run(
                self.uri, exp, task=cfg.task, params={**cfg.model_dump(mode="json"),
                                                      **provenance})

    def epoch(self, trainer, metrics: dict) -> None:
        if self.run_id:
            step = metrics["epoch"] + (trainer.cfg.stage1_epochs if metrics["stage"] == 2 else 0)
            self.mr.log_metrics(self.uri, self.run_id, metrics, step=step)

    def finish(self, final: dict) -> None:
        if self.run_id:
            settings = ("stage1_epochs", "epochs", "seed")  # numbers that are no results
            step = final["stage1_epochs"] + final["epochs"]
            self.mr.log_metrics(self.uri, self.run_id,
                                {k: v for k, v in final.items() if k not in settings}, step=step)
            self.mr.end_run(self.uri, self.run_id, "FINISHED")

    @contextlib.contextmanager
    def closing(self):
        """The run ends FAILED (KILLED on an interrupt) when training does not finish."""
        try:
            yield
        except BaseException as err:
            if self.run_id:
                status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
                self.mr.end_run(self.uri, self.run_id, status)
            raise


def train_from_args(args: argparse.Namespace) -> int:
    from mona_tune.cache import atomic_path
    from mona_tune.config import check_scale
    from mona_tune.train.trainer import CHECKPOINT_FILE, Trainer

    from mona_tune.tasks import get_task
    from mona_tune.tasks.registry import check_fields
    from mona_tune.train.provenance import announce

    cfg = build_config(args)
    check_fields(get_task(cfg.task), cfg.model_fields_set, f"train --task {cfg.task}")
    check_scale(cfg, f"train --task {cfg.task}")
    out: Path | None = args.out
    _check_places(cfg, out)
    if args.resume and out is None:
        raise MonaError("--resume needs --out DIR (the directory of the run to continue)")
    ckpt = out / "checkpoint" if out else None
    has_ckpt = ckpt is not None and (ckpt / CHECKPOINT_FILE).is_file()
    if has_ckpt and not args.resume:
        raise MonaError(f"{out} already holds a run; pass --resume to continue it, "
                        "or choose another --out")

    progress = None if args.quiet else _progress(cfg)
    tracked = _Tracked(args.tracking_uri)

    def on_epoch(trainer, metrics):
        if progress:
            progress(trainer, metrics)
        tracked.epoch(trainer, metrics)
        if ckpt is not None:
            trainer.save_checkpoint(ckpt)

    if has_ckpt:
        trainer = Trainer.from_checkpoint(ckpt, callback=on_epoch)
        given = _overrides(args)
        if "config" in args:
            given = {**read_yaml(args.config), **given}
        clash = [f"{k}={v!r} (checkpoint: {getattr(trainer.cfg, k)!r})" for k, v in given.items()
                 if getattr(trainer.cfg, k) != getattr(cfg, k)]
        if clash:
            raise MonaError(f"--resume: the run in {out} was started with other settings: "
                            + ", ".join(clash))
        if progress:
            print(f"resuming {out} at stage {trainer.stage} epoch {trainer.epoch}",
                  file=sys.stderr, flush=True)
    else:
        if args.resume and progress:
            print(f"nothing to resume in {out}; starting a new run", file=sys.stderr, flush=True)
        trainer = Trainer(cfg, callback=on_epoch)

    tracked.start(trainer, announce(trainer))
    with tracked.closing():
        final = _json_safe(trainer.fit())
        tracked.finish(final)
    if out is not None:
        with atomic_path(out / "final.json") as tmp:
            tmp.write_text(json.dumps(final, indent=1) + "\n")
        trainer.save_embedder(out / "embedder")
    print(json.dumps(final), flush=True)
    return 0
