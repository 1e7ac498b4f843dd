"""The search's storage: a local path or a URI (``s3://``, ``gs://``, ``file://``), read and
written through pyarrow's filesystems, so the same calls serve the driver and every node."""

from __future__ import annotations

from pathlib import Path


def is_uri(path: str) -> bool:
    return "://" in path


def storage_path(storage: str | None) -> str:
    """Absolute local path or a URI (``s3://``, ``gs://``, ``file://``)."""
    if storage is None:
        storage = "runs"
    if is_uri(storage):
        return storage
    return str(Path(storage).expanduser().resolve())


def filesystem(path: str):
    """(pyarrow filesystem, path inside it)."""
    import pyarrow.fs

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def read_text(path: str) -> str | None:
    """The file's text, or None where there is none."""
    fs, p = filesystem(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def write_bytes(path: str, data: bytes, *, make_parent: bool = False) -> None:
    fs, p = filesystem(path)
    if make_parent:
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(data)


def exists(path: str) -> bool:
    import pyarrow.fs

    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def delete(path: str) -> None:
    """Remove a file; one already gone is fine."""
    fs, p = filesystem(path)
    try:
        fs.delete_file(p)
    except (FileNotFoundError, OSError):
        pass
