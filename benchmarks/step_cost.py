"""Cost of one MoNA stage-1 step relative to one plain fine-tuning step.

On the embedded model and the embedded Darcy data: for each batch size B the median wall time of
- a plain fine-tuning step (stage 2: forward, backward, clipping, AdamW on all parameters),
- a MoNA stage-1 step, second order (the default) and first order (finite differences),
each including its batch sampling, measured interleaved (ft, mona, mona-fo, ft, ...) so that
load from other processes falls on all three alike; the source batch is B (equal batches) and the
paper's 32. Memory: the bytes of the tensors autograd keeps for the backward pass during one step
(the activations; the step's peak above the model and optimiser states). Goal at batch 16:
second order ≤ 3.0×, first order ≤ 2.0×. Writes ``mona_step_ratio_b16`` and
``mona_step_ratio_first_order_b16`` (equal batches) into benchmarks/results.json.

    python benchmarks/step_cost.py [--batch-sizes 4 16] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from mona_tune.config import TrainConfig
from mona_tune.train.footprint import saved_activation_bytes
from mona_tune.train.trainer import Trainer

PAPER_SOURCE_BATCH = 32


def ft_step(t: Trainer, x, y) -> None:
    t.stage2_step(x, y)


def mona_step(t: Trainer, x, y, first_order: bool) -> None:
    t.cfg.first_order = first_order
    t.stage1_step(x, y)


def measure(batch: int, source_batch: int, steps: int, threads: int | None) -> dict:
    cfg = TrainConfig(batch_size=batch, source_batch_size=source_batch, device="cpu",
                      num_threads=threads)
    t = Trainer(cfg)
    x, y = t.x_train[:batch], t.y_train[:batch]
    fns = {"ft": lambda: ft_step(t, x, y), "mona": lambda: mona_step(t, x, y, False),
           "mona_fo": lambda: mona_step(t, x, y, True)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(steps + 3):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= 3:  # warm-up steps not counted
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    mem = {f"{k}_saved_mib": saved_activation_bytes(fn) / 2**20 for k, fn in fns.items()}
    return {"batch": batch, "source_batch": source_batch, **med, **mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    rows = [measure(b, sb, args.steps, args.threads) for b in args.batch_sizes
            for sb in dict.fromkeys((b, PAPER_SOURCE_BATCH))]
    print(f"torch threads: {torch.get_num_threads()}, median of {args.steps} steps; memory: "
          "activations kept for the backward pass (MiB)")
    print("| batch | source batch | ft ms | mona (2nd order) ms | ratio | mona (1st order) ms | "
          "ratio | ft / 2nd / 1st MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['source_batch']} | {1e3 * r['ft']:.1f} | "
              f"{1e3 * r['mona']:.1f} | {r['mona'] / r['ft']:.2f} | {1e3 * r['mona_fo']:.1f} | "
              f"{r['mona_fo'] / r['ft']:.2f} | {r['ft_saved_mib']:.1f} / "
              f"{r['mona_saved_mib']:.1f} / {r['mona_fo_saved_mib']:.1f} |")
    last = next(r for r in reversed(rows) if r["source_batch"] == r["batch"])
    second, first = last["mona"] / last["ft"], last["mona_fo"] / last["ft"]
    if last["batch"] == 16:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_json import record

        command = "python benchmarks/step_cost.py " + " ".join(sys.argv[1:])
        record("mona_step_ratio_b16", round(second, 3), goal="<= 3.0", command=command)
        record("mona_step_ratio_first_order_b16", round(first, 3), goal="<= 2.0",
               command=command)
    print(f"step cost over plain fine-tuning at batch {last['batch']} (equal batches): second "
          f"order {second:.2f}x (goal <= 3.0), first order {first:.2f}x (goal <= 2.0)")


if __name__ == "__main__":
    main()
