"""Command line: argument parsing and error reporting only; the work lives in the modules.

One module per command group (``data``, ``train``, ``compare``, ``search`` with ``best``,
``tracking`` with ``ui`` and ``tracking-server``, ``plan``), each a thin adapter from flags to library calls.

Every error a user can cause arrives here as :class:`MonaError` (or a pydantic validation error of a
config) and leaves as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from mona_tune import __version__
from mona_tune.cli.common import Parser
from mona_tune.cli.data import add_data
from mona_tune.errors import MonaError, validation_line


def _add_train(sub) -> None:
    from mona_tune.cli.train import add_train_arguments, train_from_args

    train = sub.add_parser("train", help="one two-stage MoNA (or baseline) training run")
    add_train_arguments(train)
    train.set_defaults(func=train_from_args)


def _add_search(sub) -> None:
    from mona_tune.cli.search import add_best_arguments, add_search_arguments
    from mona_tune.cli.tracking import add_tracking_server_arguments, add_ui_arguments

    search = sub.add_parser("search", help="Ray Tune search (ASHA + Optuna) tracked in MLflow")
    add_search_arguments(search)
    best = sub.add_parser("best", help="the best trials of a search, read from MLflow")
    add_best_arguments(best)
    ui = sub.add_parser("ui", help="open the MLflow UI on the tracking store (127.0.0.1)")
    add_ui_arguments(ui)
    server = sub.add_parser("tracking-server",
                            help="the MLflow server for a cluster: PostgreSQL, proxied artifacts")
    add_tracking_server_arguments(server)


def _add_compare(sub) -> None:
    from mona_tune.cli.compare import add_compare_arguments

    compare = sub.add_parser("compare", help="ft, emb, orca, mona, scratch side by side")
    add_compare_arguments(compare)


def _add_plan(sub) -> None:
    from mona_tune.cli.plan import add_plan_arguments

    plan = sub.add_parser("plan", help="one trial of a space measured: memory, step times, "
                          "trials per device, device-hours")
    add_plan_arguments(plan)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mona-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mona-tune {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    add_data(sub)
    _add_train(sub)
    _add_search(sub)
    _add_compare(sub)
    _add_plan(sub)
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
        print(f"mona-tune: error: {validation_line(e)}", file=sys.stderr)
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
