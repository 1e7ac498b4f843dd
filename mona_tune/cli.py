"""Command line: argument parsing and error reporting only; the work lives in the modules.

Every error a user can cause arrives here as :class:`MonaError` (or a pydantic validation error of a
config) and leaves as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from mona_tune import __version__
from mona_tune.errors import MonaError


class _Parser(argparse.ArgumentParser):
    """argparse, but bad flags are a MonaError like every other bad input."""

    def error(self, message: str):
        raise MonaError(f"{self.prog}: {message}")


def _validation_line(err: ValidationError, where: str = "config") -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or where
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return f"invalid {where}: " + "; ".join(parts)


# ---------------------------------------------------------------- data
def _add_data(sub) -> None:
    data = sub.add_parser("data", help="generate or inspect Darcy data files")
    dsub = data.add_subparsers(dest="data_cmd", required=True, parser_class=_Parser)
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
    from mona_tune.tasks.inspect import describe

    print(describe(args.path))
    return 0


# ---------------------------------------------------------------- train
def _add_train(sub) -> None:
    from mona_tune.train.cli_args import add_train_arguments

    train = sub.add_parser("train", help="one two-stage MoNA (or baseline) training run")
    add_train_arguments(train)
    train.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from mona_tune.train.cli_args import train_from_args

    return train_from_args(args)


# ---------------------------------------------------------------- search, best, ui
def _add_search(sub) -> None:
    from mona_tune.search.cli_args import (
        add_best_arguments,
        add_search_arguments,
        add_tracking_server_arguments,
        add_ui_arguments,
    )

    search = sub.add_parser("search", help="Ray Tune search (ASHA + Optuna) tracked in MLflow")
    add_search_arguments(search)
    best = sub.add_parser("best", help="the best trials of a search, read from MLflow")
    add_best_arguments(best)
    ui = sub.add_parser("ui", help="open the MLflow UI on the tracking store (127.0.0.1)")
    add_ui_arguments(ui)
    server = sub.add_parser("tracking-server",
                            help="the MLflow server for a cluster: PostgreSQL, proxied artifacts")
    add_tracking_server_arguments(server)


# ---------------------------------------------------------------- compare
def _add_compare(sub) -> None:
    try:
        from mona_tune.train.compare import add_compare_arguments
    except ImportError:
        return
    compare = sub.add_parser("compare", help="ft, emb, orca, mona, scratch side by side")
    add_compare_arguments(compare)
    compare.set_defaults(func=_out_checked(compare.get_default("func")))


def _out_checked(run):
    """``run`` after a check that ``--out`` can be created (not an error after the training)."""
    def checked(args) -> int:
        from mona_tune.paths import check_creatable

        if args.out is not None:
            check_creatable(args.out, "--out")
        return run(args)
    return checked


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mona-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mona-tune {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    _add_data(sub)
    _add_train(sub)
    _add_search(sub)
    _add_compare(sub)
    return parser


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return _main(argv)
    # SIGTERM ends a command like Ctrl-C: its cleanup runs (Ray stopped, runs closed)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except MonaError as e:
        print(f"mona-tune: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"mona-tune: error: {_validation_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        resume = getattr(e, "resume", None)
        if resume:  # a search that saved its state (mona_tune.search.interrupt)
            print(f"mona-tune: search {e}; its state is saved. Continue it with:\n{resume}",
                  file=sys.stderr, flush=True)
            return 128 + e.signum
        print("mona-tune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
