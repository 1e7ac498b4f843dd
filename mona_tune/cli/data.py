"""``mona-tune data make|inspect``: generate Darcy data in a real file format, or describe a file."""

from __future__ import annotations

from pathlib import Path

from mona_tune.cli.common import Parser


def add_data(sub) -> None:
    data = sub.add_parser("data", help="generate or inspect Darcy data files")
    dsub = data.add_subparsers(dest="data_cmd", required=True, parser_class=Parser)
    make = dsub.add_parser("make", help="generate a Darcy dataset in a real file format")
    make.add_argument("task", choices=["darcy"])
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--format", dest="fmt", choices=["fno", "pdebench"], default="fno")
    make.add_argument("--n-train", type=int, default=None,
                      help="training samples (default: 1000 for fno, 900 for pdebench, whose "
                           "test part must be the first 10%% of the file)")
    make.add_argument("--n-test", type=int, default=100)
    make.add_argument("--resolution", type=int, default=None,
                      help="grid points per side (default: 421 for fno, 128 for pdebench)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--beta", type=float, default=0.1, help="PDEBench forcing β")
    make.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    make.set_defaults(func=_run_data_make)
    insp = dsub.add_parser("inspect", help="describe a data file or directory")
    insp.add_argument("path", type=Path)
    insp.set_defaults(func=_run_data_inspect)


def _run_data_make(args) -> int:
    from mona_tune.tasks.generate import make_dataset

    paths = make_dataset(out=args.out, fmt=args.fmt, n_train=args.n_train, n_test=args.n_test,
                         resolution=args.resolution, seed=args.seed, beta=args.beta,
                         workers=args.workers, progress=True)
    for p in paths:
        print(p)
    return 0


def _run_data_inspect(args) -> int:
    from mona_tune.tasks.describe import describe

    print(describe(args.path))
    return 0
