"""Content hashes (SHA-256) of input files and folders, for the provenance of every run.

A multi-GB data file is hashed once per node, not by every trial: the hash is cached in
``<cache>/file-hashes`` under the file's (resolved path, size, mtime_ns), so a changed file (new
size or modification time) is hashed again. The entries stay on their node (a one-part
``cache_dir``: the node cache does not ship them; another node's mtimes differ anyway).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mona_tune.cache import atomic_path, cache_dir, config_key

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
