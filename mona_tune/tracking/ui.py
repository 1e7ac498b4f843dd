"""``mona-tune ui``: the MLflow UI on a local tracking store (the SQLite file of a search).

A thin case of ``mona-tune tracking-server`` (:mod:`mona_tune.tracking.server`): bound to
127.0.0.1 unless ``--host`` says otherwise, artifacts proxied from ``mlartifacts/`` beside the
database, where the searches keep theirs.
"""

from __future__ import annotations

from mona_tune.errors import MonaError
from mona_tune.tracking import mlflow_runs as mr
from mona_tune.tracking.server import serve


def serve_ui(*, host: str = "127.0.0.1", port: int = 5000, tracking_uri: str | None = None) -> int:
    uri = mr.tracking_uri_or_default(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise MonaError(f"--tracking-uri {uri}: that is a tracking server already; open it in a "
                        "browser")
    path = mr.sqlite_path(uri)
    if path is not None and not path.exists():
        raise MonaError(f"--tracking-uri {uri}: no MLflow store at {path} (run a search first)")
    return serve(backend_store_uri=uri, host=host, port=port)
