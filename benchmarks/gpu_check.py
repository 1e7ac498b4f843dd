"""GPU figures at paper scale: stage-2 throughput of Swin-Base at 224×224 (float32 and bf16
autocast), the MoNA step ratio there, and how many embedded-search trials fit on one GPU.

Throughput does not depend on the weights' values, so the Swin-Base here is timm's architecture with
random weights written to a local file (no hub needed): the same ``--weights`` path users take on
offline clusters. Run through ``benchmarks/gpu.sh`` on a CUDA machine.

    python benchmarks/gpu_check.py [--batch 32] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import ft_step, mona_step  # noqa: E402

from mona_tune.config import TrainConfig  # noqa: E402
from mona_tune.train.trainer import Trainer  # noqa: E402

ARCH = "swin_base_patch4_window7_224"


def random_weights(directory: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    net = timm.create_model(ARCH, pretrained=False)
    path = directory / f"{ARCH}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def timed(fn, steps: int) -> float:
    """Median seconds of ``fn`` over ``steps`` calls after two warm-up calls (CUDA synchronised)."""
    times = []
    for i in range(steps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(weights: Path, batch: int, steps: int, bf16: bool) -> tuple[float, Trainer]:
    cfg = TrainConfig(source_model=ARCH, weights=str(weights), device="cuda", batch_size=batch,
                      source_batch_size=batch, bf16=bf16)
    t = Trainer(cfg)
    x, y = t.x_train[:batch], t.y_train[:batch]

    def step():
        with t._autocast():
            ft_step(t, x, y)

    return batch / timed(step, steps), t


def step_ratio(t: Trainer, batch: int, steps: int) -> dict[str, float]:
    x, y = t.x_train[:batch], t.y_train[:batch]
    with t._autocast():
        ft = timed(lambda: ft_step(t, x, y), steps)
        so = timed(lambda: mona_step(t, x, y, False), steps)
        fo = timed(lambda: mona_step(t, x, y, True), steps)
    return {"second": so / ft, "first": fo / ft}


def embedded_trial_memory() -> float:
    """Peak GiB of one embedded-default trial (stage 1 mona + stage 2) on the GPU."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(device="cuda", warmup_epochs=1, epochs=1)
    Trainer(cfg).fit()
    return torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--context-gib", type=float, default=0.6,
                    help="CUDA context memory of each trial process, beyond its tensors")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here")
    name = torch.cuda.get_device_name(0)
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    print(f"device: {name}, {total:.0f} GiB; torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        w = random_weights(Path(tmp))
        fp32, _ = throughput(w, args.batch, args.steps, bf16=False)
        bf16, t = throughput(w, args.batch, args.steps, bf16=True)
        ratios = step_ratio(t, min(args.batch, 16), args.steps)
    per_trial = embedded_trial_memory() + args.context_gib
    fit = int(total // per_trial)

    print(f"| {ARCH} 224x224, batch {args.batch} | samples/s |")
    print("| --- | --- |")
    print(f"| stage 2, float32 | {fp32:.1f} |")
    print(f"| stage 2, bf16 autocast | {bf16:.1f} |")
    print(f"MoNA step / fine-tuning step (bf16, batch {min(args.batch, 16)}): second order "
          f"{ratios['second']:.2f}x, first order {ratios['first']:.2f}x")
    print(f"embedded trial: {per_trial:.2f} GiB with CUDA context -> {fit} trials fit on one GPU "
          f"(--gpus-per-trial {max(1 / max(fit, 1), 0.01):.3f})")
    print(f"headline: {fp32:.0f} samples/s fp32, {bf16:.0f} bf16 ({bf16 / fp32:.2f}x); "
          f"MoNA ratio {ratios['second']:.2f}/{ratios['first']:.2f}; {fit} trials per GPU")


if __name__ == "__main__":
    main()
