"""The trainer: one two-stage run (stage 1 = embedder only, stage 2 = everything), resumable.

    trainer = Trainer(cfg, callback=lambda t, m: print(m))
    final = trainer.fit()          # {"test_rel_l2": ..., "source_probe_error": ..., ...}

After every epoch ``callback(trainer, metrics)`` runs; it may call ``trainer.save_checkpoint(dir)``
and ``trainer.request_stop()``. ``Trainer.from_checkpoint(dir).fit()`` then continues exactly where
the run stopped: same weights, optimiser and scheduler states, RNG states and data order, so the
final metrics equal those of an uninterrupted run (on CPU).

Per-epoch metrics: ``stage`` (1|2), ``epoch`` (1-based within the stage), ``stage2_epoch`` (0 in
stage 1), ``train_loss`` (the objective minimised that epoch, averaged over its samples),
``val_<metric>``, ``lr``, ``epoch_seconds``; stage 1 of ``mona`` adds ``inner_loss``,
``outer_loss``, ``align_loss``, ``uniform_loss``, of ``orca`` ``otdd`` (or ``mmd``);
``source_probe_error`` and its standard error ``source_probe_error_se`` every ``probe_every``
stage-2 epochs and after the last. (In stage 1 the encoder does not change, so its probe error is
the pretrained one.)

This module never imports Ray or MLflow: the search wraps it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mona_tune.cache import atomic_path
from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError
from mona_tune.models.assemble import build_target_model, read_embedder, write_embedder
from mona_tune.models.source import cpu_threads
from mona_tune.tasks import resolve_task
from mona_tune.train import faults, loaded
from mona_tune.train.otdd import fit_pseudo_label_centres
from mona_tune.train.probe import ProbeEstimate, source_probe
from mona_tune.train.stage1 import STAGE1_METHODS, Stage1Batch

CHECKPOINT_FILE = "trainer.pt"
CHECKPOINT_FORMAT = 1
EVAL_BATCH = 64

Callback = Callable[["Trainer", dict], None]


class TrainingDiverged(MonaError):
    """A loss, gradient or metric became NaN or infinite: the run stops instead of going on."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MonaError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MonaError(f"device {name!r} requested but CUDA is not available here")
    return device


def cpu_lacks(precision: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has no instructions for ``precision`` (bf16, fp16): autocast then
    emulates it, many times slower than fp32 (15x for a Swin-T step on an AVX2 CPU). False where
    the CPU's flags cannot be read."""
    want = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}
    if precision not in want:
        return False
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return not flags.intersection(want[precision])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: TrainConfig, callback: Callback | None = None, *,
                 _restoring: bool = False):
        self.cfg = cfg
        self.callback = callback
        self.device = resolve_device(cfg.device)
        torch.set_num_threads(cpu_threads(cfg.num_threads))
        if self.device.type == "cpu" and cpu_lacks(cfg.precision):
            warnings.warn(f"precision {cfg.precision} on a CPU without {cfg.precision} "
                          "instructions: autocast emulates it, many times slower than fp32 "
                          "(--precision fp32 there)", stacklevel=2)

        # shared, cached per process (never modified here)
        self.task = resolve_task(cfg)
        self.data = loaded.task_data(cfg)
        self.source_data = loaded.source_data(cfg)
        self.source = loaded.source_model(cfg)
        if cfg.method == "mona" and len(self.source_data.y_align) < 2:
            raise MonaError("method mona needs labelled source images for its outer loss")

        seed_everything(cfg.seed)
        d = self.data
        self.model = build_target_model(
            self.source, in_channels=d.x_train.shape[1], in_shape=d.in_shape,
            output=self.task.output, out_channels=self.task.out_channels, out_shape=d.out_shape,
            random_encoder=cfg.method == "scratch",
        ).to(self.device)
        self.model.encoder.grad_checkpointing = cfg.grad_checkpointing
        self.source_embedder = copy.deepcopy(self.source.embedder).to(self.device)
        # fp16 scales every loss before its backward pass and unscales the gradients (skipping
        # a step whose gradients overflowed); disabled, it passes everything through unchanged
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        # orca's OTDD labels a dense target by k-means on its training outputs (ORCA's
        # pseudo-labels); a classification target has its own labels
        self.orca_centres = None
        if cfg.method == "orca" and cfg.orca_distance == "otdd" and self.task.output == "dense":
            self.orca_centres = fit_pseudo_label_centres(d.y_train, cfg.seed)
        if cfg.init_embedder and not _restoring:
            read_embedder(cfg.init_embedder, self.model, self.source.model_id)

        # tensors on the device once (small at every scale this tool runs)
        dev = self.device
        self.x_train, self.y_train = d.x_train.to(dev), d.y_train.to(dev)
        self.x_val, self.y_val = d.x_val.to(dev), d.y_val.to(dev)
        self.x_test, self.y_test = d.x_test.to(dev), d.y_test.to(dev)
        y_align = self.source_data.y_align
        self._align_by_class = [torch.nonzero(y_align == c).flatten()
                                for c in torch.unique(y_align)]

        # optimisers: stage 1 sees the embedder only, stage 2 everything
        self.opt1 = torch.optim.AdamW(self.model.embedder.parameters(), lr=cfg.stage1_lr,
                                      betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.opt2 = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                      weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.x_train) / cfg.batch_size)
        # a plain function: LambdaLR's state then holds no attributes of a method, only numbers
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt2, lambda s: self._lr_factor(s))

        # generators of the data order: target batches and source batches
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.source_gen = torch.Generator().manual_seed(cfg.seed + 7919)

        self.stage = 1 if cfg.stage1_epochs > 0 else 2
        self.epoch = 0  # epochs completed in the current stage
        self.history: list[dict] = []
        self.seconds = 0.0
        self.probe_pretrained: float | None = None
        self._stop = False

    # ------------------------------------------------------------------ small helpers
    @property
    def metric(self) -> str:
        return self.task.metric

    @property
    def finished(self) -> bool:
        return self.stage == 2 and self.epoch >= self.cfg.epochs

    def request_stop(self) -> None:
        """Make :meth:`fit` return after the current epoch (its callback included)."""
        self._stop = True

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up over ``lr_warmup_epochs``, then cosine decay (per optimisation step)."""
        total = self.cfg.epochs * self.steps_per_epoch
        warm = min(round(self.cfg.lr_warmup_epochs * self.steps_per_epoch), total)
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    def _autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _loss_scale(self) -> float:
        """S of fp16's scaler for stage 1, whose gradients come from ``torch.autograd.grad``
        (scaling a unit tensor is the scaler's public way to start and read its scale); 1 when
        the scaler is off."""
        if not self.scaler.is_enabled():
            return 1.0
        return float(self.scaler.scale(torch.ones((), device=self.device)))

    def _step(self, opt: torch.optim.Optimizer, params: list, what: str, step: int) -> float:
        """Unscale (fp16), clip and apply the gradients in ``params``' ``.grad``; the learning
        rate used. An overflow under fp16 skips the step (the scaler lowers its scale); in
        fp32 and bf16 a non-finite gradient norm stops the run."""
        self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip or math.inf)
        if not self.scaler.is_enabled():
            self._check(norm, what, step)
        lr = opt.param_groups[0]["lr"]
        self.scaler.step(opt)
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        return lr

    def _loss(self, pred: Tensor, y: Tensor) -> Tensor:
        return self.task.loss(self.data.decode(pred.float()), y)

    def _embed_source(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.source_embedder(self.source.prepare(images.to(self.device)))

    def _batches(self):
        order = torch.randperm(len(self.x_train), generator=self.data_gen).to(self.device)
        for idx in order.split(self.cfg.batch_size):
            yield self.x_train[idx], self.y_train[idx]

    def _source_batch(self) -> tuple[Tensor, Tensor]:
        """A class-balanced batch of alignment images: ``source_batch_size // 2`` classes (at most
        all of them) with equal counts, so both the same-class pairs of the alignment loss and the
        different-class pairs of the uniformity loss are present."""
        b, gen = self.cfg.source_batch_size, self.source_gen
        groups = self._align_by_class
        k = max(1, min(len(groups), b // 2))
        chosen = torch.randperm(len(groups), generator=gen)[:k].tolist()
        idx = []
        for j, c in enumerate(chosen):
            count = b // k + (1 if j < b % k else 0)
            pool_ = groups[c]
            if len(pool_) >= count:
                pick = torch.randperm(len(pool_), generator=gen)[:count]
            else:
                pick = torch.randint(len(pool_), (count,), generator=gen)
            idx.append(pool_[pick])
        idx = torch.cat(idx)
        sd = self.source_data
        return self._embed_source(sd.x_align[idx]), sd.y_align[idx].to(self.device)

    def _check(self, value: Tensor | float, what: str, step: int) -> None:
        v = float(value.detach() if isinstance(value, Tensor) else value)
        if not math.isfinite(v):
            c = self.cfg
            raise TrainingDiverged(
                f"training diverged: {what} is {v} at stage {self.stage} epoch {self.epoch + 1} "
                f"step {step} (method {c.method}, lr {c.lr:g}, stage1_lr {c.stage1_lr:g}, "
                f"inner_lr {c.inner_lr:g}, lam {c.lam:g}); lower the learning rates or lam")

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> float:
        """The task metric averaged over samples (predictions decoded first)."""
        self.model.eval()
        try:
            values = []
            for xb, yb in zip(x.split(EVAL_BATCH), y.split(EVAL_BATCH)):
                with self._autocast():
                    pred = self.model(xb)
                values.append(self.task.metric_per_sample(self.data.decode(pred.float()), yb))
            return float(torch.cat(values).mean())
        finally:
            self.model.train()

    def probe(self) -> ProbeEstimate:
        """``source_probe_error`` of the current encoder (see :mod:`mona_tune.train.probe`)."""
        sd = self.source_data
        with self._autocast():
            return source_probe(self.model.encoder, self._embed_source, sd.x_probe, sd.y_probe)

    # ------------------------------------------------------------------ steps and epochs
    def stage1_step(self, x: Tensor, y: Tensor, step: int = 0) -> dict:
        """One stage-1 update of the embedder on the target batch ``(x, y)`` (and a source batch
        where the method uses one); the step's logs. ``step`` only names it in errors."""
        cfg, model = self.cfg, self.model
        method = STAGE1_METHODS[cfg.method]  # stage1_epochs is 0 for ft and scratch
        params = list(model.embedder.parameters())
        with self._autocast():
            xs, ys = self._source_batch() if method.uses_source else (None, None)
            grads, logs = method.gradient(Stage1Batch(
                model, x, y, self._loss, xs, ys, cfg, self.orca_centres, self._loss_scale()))
        self._check(logs["loss"], "the stage-1 loss", step)
        for p, g in zip(params, grads):
            p.grad = g.to(p.dtype)
        self._step(self.opt1, params, "the embedder gradient norm", step)
        return logs

    def stage2_step(self, x: Tensor, y: Tensor, step: int = 0) -> tuple[Tensor, float]:
        """One stage-2 update of the whole model on ``(x, y)``: the loss and the learning rate."""
        with self._autocast():
            loss = self._loss(self.model(x), y)
        self._check(loss, "the training loss", step)
        self.opt2.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        lr = self._step(self.opt2, list(self.model.parameters()), "the gradient norm", step)
        self.sched.step()
        return loss, lr

    def _stage1_epoch(self) -> dict:
        cfg = self.cfg
        sums: dict[str, float] = {}
        seen = 0
        for step, (x, y) in enumerate(self._batches()):
            logs = self.stage1_step(x, y, step)
            n = len(x)
            seen += n
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
        out = {("train_loss" if k == "loss" else k): v / seen for k, v in sums.items()}
        out["lr"] = cfg.stage1_lr
        return out

    def _stage2_epoch(self) -> dict:
        total, seen, lr = 0.0, 0, self.cfg.lr
        for step, (x, y) in enumerate(self._batches()):
            loss, lr = self.stage2_step(x, y, step)
            total += float(loss.detach()) * len(x)
            seen += len(x)
        return {"train_loss": total / seen, "lr": lr}

    def _run_epoch(self) -> dict:
        if self.stage == 1 and self.epoch >= self.cfg.stage1_epochs:
            self.stage, self.epoch = 2, 0
        injected = faults.at_epoch(self.cfg, self.stage, self.epoch + 1)  # tests only
        if injected is not None:
            self._check(injected, "the training loss", 0)
        t0 = time.perf_counter()
        self.model.train()
        out = self._stage1_epoch() if self.stage == 1 else self._stage2_epoch()
        self.epoch += 1
        m = {"stage": self.stage, "epoch": self.epoch,
             "stage2_epoch": self.epoch if self.stage == 2 else 0, **out}
        val = self.evaluate(self.x_val, self.y_val)
        self._check(val, f"val_{self.metric}", self.steps_per_epoch)
        m[f"val_{self.metric}"] = val
        every = self.cfg.probe_every
        if self.stage == 2 and (self.finished or (every and self.epoch % every == 0)):
            probed = self.probe()
            m["source_probe_error"], m["source_probe_error_se"] = probed.error, probed.se
        m["epoch_seconds"] = time.perf_counter() - t0
        return m

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict:
        """Run the remaining epochs (stage 1, then stage 2) and return the final metrics.

        After a :meth:`request_stop` from the callback, returns the last epoch's metrics with
        ``"stopped": True`` instead.
        """
        t0 = time.perf_counter()
        self._stop = False
        if self.probe_pretrained is None:
            self.probe_pretrained = loaded.pretrained_probe_error(self.cfg, self.device)
        while not self.finished:
            m = self._run_epoch()
            self.history.append(m)
            self.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            if self.callback is not None:
                self.callback(self, m)
            if self._stop:
                return {**m, "stopped": True}
        test = self.evaluate(self.x_test, self.y_test)
        self._check(test, f"test_{self.metric}", 0)
        self.seconds += time.perf_counter() - t0
        return self.final_metrics(test)

    def final_metrics(self, test: float) -> dict:
        key = f"val_{self.metric}"
        vals = [h[key] for h in self.history if key in h]
        best = (min if self.task.direction == "min" else max)(vals) if vals else float("nan")
        last = self.history[-1] if self.history else {}
        probed = next((h for h in reversed(self.history) if "source_probe_error" in h), {})
        return {
            "task": self.cfg.task, "method": self.cfg.method,
            f"test_{self.metric}": test, key: last.get(key, float("nan")),
            f"best_val_{self.metric}": best,
            "source_probe_error": probed.get("source_probe_error", float("nan")),
            "source_probe_error_se": probed.get("source_probe_error_se", float("nan")),
            "source_probe_error_pretrained": self.probe_pretrained,
            "train_loss": last.get("train_loss", float("nan")),
            "stage1_epochs": self.cfg.stage1_epochs, "epochs": self.cfg.epochs,
            "seed": self.cfg.seed, "source_model": self.source.model_id,
            "seconds": self.seconds,
        }

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        rng = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(),
            "python": random.getstate(),
            "data_gen": self.data_gen.get_state(),
            "source_gen": self.source_gen.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "cfg": self.cfg.model_dump_json(),
            "stage": self.stage, "epoch": self.epoch, "history": self.history,
            "seconds": self.seconds, "probe_pretrained": self.probe_pretrained,
            "embedder": self.model.embedder.state_dict(),
            "encoder": self.model.encoder.state_dict(),
            "predictor": self.model.predictor.state_dict(),
            "opt1": self.opt1.state_dict(), "opt2": self.opt2.state_dict(),
            "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng,
        }

    def save_checkpoint(self, directory: Path) -> None:
        """The complete state in ``directory/trainer.pt`` (plus a readable ``config.json``).

        Written aside and renamed into place, so a checkpoint that exists is whole.
        """
        directory = Path(directory)
        with atomic_path(directory / CHECKPOINT_FILE) as tmp:
            torch.save(self.state_dict(), tmp)
        with atomic_path(directory / "config.json") as tmp:
            tmp.write_text(self.cfg.model_dump_json(indent=1) + "\n")

    @classmethod
    def from_checkpoint(cls, directory: Path, callback: Callback | None = None) -> Trainer:
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            raise MonaError(f"no trainer checkpoint in {directory} ({CHECKPOINT_FILE} missing)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise MonaError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise MonaError(f"checkpoint {path} has format {state.get('format')!r}, "
                            f"this version reads {CHECKPOINT_FORMAT}")
        cfg = TrainConfig.model_validate_json(state["cfg"])
        trainer = cls(cfg, callback, _restoring=True)
        trainer.load_state_dict(state)
        return trainer

    def load_state_dict(self, state: dict) -> None:
        self.model.embedder.load_state_dict(state["embedder"])
        self.model.encoder.load_state_dict(state["encoder"])
        self.model.predictor.load_state_dict(state["predictor"])
        self.opt1.load_state_dict(state["opt1"])
        self.opt2.load_state_dict(state["opt2"])
        self.sched.load_state_dict(state["sched"])
        if state.get("scaler"):  # fp16 runs; absent from checkpoints written before it existed
            self.scaler.load_state_dict(state["scaler"])
        self.stage, self.epoch = int(state["stage"]), int(state["epoch"])
        self.history = list(state["history"])
        self.seconds = float(state["seconds"])
        self.probe_pretrained = state["probe_pretrained"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        _set_numpy_state(rng["numpy"])
        random.setstate(_as_tuple(rng["python"]))
        self.data_gen.set_state(rng["data_gen"])
        self.source_gen.set_state(rng["source_gen"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save_embedder(self, directory: Path) -> None:
        """The target embedder: ``embedder.safetensors`` + ``embedder.json``.

        The JSON holds everything needed to rebuild and check it (kind, in_channels, in_shape,
        encoder width, image and patch size, token grid, source model id) and where it came from.
        ``--init-embedder DIR`` loads it and skips stage 1.
        """
        c = self.cfg
        write_embedder(directory, self.model, {
            "task": c.task, "in_shape": list(self.data.in_shape),
            "source_model": self.source.model_id, "method": c.method, "lam": c.lam,
            "inner_lr": c.inner_lr, "warmup_epochs": c.warmup_epochs,
            "first_order": c.first_order, "seed": c.seed, "stage": self.stage,
            "epoch": self.epoch, "format": 1,
        })


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_state(s: dict) -> None:
    keys = s["keys"].numpy().astype(np.uint32)
    np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["gauss"]))


def _as_tuple(x):
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x
