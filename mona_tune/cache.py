"""The user cache directory and atomic writes: nothing half-written is ever trusted.

Content hashes (SHA-256) of input files and folders, for the provenance of every run, are cached
here too: a multi-GB data file is hashed once per node, not by every trial, under its (resolved
path, size, mtime_ns), so a changed file is hashed again. The entries (``<cache>/file-hashes``,
a one-part ``cache_dir``) stay on their node: the node cache does not ship them, and another
node's mtimes differ anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs


# cache entries (``<kind>/<key>`` folders) this process has used: what a prepared node ships to
# the other nodes of a cluster (``cluster.node_cache``)
_USED: set[tuple[str, ...]] = set()


def cache_root() -> Path:
    """``$MONA_TUNE_CACHE`` or the platform's user cache directory."""
    return Path(os.environ.get("MONA_TUNE_CACHE") or platformdirs.user_cache_dir("mona-tune"))


def cache_dir(*parts: str) -> Path:
    """``cache_root()`` with ``parts`` appended, created."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    if len(parts) >= 2:
        _USED.add(tuple(parts))
    return path


def used_entries() -> list[tuple[str, ...]]:
    """The cache entries (``cache_dir(kind, key)`` folders) used in this process so far."""
    return sorted(_USED)


def config_key(params: dict) -> str:
    """A short stable hash of a JSON-serialisable parameter dict (cache keys)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive POSIX lock on ``path`` (created), so that concurrent processes fill a cache
    entry once; where there are no POSIX locks, atomic renames still keep every file whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: built aside, renamed into place when complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- content hashes
CHUNK = 1 << 20  # 1 MiB


def _stream_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path | str) -> str:
    """SHA-256 of the file's bytes, from the cache when the file has not changed."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    key = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    entry = cache_dir("file-hashes") / f"{config_key(key)}.json"
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in key} == key:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = _stream_sha256(path)
    with atomic_path(entry) as tmp:
        tmp.write_text(json.dumps({**key, "sha256": digest}))
    return digest


def tree_files(path: Path) -> list[Path]:
    """Every file under ``path`` (a folder), sorted; ``[path]`` for a file."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def path_sha256(path: Path | str) -> str:
    """A file's SHA-256, or a folder's: SHA-256 of its files' relative paths and hashes, one
    line each in sorted order (a CIFAR-10 folder, a ``save_pretrained`` directory)."""
    path = Path(path).expanduser()
    if path.is_file():
        return file_sha256(path)
    lines = "".join(f"{p.relative_to(path).as_posix()}\t{file_sha256(p)}\n"
                    for p in tree_files(path))
    return hashlib.sha256(lines.encode()).hexdigest()


def path_bytes(path: Path | str) -> int:
    """The size of a file, or of every file in a folder."""
    return sum(p.stat().st_size for p in tree_files(Path(path)))
