"""``mona-tune data make|inspect``: generate a dataset in its real file format, or describe a file."""

from __future__ import annotations

from pathlib import Path

from mona_tune.cli.common import Parser

ONE_D = ("advection", "burgers", "diffusion-reaction", "diffusion-sorption")


def add_data(sub) -> None:
    data = sub.add_parser("data", help="generate or inspect data files")
    dsub = data.add_subparsers(dest="data_cmd", required=True, parser_class=Parser)
    make = dsub.add_parser(
        "make", help="generate a dataset in its real file format",
        description="darcy: FNO MATLAB or PDEBench 2D files; advection, burgers, "
                    "diffusion-reaction, diffusion-sorption: PDEBench 1D files, generated with "
                    "PDEBench's schemes")
    make.add_argument("task", choices=["darcy", *ONE_D, "waveforms"])
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--format", dest="fmt", choices=["fno", "pdebench"], default=None,
                      help="darcy only (default fno)")
    make.add_argument("--n-train", type=int, default=None,
                      help="training samples (default: 1000 for darcy's fno, else 900; PDEBench's "
                           "test part must be 10%% of the file)")
    make.add_argument("--n-test", type=int, default=100)
    make.add_argument("--resolution", type=int, default=None,
                      help="grid points per side, or cells in 1D (default: 421 for fno, 128 for "
                           "pdebench, 1024 for the 1D tasks)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--beta", type=float, default=None,
                      help="PDEBench Darcy forcing β (default 0.1) or advection speed β (0.4)")
    make.add_argument("--nu", type=float, default=None,
                      help="Burgers ν (default 1.0) or diffusion-reaction ν (0.5)")
    make.add_argument("--rho", type=float, default=None, help="diffusion-reaction ρ (default 1.0)")
    make.add_argument("--end-time", dest="fin_time", type=float, default=None,
                      help="1D: last saved time (default PDEBench's: 2, 1 or 500 s)")
    make.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    make.set_defaults(func=_run_data_make)
    insp = dsub.add_parser("inspect", help="describe a data file or directory")
    insp.add_argument("path", type=Path)
    insp.set_defaults(func=_run_data_inspect)


def _run_data_make(args) -> int:
    from mona_tune.errors import MonaError

    given = {f"--{k.replace('fin_time', 'end-time')}" for k in ("beta", "nu", "rho", "fin_time")
             if getattr(args, k) is not None}
    takes = {"darcy": {"--beta"}, "advection": {"--beta", "--end-time"},
             "burgers": {"--nu", "--end-time"},
             "diffusion-reaction": {"--nu", "--rho", "--end-time"},
             "diffusion-sorption": {"--end-time"}, "waveforms": set()}[args.task]
    if args.task != "darcy" and args.fmt is not None:
        given.add("--format")
    if given - takes:
        raise MonaError(f"data make {args.task}: {', '.join(sorted(given - takes))} does not "
                        f"apply (it takes {', '.join(sorted(takes)) or 'none of them'})")
    if args.task == "waveforms":
        from mona_tune.tasks.waveforms import EMBEDDED, write_waveforms

        out = write_waveforms(args.out, args.n_train or EMBEDDED["n_train"], args.n_test,
                            args.seed)
        paths = [out / "train.npz", out / "test.npz"]
    elif args.task == "darcy":
        from mona_tune.tasks.generate import make_dataset

        paths = make_dataset(out=args.out, fmt=args.fmt or "fno", n_train=args.n_train,
                             n_test=args.n_test, resolution=args.resolution, seed=args.seed,
                             beta=0.1 if args.beta is None else args.beta,
                             workers=args.workers, progress=True)
    else:
        from mona_tune.tasks.generate_1d import make_1d_dataset

        params = {"beta": args.beta, "nu": args.nu, "rho": args.rho, "fin_time": args.fin_time}
        paths = make_1d_dataset(args.task, out=args.out, n_train=args.n_train or 900,
                                n_test=args.n_test, resolution=args.resolution, seed=args.seed,
                                workers=args.workers, progress=True, **params)
    for p in paths:
        print(p)
    return 0


def _run_data_inspect(args) -> int:
    from mona_tune.tasks.describe import describe

    print(describe(args.path))
    return 0
