"""``mona-tune ui`` and ``mona-tune tracking-server``: the MLflow UI on a store, and the
tracking server a cluster's trials log to (both bound to 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import argparse

from mona_tune.errors import MonaError


def add_ui_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Serve the MLflow UI on the tracking store, bound to 127.0.0.1 by default."
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; anything else exposes the store)")
    p.add_argument("--tracking-uri", default=None,
                   help="tracking store (default: $MLFLOW_TRACKING_URI or "
                        "sqlite:///<cwd>/mlflow.db)")
    p.set_defaults(func=run_ui_command)


def add_tracking_server_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Start the MLflow tracking server a cluster's trials log to: a database store (PostgreSQL "
        "recommended) with proxied artifacts, so worker nodes need neither database drivers nor "
        "access to the artifact store. Bound to 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--backend-store-uri", default=None,
                   help="postgresql://USER@HOST:PORT/DB (pip install 'mona-tune[postgres]'), or "
                        "sqlite:///PATH for one machine (default: $MLFLOW_TRACKING_URI when it is "
                        "a store, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--artifacts-destination", default=None,
                   help="where the server keeps artifacts: a folder or s3://bucket/prefix "
                        "(default: mlartifacts/ beside a SQLite file, else ./mlartifacts)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; 0.0.0.0 for the cluster's nodes)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--allowed-hosts", default="",
                   help="comma-separated host names clients use in --tracking-uri (e.g. "
                        "head-node,10.0.0.5); loopback is always allowed")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.set_defaults(func=run_tracking_server_command)


def run_ui_command(args) -> int:
    from mona_tune.tracking.ui import serve_ui

    return serve_ui(host=args.host, port=args.port, tracking_uri=args.tracking_uri)


def run_tracking_server_command(args) -> int:
    import os

    from mona_tune.tracking.mlflow_runs import tracking_uri_or_default
    from mona_tune.tracking.server import serve

    uri = args.backend_store_uri
    if uri is None:
        env = os.environ.get("MLFLOW_TRACKING_URI", "")
        uri = env if env and not env.startswith(("http://", "https://")) else None
    uri = tracking_uri_or_default(uri)
    if args.workers < 1:
        raise MonaError(f"--workers {args.workers}: must be at least 1")
    hosts = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    return serve(backend_store_uri=uri, artifacts_destination=args.artifacts_destination,
                 host=args.host, port=args.port, hosts=hosts, workers=args.workers)
