"""ft, emb, orca, mona, scratch and ridge on an embedded task: is MoNA's claim borne out?

``mona-tune compare`` with the same budget, data and seeds for every method (5 seeds by default),
at the default search's fixed settings (``mona_tune/search_spaces/<task>.yaml``: data size,
stage-2 epochs, batch), so that the table speaks of the runs the default search makes:
prints the table (mean ± standard error over seeds, the ridge and scratch references, the paired
differences mona − ft and mona − emb with their 95 % intervals and verdicts) and, as its last
line, the verdicts and the test metric of every row. Curves and raw runs go to
``benchmarks/out/methods-<task>``.

    python benchmarks/methods_table.py [--task darcy|advection|burgers|diffusion-reaction|
                                        diffusion-sorption] [--seeds 5] [--epochs N]
                                       [--warmup-epochs N] [--lam 1.0] [--inner-lr 0.1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mona_tune.config import TrainConfig
from mona_tune.search.space import load_space, resolve_space_path
from mona_tune.train.compare import compare, headline, markdown_table, write_outputs

METHODS = ["ft", "emb", "orca", "mona", "scratch"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="darcy")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--warmup-epochs", type=int, default=None)
    ap.add_argument("--num-threads", type=int, default=None, help="torch threads per run")
    # MoNA's meta-gradient is proportional to inner_lr: at the trainer's default (1e-3) its
    # stage 1 is nearly the embedder warm-up, so the comparison uses a point where it is not.
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--inner-lr", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: benchmarks/out/methods-<task>)")
    args = ap.parse_args()
    space = load_space(resolve_space_path(None, args.task), args.task)
    values = {**{k: v for k, v in space.fixed.items() if k != "method"},
              "task": args.task, "lam": args.lam, "inner_lr": args.inner_lr}
    if args.epochs is not None:
        values["epochs"] = args.epochs
    if args.warmup_epochs is not None:
        values["warmup_epochs"] = args.warmup_epochs
    if args.num_threads is not None:
        values["num_threads"] = args.num_threads
    result = compare(TrainConfig(**values), METHODS, args.seeds,
                     log=lambda line: print(line, file=sys.stderr, flush=True))
    write_outputs(result, args.out or Path(__file__).parent / "out" / f"methods-{args.task}")
    print(markdown_table(result))
    print(f"{headline(result)}; mona lam {args.lam:g}, inner_lr {args.inner_lr:g}")


if __name__ == "__main__":
    main()
