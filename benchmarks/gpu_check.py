"""GPU figures at paper scale, as one JSON line: Swin-Base at 224×224 (random weights; time and
memory do not depend on their values), per method and variant at the paper's batch sizes (4 target,
32 source): the median step time and the peak CUDA memory of

- stage 2 (fine-tuning everything), MoNA's stage 1 second order and first order,
- each in fp32, bf16 and fp16 (with its gradient scaler), with and without gradient checkpointing,

MoNA's step over a fine-tuning step at batch 16 (equal and paper source batches), and packing:
1, 2 and 4 trial processes on one GPU at once (aggregate samples/s, peak memory per process).

    python benchmarks/gpu_check.py [--steps 5] [--dry-run]

``--dry-run`` runs everything on the CPU with a tiny Swin and tiny batches (the test suite does,
``tests/system/test_gpu_check.py``), so that the script is known to work before a GPU is at hand.
Run through ``benchmarks/gpu.sh`` on a CUDA machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PAPER = {"arch": "swin_base_patch4_window7_224", "batch": 4, "source_batch": 32, "ratio_batch": 16}
TINY = {"arch": "gpu_check_tiny_swin", "batch": 2, "source_batch": 4, "ratio_batch": 2}


def _register_tiny() -> None:
    """A tiny Swin under a timm name (``--dry-run``), registered in every process of the run."""
    import timm
    from timm.models import register_model

    if timm.is_model(TINY["arch"]):
        return

    def gpu_check_tiny_swin(pretrained=False, drop_path_rate=0.0, **_):
        from timm.models.swin_transformer import SwinTransformer

        return SwinTransformer(img_size=56, patch_size=4, window_size=7, embed_dim=12,
                               depths=(1, 1), num_heads=(1, 2), drop_path_rate=drop_path_rate)

    register_model(gpu_check_tiny_swin)


def trainer(arch: str, weights: Path, device: str, batch: int, source_batch: int, **kw):
    from mona_tune.config import TrainConfig
    from mona_tune.train.trainer import Trainer

    cfg = TrainConfig(source_model=arch, weights=str(weights), device=device, batch_size=batch,
                      source_batch_size=source_batch, n_train=max(4 * batch, 16), n_test=8,
                      probe_samples=40, **kw)
    return Trainer(cfg)


def _sync(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def timed(fn, steps: int, device: str) -> tuple[float, int]:
    """Median seconds of ``fn`` over ``steps`` calls after one warm-up call, and the peak bytes
    allocated while they ran (CUDA; 0 on the CPU)."""
    from mona_tune.train.footprint import median_seconds

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = median_seconds(fn, steps, _sync(device))
    return seconds, int(torch.cuda.max_memory_allocated() if cuda else 0)


def step_fns(t, x, y) -> dict:
    def mona(first_order: bool):
        def run():
            t.cfg.first_order = first_order
            t.stage1_step(x, y)
        return run

    return {"ft": lambda: t.stage2_step(x, y), "mona": mona(False), "mona_fo": mona(True)}


def variants(size: dict, weights: Path, device: str, steps: int) -> list[dict]:
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        for ckpt in (False, True):
            t = trainer(size["arch"], weights, device, size["batch"], size["source_batch"],
                        precision=precision, grad_checkpointing=ckpt)
            x, y = t.x_train[:size["batch"]], t.y_train[:size["batch"]]
            for name, fn in step_fns(t, x, y).items():
                try:
                    s, peak = timed(fn, steps, device)
                    rows.append({"step": name, "precision": precision, "checkpointing": ckpt,
                                 "seconds": s, "peak_gib": peak / 2**30})
                except torch.OutOfMemoryError:
                    rows.append({"step": name, "precision": precision, "checkpointing": ckpt,
                                 "seconds": None, "peak_gib": None, "error": "out of memory"})
                    torch.cuda.empty_cache()
            del t
    return rows


def ratios(size: dict, weights: Path, device: str, steps: int, precision: str) -> dict:
    """MoNA's step over a fine-tuning step at one target batch, with an equal and the paper's
    source batch, interleaved so that drift falls on both alike."""
    out = {}
    b = size["ratio_batch"]
    for label, sb in (("equal", b), ("paper_source", size["source_batch"])):
        t = trainer(size["arch"], weights, device, b, sb, precision=precision)
        x, y = t.x_train[:b], t.y_train[:b]
        fns = step_fns(t, x, y)
        med = {k: timed(fn, steps, device)[0] for k, fn in fns.items()}
        out[label] = {"batch": b, "source_batch": sb, "second_order": med["mona"] / med["ft"],
                      "first_order": med["mona_fo"] / med["ft"]}
    return out


def worker(args) -> None:
    """One packed trial process: waits for the start file, then runs stage-1 and stage-2 steps
    for ``--seconds``; prints its samples and peak memory as JSON."""
    size = TINY if args.dry_run else PAPER
    t = trainer(size["arch"], Path(args.weights), args.device, size["batch"],
                size["source_batch"], precision=args.precision)
    x, y = t.x_train[:size["batch"]], t.y_train[:size["batch"]]
    t.stage1_step(x, y)
    t.stage2_step(x, y)  # warm-up
    sync = _sync(args.device)
    Path(args.ready).touch()
    while not Path(args.start).exists():
        time.sleep(0.01)
    sync()
    t0, samples = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.seconds:
        t.stage1_step(x, y)
        t.stage2_step(x, y)
        samples += 2 * size["batch"]
    sync()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_reserved() if args.device.startswith("cuda") else 0
    print(json.dumps({"samples": samples, "seconds": seconds, "peak_reserved_gib": peak / 2**30}))


def packing(weights: Path, device: str, precision: str, seconds: float, dry: bool) -> list[dict]:
    rows = []
    for n in (1, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            start = Path(tmp) / "start"
            cmd = [sys.executable, __file__, "--worker", "--weights", str(weights), "--device",
                   device, "--precision", precision, "--seconds", str(seconds),
                   "--start", str(start)] + (["--dry-run"] if dry else [])
            procs = [subprocess.Popen(cmd + ["--ready", f"{tmp}/ready{i}"],
                                      stdout=subprocess.PIPE, text=True) for i in range(n)]
            while not all(Path(f"{tmp}/ready{i}").exists() for i in range(n)):
                if any(p.poll() not in (None, 0) for p in procs):
                    break
                time.sleep(0.05)
            start.touch()
            outs = [p.communicate()[0] for p in procs]
            if any(p.returncode for p in procs):
                rows.append({"trials": n, "error": f"exit {[p.returncode for p in procs]}"})
                continue
            res = [json.loads(o.strip().splitlines()[-1]) for o in outs]
            rows.append({"trials": n,
                         "samples_per_s": sum(r["samples"] for r in res)
                         / max(r["seconds"] for r in res),
                         "peak_reserved_gib_per_trial": max(r["peak_reserved_gib"] for r in res)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--pack-seconds", type=float, default=20.0)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny Swin, tiny batches")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    # a packed trial process (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--weights", "--device", "--precision", "--start", "--ready"):
        ap.add_argument(flag, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dry_run:
        _register_tiny()
    if args.worker:
        return worker(args)
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (--dry-run runs it on the CPU)")
    size, device = (TINY, "cpu") if args.dry_run else (PAPER, "cuda")
    result = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
              "arch": size["arch"], "batch": size["batch"], "source_batch": size["source_batch"]}
    from mona_tune.models.checkpoints import random_weights_file

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        w = random_weights_file(size["arch"], Path(tmp))
        result["variants"] = variants(size, w, device, args.steps)
        low = "fp32" if args.dry_run else "bf16"
        result["step_ratio"] = {p: ratios(size, w, device, args.steps, p)
                                for p in ("fp32", low) if p == "fp32" or not args.dry_run}
        result["packing"] = packing(w, device, low, args.pack_seconds, args.dry_run)
    result["seconds"] = time.perf_counter() - t0
    line = json.dumps(result)
    if args.out:
        args.out.write_text(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
