"""The storage paths: local or URI, read, written and deleted through pyarrow's filesystems."""

from __future__ import annotations

from pathlib import Path

from mona_tune.cluster import storage


def test_storage_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.is_uri("s3://b/x") and storage.is_uri("file:///x") and not storage.is_uri("/x")
    assert storage.storage_path(None) == str(tmp_path / "runs")
    assert storage.storage_path("a/../b") == str(tmp_path / "b")
    assert storage.storage_path("~/r") == str(Path.home() / "r")
    assert storage.storage_path("s3://bucket/p") == "s3://bucket/p"
    assert storage.join("s3://b/x/", "y", "z.json") == "s3://b/x/y/z.json"
    assert storage.join("/a", "b") == "/a/b"
    assert storage.join("/runsX//", "y") == "/runsX/y"  # only slashes come off the end

def test_storage_read_write_exists_delete(tmp_path):
    path = str(tmp_path / "deep" / "f.txt")
    assert storage.read_text(path) is None and not storage.exists(path)
    storage.write_bytes(path, b"hello", make_parent=True)
    assert storage.read_text(path) == "hello" and storage.exists(path)
    storage.write_bytes(path, b"again")
    assert Path(path).read_text() == "again"
    storage.delete(path)
    assert not Path(path).exists()
    storage.delete(path)  # gone already: fine
    nested = tmp_path / "one" / "two" / "three" / "g.txt"  # several folders missing
    storage.write_bytes(str(nested), b"x", make_parent=True)
    assert nested.read_bytes() == b"x"
    uri = f"file://{tmp_path}/u.txt"
    storage.write_bytes(uri, b"via uri")
    assert storage.read_text(uri) == "via uri" and (tmp_path / "u.txt").read_text() == "via uri"
