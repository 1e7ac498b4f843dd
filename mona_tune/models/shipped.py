"""The embedded source model the package ships: the digits Swin of ``EMBEDDED_RECIPE``, trained.

Training it takes about 80 s of one CPU core, most of a first run's time. So the package holds the
weights that recipe gives (``embedded/digits.safetensors``, 1.2 MB) with what they were made from
and on (``embedded/digits.json``: the cache key, the held-out accuracy, torch and timm versions,
the CPU). :func:`mona_tune.models.source.embedded_source_model` copies them into the cache where
its key equals theirs; any other key (another recipe, architecture or source data) trains as
before. They are the recipe's own output, not a stand-in, which this module reproduces:

    python -m mona_tune.models.shipped --check   # train again with the recipe, compare bit for bit
    python -m mona_tune.models.shipped --write   # train and write the files (after a recipe change)

Bit for bit holds on the same CPU kind with the same torch and timm, with one thread and the
recipe's seed; another CPU (another instruction set in torch's kernels) or torch version rounds
differently and training then drifts: ``--check`` says so and compares the held-out accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import torch
from torch import nn

SHIPPED_DIR = Path(__file__).parent / "embedded"
SHIPPED_DATA = "digits"
THREADS = 1  # the shipped weights are trained with one torch thread (reproducible)
ACCURACY_TOLERANCE = 0.02  # --check on another CPU kind: held-out accuracy within this


def files(data: str = SHIPPED_DATA) -> tuple[Path, Path]:
    return SHIPPED_DIR / f"{data}.safetensors", SHIPPED_DIR / f"{data}.json"


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``state``'s tensors (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def platform_info() -> dict:
    """What the bits of a training run depend on besides the recipe and the data."""
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "cpu": _cpu_name()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def read_meta(data: str = SHIPPED_DATA) -> dict | None:
    path = files(data)[1]
    return json.loads(path.read_text()) if path.is_file() else None


def shipped_weights(key: str, net: nn.Module) -> tuple[dict, dict] | None:
    """The shipped state dict and its meta where the shipped model has cache key ``key`` and
    loads into ``net`` (this timm's Swin); None otherwise (the caller trains)."""
    from safetensors.torch import load_file

    for meta_path in sorted(SHIPPED_DIR.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            continue
        weights = meta_path.with_suffix(".safetensors")
        try:
            state = load_file(str(weights))
            if tensors_sha256(state) != meta["weights_sha256"]:
                return None  # a damaged install: train instead
            net.load_state_dict(state)
        except Exception:  # noqa: BLE001 - missing file, another timm's layout: train instead
            return None
        info = {k: meta[k] for k in ("heldout_accuracy", "train_seconds", "threads")}
        info["shipped"] = {k: meta[k] for k in ("weights_sha256", *platform_keys())}
        return state, info
    return None


def train(data_name: str = SHIPPED_DATA) -> tuple[dict, dict]:
    """Train the embedded model on ``data_name`` as the recipe says, with :data:`THREADS`
    threads; its state dict and the meta the package ships beside it."""
    from mona_tune.models import source as src

    data = src.load_source_data(data_name)
    recipe, key = src.embedded_recipe_key(data)
    mean, std = src.EMBEDDED_MEAN_STD
    model = src.SourceModel("embedded", src._embedded_net(data.num_classes), mean, std)
    net, info = src._pretrain(model, data, recipe, True, None, threads=THREADS)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    meta = {"key": key, "arch": src.EMBEDDED_ARCH, "recipe": recipe, "data": data.name,
            "n_pretrain": len(data.y_pretrain), **info, "weights_sha256": tensors_sha256(state),
            **platform_info()}
    return state, meta


def platform_keys() -> tuple[str, ...]:
    return ("torch", "timm", "cpu_capability", "machine", "cpu")


def same_platform(meta: dict) -> bool:
    here = platform_info()
    return all(meta.get(k) == v for k, v in here.items())


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="train again and compare")
    mode.add_argument("--write", action="store_true", help="train and write the shipped files")
    args = ap.parse_args(argv)
    state, meta = train()
    weights, meta_path = files()
    if args.write:
        SHIPPED_DIR.mkdir(exist_ok=True)
        save_file(state, str(weights))
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {weights} ({weights.stat().st_size} bytes) and {meta_path}: key "
              f"{meta['key']}, held-out accuracy {meta['heldout_accuracy']:.4f}")
        return 0
    shipped = read_meta()
    if shipped is None or shipped["key"] != meta["key"]:
        print(f"the shipped model's key {shipped and shipped['key']} is not the recipe's "
              f"{meta['key']}: run with --write")
        return 1
    if same_platform(shipped):
        ok = meta["weights_sha256"] == shipped["weights_sha256"]
        print(f"bit for bit: {'identical' if ok else 'DIFFERENT'} (sha256 "
              f"{meta['weights_sha256'][:16]} vs shipped {shipped['weights_sha256'][:16]})")
        return 0 if ok else 1
    gap = abs(meta["heldout_accuracy"] - shipped["heldout_accuracy"])
    print(f"another platform ({platform_info()} vs the shipped {shipped['cpu_capability']}, "
          f"torch {shipped['torch']}, timm {shipped['timm']}): not bit for bit; held-out "
          f"accuracy {meta['heldout_accuracy']:.4f} vs shipped "
          f"{shipped['heldout_accuracy']:.4f}")
    return 0 if gap <= ACCURACY_TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
