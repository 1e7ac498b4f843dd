"""The source side: the pretrained source model and the labelled source data.

Source model
    ``source_model=None`` (the default) is the *embedded* source model: a small timm Swin trained
    once on scikit-learn's handwritten digits and cached under ``cache_dir("source", key)``, the key
    being a hash of its architecture, recipe and data, so every later run and trial reuses it. A
    timm name gives that model with timm's pretrained weights, or with a local ``weights`` file.

Source data (``source_data``)
    ``digits`` (default): scikit-learn's 1797 8×8 digits, split once (fixed permutation) into
    pretraining (1097, trains the embedded model), alignment (300, stage-1 outer-loss batches) and
    probe (400, held out: the linear probe of ``source_probe_error``) parts.
    ``fractals``: formula-driven images (:mod:`mona_tune.models.fractals`, FractalDB-style): 32
    fractal categories × 64 instances at 32×32, generated in seconds from a fixed seed; per
    category 40 pretraining, 10 alignment and 14 probe instances. Measured against ``digits``
    in ``benchmarks/source_transfer.py``: neither source makes fine-tuning beat training from
    scratch on the embedded Darcy task (see benchmarks/RESULTS.md).
    ``cifar10:DIR``: the CIFAR-10 python-pickle directory (``data_batch_1..5``, ``test_batch``),
    never downloaded. Pretraining = the 50000 training images; the 10000 test images, permuted
    once, give alignment (first 1000) and probe (the next ``probe_samples``) parts.

Images are kept as uint8 ``(N, 3, h, w)`` at their native resolution; :meth:`SourceModel.prepare`
resizes them to the source model's input size and normalises them with its mean and std.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mona_tune.cache import atomic_path, cache_dir, config_key
from mona_tune.errors import MonaError
from mona_tune.models.embedders import init_from_source
from mona_tune.models.encoder import DROP_PATH_RATE, SwinBody, create_timm_swin

def trial_threads(cpus_per_trial: float) -> int:
    """Torch threads of a trial given ``cpus_per_trial`` CPUs (at least 1)."""
    return max(1, int(round(cpus_per_trial)))


def cpu_threads(requested: int | None = None) -> int:
    """Torch CPU threads: ``requested``, else half the usable cores (at least 1).

    More threads than free cores makes OpenMP's per-operation barriers wait on descheduled
    threads; with the small operations of the embedded model a step then becomes many times
    slower. Half the cores leaves room for a second run (or the tests) on the same machine.
    """
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 2) // 2)


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- the embedded source model
# Trains in about 80 s on one CPU thread and reaches 0.945 on held-out digits; the package ships
# the digits model this recipe gives (mona_tune/models/shipped.py), so a first run does not train it.
EMBEDDED_ARCH = dict(img_size=32, patch_size=4, window_size=4, embed_dim=48, depths=(2, 2),
                     num_heads=(3, 6), mlp_ratio=4.0)
EMBEDDED_RECIPE = dict(epochs={"digits": 50, "fractals": 40, "cifar10": 8}, batch_size=64,
                       lr=3e-3, weight_decay=0.05, shift=2, seed=0, version=1)
EMBEDDED_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

DIGITS_SPLIT = (1097, 300, 400)  # pretraining, alignment, probe
DEFAULT_SOURCE_DATA = "digits"
CIFAR_ALIGN = 1000


@dataclass(frozen=True)
class SourceData:
    """Labelled source images (uint8, ``(N, 3, h, w)``) in three disjoint parts."""

    name: str
    num_classes: int
    x_pretrain: Tensor
    y_pretrain: Tensor
    x_align: Tensor
    y_align: Tensor
    x_probe: Tensor
    y_probe: Tensor
    modality: str = "image"  # or "text": UTF-8 bytes, one zero-padded uint8 row per sample


# name -> loader(argument, probe_samples): ``source_data`` is ``NAME`` or ``NAME:ARGUMENT``
# (``cifar10:DIR``). A new source is a loader registered with :func:`register_source_data` and its
# name in ``config.SOURCE_DATA`` (which checks a config without importing the models).
SOURCE_DATASETS: dict[str, Callable[[str, int], SourceData]] = {}


def register_source_data(name: str):
    def add(fn: Callable[[str, int], SourceData]):
        if name in SOURCE_DATASETS:
            raise ValueError(f"source data {name!r} registered twice")
        SOURCE_DATASETS[name] = fn
        return fn
    return add


def load_source_data(spec: str | None, probe_samples: int = 400) -> SourceData:
    """``digits`` (default), ``fractals`` or ``cifar10:DIR``; see the module docstring."""
    name, _, argument = (spec or DEFAULT_SOURCE_DATA).partition(":")
    if name not in SOURCE_DATASETS:
        raise MonaError(f"unknown source data {spec!r} (known: "
                        + ", ".join(sorted(SOURCE_DATASETS)) + ")")
    return SOURCE_DATASETS[name](argument, probe_samples)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten digits as uint8 images ``(N, 8, 8)`` in 0..255 and int64
    labels, kept in the cache after the first read (importing ``sklearn.datasets`` costs a
    second in every new trial process; reading the arrays, milliseconds)."""
    path = cache_dir("source-data", "digits-v1") / "digits.npz"
    try:
        with np.load(path) as f:
            return f["images"], f["labels"]
    except (OSError, KeyError, ValueError):
        pass
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=images, labels=labels)
    return images, labels


@register_source_data("digits")
def _digits(_: str, probe_samples: int) -> SourceData:
    images, labels = digits_arrays()
    x = torch.from_numpy(images)[:, None]
    x = x.expand(-1, 3, -1, -1).contiguous()  # grey -> 3 channels
    y = torch.from_numpy(labels)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    a, b, _ = DIGITS_SPLIT
    pre, ali, pro = perm[:a], perm[a:a + b], perm[a + b:][:probe_samples]
    return SourceData("digits", 10, x[pre], y[pre], x[ali], y[ali], x[pro], y[pro])


@register_source_data("fractals")
def _fractals(_: str, probe_samples: int) -> SourceData:
    from mona_tune.models.fractals import fractal_images

    x, y, part = fractal_images()
    x = torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(y)
    part = torch.from_numpy(part)
    gen = torch.Generator().manual_seed(0)  # mix the categories within each part
    pre, ali, pro = (torch.nonzero(part == i).flatten() for i in range(3))
    pre, ali, pro = (p[torch.randperm(len(p), generator=gen)] for p in (pre, ali, pro))
    pro = pro[:probe_samples]
    return SourceData("fractals", int(y.max()) + 1, x[pre], y[pre], x[ali], y[ali], x[pro],
                      y[pro])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a file that names any other callable
    (a pickle that would run code) is refused, like ``torch.load(weights_only=True)`` does."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name} (only numpy arrays are read)")


def _read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise MonaError(f"{path} is not a CIFAR-10 python pickle batch: {type(e).__name__}: {e}") \
            from None
    if len(data) != len(labels):
        raise MonaError(f"{path}: {len(data)} images but {len(labels)} labels")
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


@register_source_data("cifar10")
def _cifar10(directory: str, probe_samples: int) -> SourceData:
    root = Path(directory).expanduser()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not root.is_dir():
        raise MonaError(f"CIFAR-10 directory {root} not found (--source-data cifar10:DIR, the "
                        "python-pickle version: data_batch_1..5, test_batch)")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise MonaError(f"CIFAR-10 directory {root} lacks {', '.join(missing)}")
    parts = [_read_cifar_batch(root / n) for n in names[:5]]
    x_pre = torch.cat([p[0] for p in parts])
    y_pre = torch.cat([p[1] for p in parts])
    x_test, y_test = _read_cifar_batch(root / "test_batch")
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y_test)))
    n_align = min(CIFAR_ALIGN, len(perm) // 2)
    ali, pro = perm[:n_align], perm[n_align:][:probe_samples]
    if len(pro) < 4:
        raise MonaError(f"CIFAR-10 test_batch in {root} has too few images for a probe")
    return SourceData(f"cifar10:{root}", 10, x_pre, y_pre, x_test[ali], y_test[ali],
                      x_test[pro], y_test[pro])


TEXT_ALIGN = 1000
TEXT_MAX_BYTES = 4096  # per text; the tokenizer keeps far fewer tokens than this


def encode_texts(texts: list[str]) -> Tensor:
    """Texts as UTF-8 bytes, one zero-padded uint8 row each (indexable like images)."""
    raw = [t.encode("utf-8")[:TEXT_MAX_BYTES] for t in texts]
    out = torch.zeros(len(raw), max((len(r) for r in raw), default=1), dtype=torch.uint8)
    for i, r in enumerate(raw):
        out[i, :len(r)] = torch.tensor(list(r), dtype=torch.uint8)
    return out


def decode_texts(rows: Tensor) -> list[str]:
    """The inverse of :func:`encode_texts` (a text cut inside a character loses that character)."""
    return [bytes(r).rstrip(b"\0").decode("utf-8", "ignore") for r in rows.cpu().numpy()]


def read_labelled_text(path: Path) -> tuple[list[str], list[str]]:
    """``text`` and ``label`` of every record: a CSV or TSV with a header naming both columns,
    or JSON lines with both keys."""
    import csv

    if not path.is_file():
        raise MonaError(f"text source data {path} not found (--source-data text:FILE: a .csv, "
                        ".tsv or .jsonl with text and label)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in f if line.strip()]
            elif path.suffix in (".csv", ".tsv"):
                rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
            else:
                raise MonaError(f"text source data {path}: use a .csv, .tsv or .jsonl file")
        texts = [str(r["text"]) for r in rows]
        labels = [str(r["label"]) for r in rows]
    except (KeyError, TypeError) as e:
        raise MonaError(f"text source data {path}: a record lacks the {e} field "
                        "(each needs text and label)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise MonaError(f"text source data {path} cannot be read: {type(e).__name__}: {e}") \
            from None
    return texts, labels


@register_source_data("text")
def _text(file: str, probe_samples: int) -> SourceData:
    """Labelled text, permuted once: alignment (first ``min(1000, N/2)``), then probe. No
    pretraining part: a language source model comes pretrained."""
    path = Path(file).expanduser()
    texts, labels = read_labelled_text(path)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise MonaError(f"text source data {path} needs at least 2 labels, has {len(classes)}")
    x = encode_texts(texts)
    y = torch.tensor([classes.index(label) for label in labels], dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    n_align = min(TEXT_ALIGN, len(perm) // 2)
    ali, pro = perm[:n_align], perm[n_align:][:probe_samples]
    if len(pro) < 4:
        raise MonaError(f"text source data {path} has too few records ({len(y)}) for a probe")
    return SourceData(f"text:{path}", len(classes), x[:0], y[:0], x[ali], y[ali], x[pro],
                      y[pro], modality="text")


# ---------------------------------------------------------------- the source model
@dataclass
class SourceModel:
    """A frozen pretrained Swin and what is needed to feed it.

    ``net.patch_embed`` is the frozen source embedder e_s; :meth:`body` copies the encoder f.
    """

    model_id: str
    net: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fresh_net: object = field(repr=False, default=None)  # () -> same architecture, random weights
    info: dict = field(default_factory=dict)

    modality = "image"

    def __post_init__(self):
        self.net.eval()
        self.net.requires_grad_(False)

    @property
    def patch_embed(self) -> nn.Module:
        return self.net.patch_embed

    @property
    def embedder(self) -> nn.Module:
        """The frozen source embedder e_s (shared: copy it before moving or changing it)."""
        return self.net.patch_embed

    def token_grid(self, length: int) -> tuple[int, int]:
        """The token grid a 1D target of ``length`` values is laid on: the Swin's patch grid."""
        return tuple(int(g) for g in self.net.patch_embed.grid_size)

    def init_embedder(self, embedder: nn.Module) -> None:
        """Start a target embedder from the source patch embedding (no random draws)."""
        init_from_source(embedder, self.net.patch_embed)

    @property
    def img_size(self) -> int:
        return int(self.net.patch_embed.img_size[0])

    @property
    def patch_size(self) -> int:
        return int(self.net.patch_embed.patch_size[0])

    @property
    def embed_dim(self) -> int:
        return int(self.net.patch_embed.proj.out_channels)

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) images -> the normalised input of the source model."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear",
                              align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def body(self) -> SwinBody:
        """A trainable copy of the pretrained encoder body (``layers`` + ``norm``)."""
        body = SwinBody(copy.deepcopy(self.net.layers), copy.deepcopy(self.net.norm))
        return body.requires_grad_(True).train()

    def random_body(self) -> SwinBody:
        """The same architecture randomly initialised (method ``scratch``), from torch's RNG."""
        net = self.fresh_net()
        return SwinBody(net.layers, net.norm).requires_grad_(True).train()


def timm_source_model(source_model: str, weights: str | None) -> SourceModel:
    net = create_timm_swin(source_model, weights)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    model_id = source_model if weights is None else f"{source_model}@{Path(weights).name}"

    def fresh():
        import timm

        return timm.create_model(source_model, pretrained=False, drop_path_rate=DROP_PATH_RATE)

    return SourceModel(model_id, net, mean, std, fresh, {"weights": weights})


def _embedded_net(num_classes: int) -> nn.Module:
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(**EMBEDDED_ARCH, num_classes=num_classes,
                           drop_path_rate=DROP_PATH_RATE)


def embedded_recipe_key(data: SourceData) -> tuple[dict, str]:
    """The recipe the embedded model is trained with on ``data``, and its cache key (a hash of
    the architecture, that recipe and the data)."""
    kind = data.name.split(":")[0]
    recipe = {**EMBEDDED_RECIPE, "epochs": EMBEDDED_RECIPE["epochs"][kind]}
    key = config_key({"arch": EMBEDDED_ARCH, "recipe": recipe, "data": data.name,
                      "n_pretrain": len(data.y_pretrain)})
    return recipe, key


def embedded_source_model(data: SourceData, progress: bool = True) -> SourceModel:
    """The small Swin trained on ``data``'s pretraining part; trained once, then read from cache.

    Concurrent processes (trials) serialise on a file lock: the first trains and writes the file
    atomically, the others wait and read it. Where the package ships this very model (the same
    key: :mod:`mona_tune.models.shipped`, the default on ``digits``), the first copies it into the
    cache instead of training it.
    """
    recipe, key = embedded_recipe_key(data)
    folder = cache_dir("source", key)
    weights, meta_file = folder / "model.pt", folder / "meta.json"
    mean, std = EMBEDDED_MEAN_STD
    model = SourceModel(f"embedded-swin-{key}", _embedded_net(data.num_classes), mean, std,
                        lambda: _embedded_net(data.num_classes))
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (weights.is_file() and meta_file.is_file()):
                from mona_tune.models.shipped import shipped_weights

                # the package's copy of this very model (same key), else train it here
                shipped = shipped_weights(key, model.net)
                if shipped is not None:
                    state, info = shipped
                else:
                    net, info = _pretrain(model, data, recipe, progress, folder)
                    state = net.state_dict()
                with atomic_path(weights) as tmp:
                    torch.save(state, tmp)
                with atomic_path(meta_file) as tmp:
                    tmp.write_text(json.dumps({"arch": EMBEDDED_ARCH, "recipe": recipe,
                                               "data": data.name, **info}, indent=1))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        model.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as e:  # a damaged cache entry: name it, never a traceback
        raise MonaError(f"cached source model {weights} cannot be read ({type(e).__name__}); "
                        f"delete {folder} and run again to retrain it") from None
    model.net.eval().requires_grad_(False)
    model.info = json.loads(meta_file.read_text())
    return model


def _pretrain(source: SourceModel, data: SourceData, recipe: dict, progress: bool,
              folder: Path | None, threads: int | None = None) -> tuple[nn.Module, dict]:
    """Plain supervised training (AdamW, one-cycle schedule, random shifts of ±2 pixels), with
    ``threads`` torch threads (default: this process's, at most :func:`cpu_threads`)."""
    t0 = time.perf_counter()
    if progress:
        print(f"training the embedded source model on {data.name} (once; cached in {folder})",
              file=sys.stderr, flush=True)
    gen = torch.Generator().manual_seed(recipe["seed"])
    threads = threads or min(torch.get_num_threads(), cpu_threads())
    with torch.random.fork_rng(devices=[]), torch_threads(threads):
        torch.manual_seed(recipe["seed"])
        net = _embedded_net(data.num_classes)
        x_all, y_all = data.x_pretrain, data.y_pretrain
        bs, n = recipe["batch_size"], len(y_all)
        steps_per_epoch = max(1, n // bs)
        opt = torch.optim.AdamW(net.parameters(), lr=recipe["lr"],
                                weight_decay=recipe["weight_decay"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe["lr"], total_steps=recipe["epochs"] * steps_per_epoch,
            pct_start=0.1)
        s = recipe["shift"]
        net.train()
        for epoch in range(recipe["epochs"]):
            order = torch.randperm(n, generator=gen)
            for i in range(steps_per_epoch):
                idx = order[i * bs:(i + 1) * bs]
                x = source.prepare(x_all[idx])
                dx, dy = torch.randint(-s, s + 1, (2,), generator=gen).tolist()
                x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
                loss = F.cross_entropy(net(x), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if progress and (epoch + 1) % 10 == 0:
                print(f"  source epoch {epoch + 1}/{recipe['epochs']} loss {loss.item():.3f}",
                      file=sys.stderr, flush=True)
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(source.prepare(x)) for x in data.x_probe.split(256)])
        acc = (logits.argmax(1) == data.y_probe).float().mean().item()
    seconds = time.perf_counter() - t0
    if progress:
        print(f"embedded source model: held-out accuracy {acc:.3f} ({seconds:.0f} s)",
              file=sys.stderr, flush=True)
    return net, {"heldout_accuracy": acc, "train_seconds": seconds, "threads": threads}
