"""FNO Darcy arrays read once per node: the subsampled samples a trial uses, kept as ``.npy``.

A MATLAB v5 file can only be read whole (scipy): 1024 x 421 x 421 doubles, 1.45 GB per field, of
which a trial keeps ~1200 x 85 x 85 floats. The first read on a node reads the source (a v7.3 file
only the needed samples, every ``step``-th node) and writes those arrays into the user cache; later
reads map the ``.npy`` (``np.load(mmap_mode="r")``) and never open the source.

An entry is keyed by the source's resolved path, size, mtime (ns) and inode and by the read's
parameters, so a changed file is read again. Files are written aside and renamed into place, so a
reader finds none or a whole one; a lock makes trials racing on one node read the source once.
The entries are not shipped to the other nodes of a cluster (``cluster.node_cache``): their key
holds a file's path, mtime and inode on this node.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mona_tune.cache import atomic_path, cache_dir, config_key, file_lock
from mona_tune.errors import MonaError
from mona_tune.tasks import readers

KIND = "fno-arrays"  # the cache folder (one level: never in cache.used_entries)
VERSION = 1  # bump when what an entry holds changes


def entry(path: Path, suffix: str, **params) -> Path:
    """The cache file of ``path`` read with ``params``: a stat of the source, never an open."""
    with readers.file_errors(path):
        st = path.stat()
    key = config_key({"file": str(path.resolve()), "size": st.st_size,
                      "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "version": VERSION, **params})
    return cache_dir(KIND) / f"{key}{suffix}"


def fno_header(path: Path) -> readers.FnoFile:
    """:func:`readers.fno_header`, checked once per node and file version."""
    cached = entry(path, ".json")
    try:
        meta = json.loads(cached.read_text())
        return readers.FnoFile(path, str(meta["version"]), int(meta["n"]), int(meta["resolution"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    head = readers.fno_header(path)
    with atomic_path(cached) as tmp:
        tmp.write_text(json.dumps({"version": head.version, "n": head.n,
                                   "resolution": head.resolution}))
    return head


def _mapped(cached: Path, n: int) -> np.ndarray | None:
    """The entry mapped read-only, ``(2, n, r, r)`` float32; None when absent or not whole."""
    try:
        arr = np.load(cached, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return None
    ok = arr.dtype == np.float32 and arr.ndim == 4 and arr.shape[:2] == (2, n)
    return arr if ok else None


def _write(cached: Path, coeff: np.ndarray, sol: np.ndarray) -> None:
    with atomic_path(cached) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(2, *coeff.shape))
        out[0], out[1] = coeff, sol
        out.flush()
        del out


def read_fno(path: Path, n: int, step: int, what: str = "n",
             start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`readers.read_fno` through the node cache: ``coeff`` and ``sol`` (n, r, r) float32,
    read-only views of the mapped entry (copy before changing them)."""
    cached = entry(path, ".npy", n=n, step=step, start=start)
    arr = _mapped(cached, n)
    if arr is None:
        with file_lock(cached.with_suffix(".lock")):
            arr = _mapped(cached, n)  # another process may have filled it meanwhile
            if arr is None:
                _write(cached, *readers.read_fno(path, n, step, what, start))
                arr = _mapped(cached, n)
    if arr is None:  # written whole a moment ago: only a failing disk gets here
        raise MonaError(f"{cached}: the cached arrays of {path} cannot be read back")
    return arr[0], arr[1]
