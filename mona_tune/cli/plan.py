"""``mona-tune plan``: one trial of a search space measured before the search runs.

It builds the trial's model on the device a trial would use (CUDA when present), runs stage-1
and stage-2 steps at the space's batch sizes, and prints peak memory, step times, how many trials
fit on one device, and the device-hours of the space's budget with ASHA and without. Searched
fields take their largest value (the costliest trial): the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import json

from mona_tune.errors import MonaError


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    from mona_tune.cli.search import add_fixed_field_arguments

    p.description = __doc__.splitlines()[0]
    p.add_argument("--task", default="darcy", help="task of the space (default darcy)")
    p.add_argument("--space", default=None,
                   help="a YAML file or a packaged space name (default: the task's own)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="check that trials at this share of a GPU fit its memory")
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs per trial (the device share of a CPU trial; default 1)")
    p.add_argument("--steps", type=int, default=2, help="timed steps of each stage (default 2)")
    p.add_argument("--random-weights", action="store_true",
                   help="build --source-model with random weights (time and memory do not "
                        "depend on the values; no hub, no weights file)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    add_fixed_field_arguments(p)
    p.set_defaults(func=run_plan_command)


def plan(args) -> dict:
    from mona_tune.cli.search import extra_fixed
    from mona_tune.models.checkpoints import random_weights_file
    from mona_tune.search import capacity
    from mona_tune.search.plan import costliest_config, space_with_fixed
    from mona_tune.train.footprint import measure, plan_config

    task, space_path, space, fixed, _ = space_with_fixed(args.task, args.space, extra_fixed(args))
    if args.random_weights:
        if not fixed.get("source_model"):
            raise MonaError("--random-weights needs --source-model (a timm Swin name)")
        fixed["weights"] = random_weights_file(fixed["source_model"])
    cfg, notes = plan_config(costliest_config(fixed, space.searched), args.cpus_per_trial)
    if cfg.scale == "paper" and cfg.data_dir is None and cfg.n_train is None:
        notes.append("epochs of the embedded generated data set: --data-dir DIR, or --set "
                     "n_train=N, plans the epochs of the real one")
    fp = measure(cfg, steps=args.steps)
    gpus = args.gpus_per_trial
    if fp.memory_kind == "cuda":
        share = gpus if gpus else 1 / max(1, capacity.trials_per_device(fp))
    else:
        import os

        share = args.cpus_per_trial / (os.cpu_count() or 1)
    budget, sched = space.budget, space.scheduler
    asha = (sched.grace_period, sched.reduction_factor) if sched.kind == "asha" else None
    epochs = min(cfg.epochs, sched.max_t or space.max_stage2_epochs())
    out = {
        "space": str(space_path), "task": task.name, "method": cfg.method,
        **fp.as_dict(),
        "bytes_per_trial": capacity.bytes_per_trial(fp),
        "trials_per_device": capacity.trials_per_device(fp),
        "device_share": share, "num_samples": budget.num_samples,
        "stage1_epochs": cfg.stage1_epochs, "epochs": epochs,
        "fifo": capacity.projected_hours(fp, cfg.stage1_epochs, epochs, budget.num_samples,
                                         share, None),
        "asha": capacity.projected_hours(fp, cfg.stage1_epochs, epochs, budget.num_samples,
                                         share, asha) if asha else None,
        "notes": notes,
    }
    if gpus is not None:
        out["gpus_per_trial_fits"] = capacity.fraction_fits(fp, gpus)
    return out


def _table(p: dict) -> str:
    gib = 2**30
    mem = ("peak CUDA memory (allocated / reserved)" if p["memory_kind"] == "cuda"
           else "peak resident memory of the trial process")
    lines = [
        f"plan of {p['space']} (task {p['task']}, method {p['method']}) on {p['device']}",
        f"  {p['precision']}, batch {p['batch_size']} target / {p['source_batch_size']} source, "
        f"{p['steps_per_epoch']} steps per epoch, {p['n_val']} validation samples",
        f"  {mem}: {p['peak_bytes'] / gib:.2f} / {p['reserved_bytes'] / gib:.2f} GiB "
        f"of {p['device_total_bytes'] / gib:.0f} GiB",
        "  step times: stage 1 " + (f"{p['stage1_step_s']:.3f} s" if p["stage1_step_s"]
                                    else "(none)")
        + f", stage 2 {p['stage2_step_s']:.3f} s, evaluation {1e3 * p['eval_sample_s']:.1f} ms "
          "per sample",
        f"  trials per device ({int(100 * 0.9)} % of its memory): {p['trials_per_device']}"
        + (f" -> --gpus-per-trial {1 / p['trials_per_device']:.3g}"
           if p["memory_kind"] == "cuda" and p["trials_per_device"] >= 1 else ""),
    ]
    if "gpus_per_trial_fits" in p:
        lines.append(f"  --gpus-per-trial {p['device_share']:g}: "
                     + ("fits" if p["gpus_per_trial_fits"] else "does NOT fit"))
    lines.append(f"  budget: {p['num_samples']} trials x ({p['stage1_epochs']} stage-1 + up to "
                 f"{p['epochs']} stage-2 epochs), device share per trial {p['device_share']:.3g}")
    for name in ("fifo", "asha"):
        h = p[name]
        if h:
            lines.append(f"  {name.upper():4}: {h['device_hours']:.2f} device-hours "
                         f"({h['stage2_epochs_per_trial']:.1f} stage-2 epochs, "
                         f"{h['trial_hours']:.2f} h per trial)")
    lines += [f"  note: {n}" for n in p["notes"]]
    return "\n".join(lines)


def run_plan_command(args) -> int:
    if args.steps < 1:
        raise MonaError(f"--steps {args.steps}: at least 1")
    if args.gpus_per_trial is not None and not 0 < args.gpus_per_trial <= 1:
        raise MonaError(f"--gpus-per-trial {args.gpus_per_trial:g}: a share of one GPU, in (0, 1]")
    p = plan(args)
    print(json.dumps(p) if args.json else _table(p), flush=True)
    return 0
