"""Reproduce the shipped embedded source model (:mod:`mona_tune.models.shipped`) from its recipe:

    python -m mona_tune.models.ship --check   # train again with the recipe, compare bit for bit
    python -m mona_tune.models.ship --write   # train and write the files (after a recipe change)

Bit for bit holds on the same CPU kind with the same torch and timm, with one thread and the
recipe's seed; elsewhere ``--check`` says so and compares the held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys

from mona_tune.models import source as src
from mona_tune.models.shipped import (ACCURACY_TOLERANCE, SHIPPED_DATA, SHIPPED_DIR, THREADS,
                                      files, platform_info, read_meta, same_platform,
                                      tensors_sha256)


def train(data_name: str = SHIPPED_DATA, *, seed: int | None = None, threads: int = THREADS,
          progress: bool = True) -> tuple[dict, dict]:
    """Train the embedded model on ``data_name`` as the recipe says, with :data:`THREADS`
    threads; its state dict and the meta the package ships beside it. ``seed`` and ``threads``
    other than the recipe's measure how far its result moves (benchmarks/cpu_spread.py); the meta's
    key stays the recipe's."""
    data = src.load_source_data(data_name)
    recipe, key = src.embedded_recipe_key(data)
    if seed is not None:
        recipe = {**recipe, "seed": seed}
    mean, std = src.EMBEDDED_MEAN_STD
    model = src.SourceModel("embedded", src._embedded_net(data.num_classes), mean, std)
    net, info = src._pretrain(model, data, recipe, progress, None, threads=threads)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    meta = {"key": key, "arch": src.EMBEDDED_ARCH, "recipe": recipe, "data": data.name,
            "n_pretrain": len(data.y_pretrain), **info, "weights_sha256": tensors_sha256(state),
            **platform_info()}
    return state, meta


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
