"""``--task arrays``: a user's own data as arrays, dense fields or class labels, 1D or 2D.

Layouts (``--data-dir``):
- a folder with ``train.npz`` and ``test.npz`` (and optionally ``val.npz``), each holding arrays
  ``x`` and ``y``;
- one HDF5 file (the path itself, or the only ``.h5``/``.hdf5`` file of the folder) with groups
  ``train``, ``test`` (and optionally ``val``), each holding datasets ``x`` and ``y``.

``x`` is ``(N, C, L)`` (1D) or ``(N, C, H, W)`` (2D). ``y`` is a field ``(N, K, ...)`` of floats
with the same spatial rank as ``x`` (dense), or ``(N,)`` integer labels ``0..K-1``
(classification; ``K`` = the largest training label + 1). The kind is read from ``y``'s dtype
(``target_kind`` overrides it); the metric (``metric``) is one of :data:`METRICS` for that kind.

Without ``val``, the last ``val_fraction`` of the training samples validate. Inputs (and dense
targets) are normalised per grid point with statistics of the fitting samples only.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mona_tune.errors import MonaError
from mona_tune.tasks.metrics import nrmse_loss, nrmse_per_sample, rel_l2_loss, rel_l2_per_sample
from mona_tune.tasks.normalize import UnitGaussianNormalizer
from mona_tune.tasks.registry import Task, TaskData, register, validation_size

SPLITS = ("train", "val", "test")


def _mse_per_sample(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).flatten(1).pow(2).mean(1)


def _error_per_sample(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(1) != labels).float()


def _accuracy_per_sample(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(1) == labels).float()


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)


# metric -> (kind, direction, per-sample metric, training loss)
METRICS = {
    "rel_l2": ("dense", "min", rel_l2_per_sample, rel_l2_loss),
    "nrmse": ("dense", "min", nrmse_per_sample, nrmse_loss),
    "mse": ("dense", "min", _mse_per_sample, F.mse_loss),
    "error_rate": ("classes", "min", _error_per_sample, _cross_entropy),
    "accuracy": ("classes", "max", _accuracy_per_sample, _cross_entropy),
}
DEFAULT_METRIC = {"dense": "rel_l2", "classes": "error_rate"}


@dataclass(frozen=True)
class ArraySplit:
    """Where one split's ``x`` and ``y`` are, their shapes and dtypes (nothing read yet)."""

    split: str
    file: Path  # the .npz of the split, or the HDF5 file holding its group
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    y_dtype: np.dtype

    @property
    def where(self) -> str:
        """The file, and the group for HDF5: named in every message."""
        return str(self.file) if self.file.suffix == ".npz" else f"{self.file} group {self.split}"


def find_layout(data_dir: str) -> tuple[str, Path]:
    """``("npz", folder)`` or ``("hdf5", file)``; one line when neither is there."""
    path = Path(data_dir).expanduser()
    if path.is_file() and path.suffix in (".h5", ".hdf5"):
        return "hdf5", path
    if not path.is_dir():
        raise MonaError(f"--data-dir {path}: no such folder or HDF5 file")
    if (path / "train.npz").is_file() or (path / "test.npz").is_file():
        return "npz", path
    h5 = sorted(p for p in path.iterdir() if p.suffix in (".h5", ".hdf5"))
    if len(h5) == 1:
        return "hdf5", h5[0]
    if len(h5) > 1:
        raise MonaError(f"--data-dir {path} holds {len(h5)} HDF5 files; name one of them")
    raise MonaError(f"--data-dir {path}: no train.npz/test.npz and no HDF5 file (task arrays)")


def _npz_header(file: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an ``.npz`` without reading its data."""
    try:
        with zipfile.ZipFile(file) as z, z.open(f"{name}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
    except KeyError:
        raise MonaError(f"{file}: no array {name!r} (arrays x and y are needed)") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise MonaError(f"{file}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return tuple(shape), np.dtype(dtype)


def _h5_header(file: Path, split: str) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype]:
    import h5py

    try:
        with h5py.File(file, "r") as f:
            if split not in f:
                raise KeyError(split)
            g = f[split]
            for name in ("x", "y"):
                if not isinstance(g.get(name), h5py.Dataset):
                    raise MonaError(f"{file}: group {split!r} has no dataset {name!r}")
            return tuple(g["x"].shape), tuple(g["y"].shape), g["y"].dtype
    except OSError as e:
        raise MonaError(f"{file}: not a readable HDF5 file ({e})") from None


def read_splits(data_dir: str) -> dict[str, ArraySplit]:
    """Every split present, with its shapes; ``train`` and ``test`` are required."""
    layout, where = find_layout(data_dir)
    out = {}
    for split in SPLITS:
        if layout == "npz":
            file = where / f"{split}.npz"
            if not file.is_file():
                continue
            (xs, _), (ys, ydt) = _npz_header(file, "x"), _npz_header(file, "y")
            out[split] = ArraySplit(split, file, xs, ys, ydt)
        else:
            try:
                xs, ys, ydt = _h5_header(where, split)
            except KeyError:
                continue
            out[split] = ArraySplit(split, where, xs, ys, ydt)
    for needed in ("train", "test"):
        if needed not in out:
            raise MonaError(f"--data-dir {where}: no {needed} split (task arrays needs train "
                            "and test, val is optional)")
    return out


def target_kind(splits: dict[str, ArraySplit], override: str = "auto") -> str:
    """``dense`` or ``classes``: ``override`` unless ``auto``, else from ``y``'s dtype."""
    train = splits["train"]
    if override != "auto":
        return override
    return "classes" if train.y_dtype.kind in "iub" else "dense"


def check_shapes(splits: dict[str, ArraySplit], kind: str) -> None:
    """Ranks and per-sample shapes agree across splits and between ``x`` and ``y``."""
    train = splits["train"]
    for s in splits.values():
        if len(s.x_shape) not in (3, 4):
            raise MonaError(f"{s.where}: x has shape {s.x_shape}; (N, C, L) or (N, C, H, W) "
                            "is needed")
        n_y = s.y_shape[0] if s.y_shape else 0
        if s.x_shape[0] != n_y:
            raise MonaError(f"{s.where}: x holds {s.x_shape[0]} samples, y {n_y}")
        if s.x_shape[0] < 1:
            raise MonaError(f"{s.where}: no samples")
        if s.x_shape[1:] != train.x_shape[1:]:
            raise MonaError(f"{s.where}: x is {s.x_shape[1:]} per sample, the training split's "
                            f"{train.x_shape[1:]}")
        if kind == "classes" and len(s.y_shape) != 1:
            raise MonaError(f"{s.where}: y has shape {s.y_shape}; class labels are (N,)")
        if kind == "dense":
            if len(s.y_shape) != len(s.x_shape):
                raise MonaError(f"{s.where}: y has shape {s.y_shape}; a dense target has x's "
                                f"rank, (N, K{', L' if len(s.x_shape) == 3 else ', H, W'})")
            if s.y_shape[1:] != train.y_shape[1:]:
                raise MonaError(f"{s.where}: y is {s.y_shape[1:]} per sample, the training "
                                f"split's {train.y_shape[1:]}")


def pick_metric(kind: str, metric: str | None) -> str:
    name = metric or DEFAULT_METRIC[kind]
    if name not in METRICS:
        raise MonaError(f"--metric {name!r}: unknown (known: {', '.join(METRICS)})")
    if METRICS[name][0] != kind:
        fits = ", ".join(m for m, v in METRICS.items() if v[0] == kind)
        raise MonaError(f"--metric {name} is for {METRICS[name][0]} targets; these targets are "
                        f"{kind} ({fits})")
    return name


def _read(split: ArraySplit, name: str, n: int | None) -> np.ndarray:
    """The first ``n`` samples of array ``name`` of a split."""
    if split.file.suffix == ".npz":
        with np.load(split.file, allow_pickle=False) as z:
            return np.asarray(z[name][:n])
    import h5py

    with h5py.File(split.file, "r") as f:
        return np.asarray(f[split.split][name][:n])


def _checked(split: ArraySplit, name: str, a: np.ndarray, labels: bool) -> Tensor:
    if labels:
        return torch.from_numpy(a.astype(np.int64))
    if not np.issubdtype(a.dtype, np.number):
        raise MonaError(f"{split.where}: {name} is {a.dtype}, not numbers")
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise MonaError(f"{split.where}: {name} holds {int(bad.sum())} NaN or infinite values "
                        f"(first at {first})")
    return torch.from_numpy(a.astype(np.float32))


def _labels_in_range(splits: dict[str, ArraySplit], ys: dict[str, Tensor]) -> int:
    k = int(ys["train"].max()) + 1
    for s, y in ys.items():
        if int(y.min()) < 0 or int(y.max()) >= k:
            raise MonaError(f"{splits[s].where}: labels {int(y.min())}..{int(y.max())} out of "
                            f"range 0..{k - 1} (the training labels')")
    if k < 2:
        raise MonaError(f"{splits['train'].where}: y holds one class; classification needs 2")
    return k


def configure_arrays(cfg) -> Task:
    """The arrays task with its shapes, kind and metric read from ``cfg.data_dir``'s headers."""
    if cfg.data_dir is None:
        raise MonaError("task arrays needs --data-dir (train.npz and test.npz, or an HDF5 file "
                        "with groups train and test; see README 'Your own data')")
    splits = read_splits(cfg.data_dir)
    kind = target_kind(splits, cfg.target_kind)
    check_shapes(splits, kind)
    metric = pick_metric(kind, cfg.metric)
    _, direction, per_sample, loss = METRICS[metric]
    train = splits["train"]
    if kind == "classes":  # K from the training labels (small: one integer a sample)
        out_channels = int(_read(train, "y", cfg.n_train).max()) + 1
    else:
        out_channels = train.y_shape[1]
    return dataclasses.replace(
        ARRAYS, in_channels=train.x_shape[1], in_shape=train.x_shape[2:], output=kind,
        out_channels=out_channels, metric=metric, direction=direction, loss=loss,
        metric_per_sample=per_sample, configure=None)


def load_arrays(cfg) -> TaskData:
    """Read, check, split and normalise (statistics of the fitting samples only)."""
    splits = read_splits(cfg.data_dir)
    kind = target_kind(splits, cfg.target_kind)
    check_shapes(splits, kind)
    n = {"train": cfg.n_train, "test": cfg.n_test, "val": None}
    xs = {s: _checked(sp, "x", _read(sp, "x", n[s]), False) for s, sp in splits.items()}
    ys = {s: _checked(sp, "y", _read(sp, "y", n[s]), kind == "classes")
          for s, sp in splits.items()}
    info = {"layout": splits["train"].where, "target": kind}
    if kind == "classes":
        info["classes"] = _labels_in_range(splits, ys)
    if "val" not in splits:
        n_val = validation_size(len(xs["train"]), cfg.val_fraction)
        if n_val >= len(xs["train"]):
            raise MonaError(f"{splits['train'].where}: {len(xs['train'])} training samples "
                            "leave none to fit after the validation share")
        for d in (xs, ys):
            d["train"], d["val"] = d["train"][:-n_val], d["train"][-n_val:]
        info["validation"] = f"last {n_val} training samples"
    x_norm = UnitGaussianNormalizer(xs["train"])
    xs = {s: x_norm.encode(x) for s, x in xs.items()}
    decode = _identity
    if kind == "dense":
        y_norm = UnitGaussianNormalizer(ys["train"])
        decode = y_norm.decode
    info.update({f"n_{s}": len(x) for s, x in xs.items()})
    files = {s: sp.file for s, sp in splits.items()}
    if len(set(files.values())) == 1:  # one HDF5 file of every split
        files = {"all": splits["train"].file}
    return TaskData(xs["train"], ys["train"], xs["val"], ys["val"], xs["test"], ys["test"],
                    decode, info, files)


def _identity(t: Tensor) -> Tensor:
    return t


ARRAYS = register(Task(
    name="arrays",
    description="your own arrays (--data-dir: train/test .npz or an HDF5 file): dense fields "
                "or class labels, 1D or 2D",
    in_channels=0, in_shape=(), output="dense", out_channels=0, metric="rel_l2", direction="min",
    loss=rel_l2_loss, metric_per_sample=rel_l2_per_sample, load=load_arrays,
    configure=configure_arrays, fields=frozenset({"target_kind", "metric"}),
))
