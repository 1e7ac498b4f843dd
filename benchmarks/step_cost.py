"""Cost of one MoNA stage-1 step relative to one plain fine-tuning step, at equal batch size.

On the embedded model and the embedded Darcy data: for each batch size B (target batch = source
batch = B) the median wall time of
- a plain fine-tuning step (stage 2: forward, backward, clipping, AdamW on all parameters),
- a MoNA stage-1 step, second order (the default) and first order (finite differences),
each including its batch sampling, measured interleaved (ft, mona, mona-fo, ft, ...) so that
load from other processes falls on all three alike. Goal: second order ≤ 3.0×, first order ≤ 2.0×.

    python benchmarks/step_cost.py [--batch-sizes 4 16] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mona_tune.config import TrainConfig
from mona_tune.train.trainer import Trainer


def ft_step(t: Trainer, x, y) -> None:
    params = list(t.model.parameters())
    loss = t._loss(t.model(x), y)
    t.opt2.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, t.cfg.grad_clip)
    t.opt2.step()


def mona_step(t: Trainer, x, y, first_order: bool) -> None:
    from mona_tune.train.stage1 import mona_gradient

    params = list(t.model.embedder.parameters())
    xs, ys = t._source_batch()
    grads, _ = mona_gradient(t.model, x, y, t._loss, xs, ys, inner_lr=t.cfg.inner_lr,
                             lam=t.cfg.lam, t=t.cfg.uniformity_t, first_order=first_order)
    for p, g in zip(params, grads):
        p.grad = g
    torch.nn.utils.clip_grad_norm_(params, t.cfg.grad_clip)
    t.opt1.step()
    t.opt1.zero_grad(set_to_none=True)


def measure(batch: int, steps: int, threads: int | None) -> dict:
    cfg = TrainConfig(batch_size=batch, source_batch_size=batch, device="cpu",
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
    return {"batch": batch, **med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    rows = [measure(b, args.steps, args.threads) for b in args.batch_sizes]
    print(f"torch threads: {torch.get_num_threads()}, median of {args.steps} steps")
    print("| batch | ft step ms | mona (2nd order) ms | ratio | mona (1st order) ms | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {1e3 * r['ft']:.1f} | {1e3 * r['mona']:.1f} | "
              f"{r['mona'] / r['ft']:.2f} | {1e3 * r['mona_fo']:.1f} | "
              f"{r['mona_fo'] / r['ft']:.2f} |")
    last = rows[-1]
    print(f"step cost over plain fine-tuning at batch {last['batch']}: second order "
          f"{last['mona'] / last['ft']:.2f}x (goal <= 3.0), first order "
          f"{last['mona_fo'] / last['ft']:.2f}x (goal <= 2.0)")


if __name__ == "__main__":
    main()
