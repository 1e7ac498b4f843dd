"""How much the choice of split moves ``source_probe_error``: one random half split vs the probe.

On the pretrained embedded encoder (or ``--source-data``), the standard deviation over ``--seeds``
split seeds of: the error of one random fit/score half split (the probe before repeated splits),
and the probe's estimate (repeated stratified k-fold) at 1, 2 and 4 repetitions, with the probe's
own reported standard error and its time. The last line is the headline.

    python benchmarks/probe_noise.py [--seeds 20] [--source-data fractals]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mona_tune.config import TrainConfig
from mona_tune.train import loaded
from mona_tune.train.probe import (
    REPEATS,
    linear_probe_error,
    probe_estimate,
    probe_features,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--source-data", default=None)
    args = ap.parse_args()
    cfg = TrainConfig(device="cpu", source_data=args.source_data)
    src, data = loaded.source_model(cfg), loaded.source_data(cfg)
    embedder = copy.deepcopy(src.patch_embed)
    feats = probe_features(src.body(), lambda images: embedder(src.prepare(images)), data.x_probe)
    labels = data.y_probe.numpy()
    n = len(labels)
    with threadpool_limits(1):
        halves = np.array([linear_probe_error(feats, labels, p[: n // 2], p[n // 2:])
                           for p in (np.random.default_rng(s).permutation(n)
                                     for s in range(args.seeds))])
    single = halves.std(ddof=1)
    print(f"{src.model_id} on {data.name}: {n} probe images, {data.num_classes} classes\n")
    print("| estimate | mean error | sd over split seeds | reported se | seconds per probe |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| one random {n // 2}/{n - n // 2} split | {halves.mean():.4f} | {single:.4f} | | |")
    sds = {}
    for repeats in (1, 2, 4):
        t0 = time.perf_counter()
        est = [probe_estimate(feats, labels, repeats=repeats, seed=s) for s in range(args.seeds)]
        seconds = (time.perf_counter() - t0) / args.seeds
        errors = np.array([e.error for e in est])
        sds[repeats] = errors.std(ddof=1)
        print(f"| k-fold × {repeats}{' (the probe)' if repeats == REPEATS else ''} | "
              f"{errors.mean():.4f} | {sds[repeats]:.4f} | {np.mean([e.se for e in est]):.4f} | "
              f"{seconds:.2f} |")
    print(f"\nsplit noise of source_probe_error: {single:.4f} with one half split, "
          f"{sds[REPEATS]:.4f} with the probe's k-fold × {REPEATS} "
          f"({single / sds[REPEATS]:.1f}x smaller; {args.seeds} split seeds)")


if __name__ == "__main__":
    main()
