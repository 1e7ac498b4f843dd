"""Output folders checked before any work starts, so that a folder that cannot be made is one
line at once, not an exception after the training (or a half-written folder)."""

from __future__ import annotations

import os
from pathlib import Path

from mona_tune.errors import MonaError


def creatable_fault(path: str | Path) -> str | None:
    """Why the folder ``path`` cannot be created or written (None: it can), without creating it:
    the nearest existing folder on its way must be a writable folder."""
    p = Path(path).expanduser().absolute()
    if p.exists():
        if not p.is_dir():
            return "it is a file, not a folder"
        return None if os.access(p, os.W_OK | os.X_OK) else "no permission to write there"
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"no permission to create folders in {parent}"
            return None
    return None


def check_creatable(path: str | Path, flag: str) -> None:
    fault = creatable_fault(path)
    if fault:
        raise MonaError(f"{flag} {path}: cannot create it ({fault})")


def remove_empty_tree(path: str | Path) -> None:
    """Remove ``path`` if it holds folders only (what a failed start made), never a file."""
    p = Path(path)
    if not p.is_dir() or any(f.is_file() or f.is_symlink() for f in p.rglob("*")):
        return
    for d in sorted((x for x in p.rglob("*") if x.is_dir()), key=lambda x: -len(x.parts)):
        d.rmdir()
    p.rmdir()
