"""``mona-tune compare``: ft, emb, orca, mona and scratch side by side over seeds
(``train/compare.py`` does the work and the statistics)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mona_tune.cli.common import read_yaml
from mona_tune.config import TrainConfig
from mona_tune.errors import MonaError
from mona_tune.paths import check_creatable
from mona_tune.train.compare import compare, markdown_table, parse_methods, write_outputs


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="darcy")
    parser.add_argument("--methods", default=",".join(("ft", "emb", "orca", "mona", "scratch")),
                        help="comma-separated methods (default: all five)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per method")
    parser.add_argument("--epochs", type=int, default=None, help="stage-2 epochs of every run")
    parser.add_argument("--warmup-epochs", type=int, default=None,
                        help="stage-1 epochs of emb, orca and mona")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of TrainConfig fields shared by every run")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda")
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: runs/compare-<task>)")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=run_compare)


def base_config(args: argparse.Namespace) -> TrainConfig:
    values = read_yaml(args.config) if args.config else {}
    values["task"] = args.task
    for field in ("epochs", "warmup_epochs", "device", "num_threads"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    return TrainConfig(**values)


def run_compare(args: argparse.Namespace) -> int:
    if args.out is not None:  # before the training, not after it
        check_creatable(args.out, "--out")
    methods = parse_methods(args.methods)
    if args.seeds < 1:
        raise MonaError("--seeds must be at least 1")
    base = base_config(args)
    out = args.out or Path("runs") / f"compare-{args.task}"

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = compare(base, methods, args.seeds, log)
    write_outputs(result, out)
    print(markdown_table(result))
    print(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'runs.json'}, "
          f"{out / 'curves.png'}", file=sys.stderr)
    return 0
