"""Paper sizes on the CPU: Swin-Base at 224×224 (random weights; time and memory do not depend on
their values) through one stage-1 step of MoNA (second and first order, with and without gradient
checkpointing) and one stage-2 step, at the paper's 4 target and 32 source images on the embedded
85×85 Darcy data.

Each variant runs in its own process under an address-space limit (``--limit-gib``), so that one
that would not fit fails alone and is reported as such; the figures are the time of one step after
one warm-up step (``--steps 1``: the first step alone), and the process's peak resident memory
(everything a trial holds: torch, the data, the source and target models, the optimiser states
and the step's activations).

    python benchmarks/paper_size_cpu.py [--limit-gib 16] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ARCH = "swin_base_patch4_window7_224"
VARIANTS = [  # name, stage, first order, gradient checkpointing
    ("stage 2 (ft)", 2, False, False),
    ("stage 2 (ft), checkpointing", 2, False, True),
    ("MoNA stage 1, second order", 1, False, False),
    ("MoNA stage 1, second order, checkpointing", 1, False, True),
    ("MoNA stage 1, first order", 1, True, False),
    ("MoNA stage 1, first order, checkpointing", 1, True, True),
]


def one_variant(index: int, threads: int, batch: int, source_batch: int, steps: int) -> dict:
    """Runs in the child: build the trial and time ``steps`` steps (the first one includes the
    optimiser's state allocation)."""
    from mona_tune.models.checkpoints import random_weights_file
    from mona_tune.config import TrainConfig
    from mona_tune.train.trainer import Trainer

    name, stage, first_order, ckpt = VARIANTS[index]
    cfg = TrainConfig(source_model=ARCH, weights=random_weights_file(ARCH), device="cpu",
                      batch_size=batch, source_batch_size=source_batch, n_train=2 * batch + 1,
                      n_test=2, probe_samples=16, num_threads=threads, first_order=first_order,
                      grad_checkpointing=ckpt)
    t0 = time.perf_counter()
    t = Trainer(cfg)
    build = time.perf_counter() - t0
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    x, y = t.x_train[:batch], t.y_train[:batch]
    step = (lambda: t.stage1_step(x, y)) if stage == 1 else (lambda: t.stage2_step(x, y))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"variant": name, "build_s": build, "first_step_s": times[0], "step_s": times[-1],
            "rss_after_build_gib": rss_built,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_child(index: int, args) -> dict:
    limit = int(args.limit_gib * 2**30)
    cmd = [sys.executable, __file__, "--child", str(index), "--threads", str(args.threads),
           "--batch", str(args.batch), "--source-batch", str(args.source_batch),
           "--steps", str(args.steps)]

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.perf_counter()
    proc = subprocess.run(cmd, preexec_fn=cap, capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    oom = "memory" in proc.stderr.lower() or "alloc" in proc.stderr.lower()
    return {"variant": VARIANTS[index][0], "error": (f"did not fit in {args.limit_gib:g} GiB"
                                                     if oom else tail[:200]),
            "seconds_until_failure": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-gib", type=float, default=16.0,
                    help="address-space limit of each variant's process")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--source-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2, help="steps per variant (the last is timed)")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="variant indices")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(one_variant(args.child, args.threads, args.batch, args.source_batch,
                                     args.steps)))
        return
    rows = []
    for i in (args.only if args.only is not None else range(len(VARIANTS))):
        rows.append(run_child(i, args))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{ARCH} at 224, batch {args.batch} target / {args.source_batch} source, CPU, "
          f"{args.threads} threads, each variant in its own process limited to "
          f"{args.limit_gib:g} GiB")
    print("| variant | step s (first step s) | peak resident GiB (after build) |")
    print("| --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['error']} | |")
        else:
            print(f"| {r['variant']} | {r['step_s']:.1f} ({r['first_step_s']:.1f}) | "
                  f"{r['peak_rss_gib']:.2f} ({r['rss_after_build_gib']:.2f}) |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
