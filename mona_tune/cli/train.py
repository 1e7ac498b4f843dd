"""``mona-tune train``: flags over an optional YAML file -> TrainConfig -> Trainer -> JSON line.

Progress goes to stderr, one line per epoch; the final metrics go to stdout as ONE JSON line.
With ``--out DIR`` a complete checkpoint is kept in ``DIR/checkpoint`` after every epoch, and at
the end ``DIR/final.json`` and the learned embedder ``DIR/embedder`` (for ``--init-embedder``);
``--resume`` continues from ``DIR/checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mona_tune.cli.common import float_or_none, read_yaml
from mona_tune.errors import MonaError


# flag -> TrainConfig field, for flags whose value is the field's value. TrainConfig validates the
# values (bounds, consistency), so a bad one is the same one-line error as in a --config file.
# Only ``uniformity_t`` (the paper's t = 2) and ``betas`` (a pair) are set through --config alone.
_FIELD_FLAGS = {
    "task": str, "method": str, "lam": float, "inner_lr": float, "warmup_epochs": int,
    "epochs": int, "seed": int, "data_dir": str, "source_model": str, "weights": str,
    "source_data": str, "device": str, "batch_size": int, "lr": float, "init_embedder": str,
    "stage1_lr": float, "source_batch_size": int, "probe_every": int, "num_threads": int,
    "n_train": int, "n_test": int, "val_fraction": float, "resolution": int, "beta": float,
    "weight_decay": float, "lr_warmup_epochs": float, "grad_clip": float_or_none,
    "probe_samples": int, "orca_distance": str,
}
_HELP = {
    "task": "task name (darcy, pdebench-darcy)",
    "method": "mona, emb, orca, ft or scratch",
    "lam": "λ: weight of MoNA's outer (alignment + uniformity) loss",
    "inner_lr": "α: step size of MoNA's simulated inner fine-tuning step",
    "warmup_epochs": "stage-1 epochs (embedder only)",
    "epochs": "stage-2 epochs (fine-tuning everything)",
    "data_dir": "directory of real data files (default: the embedded generated data)",
    "source_model": "timm Swin name, e.g. swin_base_patch4_window7_224.ms_in22k "
                    "(default: the embedded digits Swin)",
    "weights": "local checkpoint or .safetensors for --source-model (offline machines)",
    "source_data": "digits (default), fractals (FractalDB-style, generated) or cifar10:DIR (the "
                   "CIFAR-10 python-pickle directory)",
    "device": "auto (CUDA when present), cpu, cuda, cuda:N",
    "init_embedder": "an embedder directory written by a previous run (skips stage 1)",
    "probe_every": "measure source_probe_error every k stage-2 epochs (always at the end)",
    "n_train": "training samples read from the data (default: the task's)",
    "n_test": "test samples read from the data (default: the task's)",
    "val_fraction": "validation samples as a share of the training samples (darcy: the "
                    "smooth2 samples after the test block where the file holds them, else held "
                    "out of the training samples)",
    "resolution": "grid points per side after subsampling (default: 85 for darcy, "
                  "64 for pdebench-darcy)",
    "beta": "PDEBench Darcy β: reads 2D_DarcyFlow_beta<β>_Train.hdf5 from --data-dir",
    "weight_decay": "AdamW weight decay of stage 2",
    "lr_warmup_epochs": "stage-2 epochs of linear learning-rate warm-up",
    "grad_clip": "gradient-norm clipping; 'none' switches it off",
    "probe_samples": "held-out source images of the linear probe (half fit, half scored)",
    "orca_distance": "orca's stage-1 distance: otdd (as published) or mmd (cheaper)",
}


def _help(name: str) -> str:
    from mona_tune.config import TrainConfig

    field = TrainConfig.model_fields[name]
    text = _HELP.get(name) or field.description or name.replace("_", " ")
    return text if field.default is None else f"{text} (default: {field.default})"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="YAML file of TrainConfig fields; flags override it")
    for name, typ in _FIELD_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=typ,
                            default=argparse.SUPPRESS, help=_help(name))
    parser.add_argument("--bf16", action="store_true", default=argparse.SUPPRESS,
                        help="bfloat16 autocast")
    parser.add_argument("--first-order", dest="first_order", action="store_true",
                        default=argparse.SUPPRESS,
                        help="first-order (finite-difference) MoNA gradient")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep a checkpoint per epoch, final.json and the embedder here")
    parser.add_argument("--resume", action="store_true", help="continue from --out DIR")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")


def _overrides(args: argparse.Namespace) -> dict:
    keys = set(_FIELD_FLAGS) | {"bf16", "first_order"}
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
    from mona_tune.models.assemble import embedder_files
    from mona_tune.paths import check_creatable

    if out is not None:
        check_creatable(out, "--out")
    if cfg.weights:  # a file that is no checkpoint: before the model is built
        from mona_tune.models.encoder import read_state_dict

        read_state_dict(Path(cfg.weights).expanduser())
    if cfg.init_embedder:
        d = Path(cfg.init_embedder).expanduser()
        _, weights_path = embedder_files(d)
        from safetensors import safe_open

        try:
            with safe_open(str(weights_path), "pt"):  # reads the header only
                pass
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError
            raise MonaError(f"cannot read the embedder in {d}: {type(e).__name__}: {e}") from None


def train_from_args(args: argparse.Namespace) -> int:
    from mona_tune.cache import atomic_path
    from mona_tune.train.trainer import CHECKPOINT_FILE, Trainer

    cfg = build_config(args)
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

    def on_epoch(trainer, metrics):
        if progress:
            progress(trainer, metrics)
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

    final = _json_safe(trainer.fit())
    if out is not None:
        with atomic_path(out / "final.json") as tmp:
            tmp.write_text(json.dumps(final, indent=1) + "\n")
        trainer.save_embedder(out / "embedder")
    print(json.dumps(final), flush=True)
    return 0
