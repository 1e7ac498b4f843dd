"""Checking every node before a search: what the preflight checks on a node and what it leaves
behind, the driver's own faults, and the whole check on a real one-node Ray."""

from __future__ import annotations

import pytest

from mona_tune.cluster import nodes, preflight, storage
from mona_tune.errors import MonaError


class _Runtime:
    def __init__(self, node_id):
        self.node_id = node_id

    def get_node_id(self):
        return self.node_id

@pytest.fixture
def on_node(monkeypatch):
    """check_node as Ray runs it on the node named ``node_id``."""
    import ray

    def run(spec, node_id="n" * 56):
        monkeypatch.setattr(ray, "get_runtime_context", lambda: _Runtime(node_id))
        return preflight.check_node(spec)

    return run

def _spec(tmp_path, **kw):
    return preflight.PreflightSpec(storage=str(tmp_path / "runs"),
                                   tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", **kw)

def test_a_node_that_sees_everything_has_no_fault_and_writes_its_marker(tmp_path, on_node):
    shared = tmp_path / "shared"
    data = tmp_path / "data.h5"
    data.write_bytes(b"x")
    spec = _spec(tmp_path, shared_dirs=[("the store's folder", str(shared))],
                 inputs=[("--data-dir", str(data))])
    written, created = [], []
    preflight._driver_writes(spec, written, created)
    assert (tmp_path / "runs" / spec.marker).read_text() == spec.marker
    assert (shared / spec.marker).read_text() == spec.marker
    assert on_node(spec, "n1") == []
    assert (tmp_path / "runs" / f"{spec.marker}.n1").read_text() == "n1"
    preflight._clean([*written, str(tmp_path / "runs" / f"{spec.marker}.n1")], created)
    assert not (tmp_path / "runs").exists() and not shared.exists()  # made for the check only

def test_a_node_without_the_drivers_files_names_each_fault(tmp_path, on_node):
    spec = _spec(tmp_path, shared_dirs=[("the MLflow artifact root", str(tmp_path / "art"))],
                 inputs=[("--weights", str(tmp_path / "no.pt"))])
    faults = on_node(spec)  # the driver wrote nothing here: another machine's disk
    assert faults == [
        f"--storage {spec.storage} is not the driver's: a file the driver wrote there is missing "
        "on this node (use a filesystem every node mounts, or s3:// / gs://)",
        f"the MLflow artifact root {tmp_path / 'art'} is on the driver's disk only (a file the "
        "driver wrote there is missing on this node)",
        f"--weights {tmp_path / 'no.pt'} does not exist on this node"]

def test_a_node_that_cannot_write_its_marker_names_the_storage(tmp_path, on_node):
    spec = _spec(tmp_path)
    preflight._driver_writes(spec, [], [])
    (tmp_path / "runs" / f"{spec.marker}.n2").mkdir()  # a folder where its marker would go
    (fault,) = on_node(spec, "n2")
    assert fault.startswith(f"--storage {tmp_path / 'runs'} is not writable here (")
    assert fault.endswith("Is a directory)")


def test_a_node_that_cannot_reach_the_tracking_server_says_so(tmp_path, on_node):
    from proc_net import free_port

    spec = preflight.PreflightSpec(storage=str(tmp_path),
                                   tracking_uri=f"http://127.0.0.1:{free_port()}")
    preflight._driver_writes(spec, [], [])
    (fault,) = on_node(spec)
    assert "127.0.0.1" in fault and "tracking" in fault.lower()

def test_the_driver_cannot_create_its_storage_is_its_own_fault(tmp_path):
    (tmp_path / "file").write_text("x")
    spec = preflight.PreflightSpec(storage=str(tmp_path / "file" / "runs"),
                                   tracking_uri="sqlite:///m.db")
    with pytest.raises(MonaError, match=r"^--storage .*/file/runs: cannot create it"):
        preflight._driver_writes(spec, [], [])

def test_the_driver_makes_missing_folders_and_names_what_it_cannot_write(tmp_path):
    """Nested folders made (recorded deepest first, for the clean-up); a storage path ending in
    any character keeps it in the marker's path; a marker that cannot be written (a folder
    stands in its place) is one line naming the storage or the shared folder."""
    storage_dir = tmp_path / "a" / "b" / "runsX"
    shared = tmp_path / "shared"
    spec = preflight.PreflightSpec(storage=str(storage_dir) + "/", tracking_uri="sqlite:///m.db",
                                   marker="mona-preflight-0123",
                                   shared_dirs=[("the store", str(shared))])
    written, created = [], []
    preflight._driver_writes(spec, written, created)
    assert created == [storage_dir, tmp_path / "a" / "b", tmp_path / "a", shared]
    assert written == [f"{storage_dir}/mona-preflight-0123", f"{shared}/mona-preflight-0123"]
    assert (storage_dir / "mona-preflight-0123").read_text() == "mona-preflight-0123"
    preflight._clean(written, created)
    assert not (tmp_path / "a").exists() and not shared.exists()

    (storage_dir / "mona-preflight-0123").mkdir(parents=True)
    with pytest.raises(MonaError, match=rf"^--storage {storage_dir}/: cannot write there "
                                        r"\(\[Errno 21\] .*Is a directory\)$"):
        preflight._driver_writes(spec, [], [])
    (storage_dir / "mona-preflight-0123").rmdir()
    (shared / "mona-preflight-0123").mkdir(parents=True)
    with pytest.raises(MonaError, match=rf"^the store {shared}: cannot write there "
                                        r"\(Is a directory\)$"):
        preflight._driver_writes(spec, [], [])


def test_preflight_names_the_node_at_fault_and_leaves_nothing(tmp_path, monkeypatch):
    """preflight() with each node's check run here (the real Ray tasks: tests/system/test_two_nodes.py):
    the first fault is one line naming its node; the markers and folders made are removed."""
    good, bad = nodes.Node("a" * 56, "10.0.0.1", 2, 0), nodes.Node("b" * 56, "10.0.0.2", 2, 0)

    class Call:
        def __init__(self, node):
            self.node = node

        def remote(self, spec):
            if self.node is bad:
                return ["--data-dir /d does not exist on this node", "second fault"]
            storage.write_bytes(preflight._storage_marker(spec, "." + self.node.node_id),
                                self.node.node_id.encode())
            return []

    monkeypatch.setattr(preflight, "pinned", lambda fn, node, **kw: Call(node))
    monkeypatch.setattr(preflight, "gather", lambda refs, timeout, what: refs)
    spec = _spec(tmp_path)
    with pytest.raises(MonaError) as err:
        preflight.preflight(spec, [good, bad])
    assert str(err.value) == ("node 10.0.0.2 (bbbbbbbb): --data-dir /d does not exist on this "
                              "node (and 1 more faults)")
    assert not (tmp_path / "runs").exists()
    assert preflight.preflight(_spec(tmp_path), [good]) == []
    assert list((tmp_path / "runs").iterdir()) == []  # the folder stays, the markers go
    warn = preflight.preflight(_spec(tmp_path), [good, good])
    assert warn == ["warning: 2 Ray nodes share a SQLite tracking store on a shared filesystem; "
                    "an MLflow server (`mona-tune tracking-server`) is safer for many trials"]
    server = preflight.PreflightSpec(storage=str(tmp_path / "runs"),
                                     tracking_uri="postgresql://u@db/mlflow")
    assert preflight.preflight(server, [good, good]) == []
    assert (preflight.PREFLIGHT_TIMEOUT_S, preflight.MARKER_PREFIX) == (60.0, ".mona-preflight-")

def test_preflight_spec_of_a_search(tmp_path):
    from mona_tune.config import SearchConfig
    from mona_tune.search.driver import preflight_spec

    scfg = SearchConfig(space_file="x", name="n", storage=str(tmp_path / "runs"),
                        tracking_uri=f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    spec = preflight_spec(scfg, {"data_dir": "/data/darcy", "source_data": "cifar10:/data/c10",
                                 "weights": "/models/swin.safetensors"})
    assert spec.shared_dirs == [("the SQLite tracking store's folder", str(tmp_path / "db"))]
    assert dict(spec.inputs) == {"--data-dir": "/data/darcy", "--source-data": "/data/c10",
                                 "--weights": "/models/swin.safetensors"}
    assert spec.marker.startswith(preflight.MARKER_PREFIX)


def test_preflight_on_a_real_ray(local_ray, tmp_path):
    node = nodes.Node(local_ray.node_id, local_ray.ip, 2.0, 1.0)
    assert preflight.preflight(_spec(tmp_path), [node]) == []
    assert list((tmp_path / "runs").iterdir()) == []  # the markers are gone
    spec = _spec(tmp_path, inputs=[("--data-dir", str(tmp_path / "d")),
                                   ("--weights", str(tmp_path / "w"))])
    with pytest.raises(MonaError) as err:
        preflight.preflight(spec, [node])
    assert str(err.value) == (f"{node.label}: --data-dir {tmp_path / 'd'} does not exist on this "
                              "node (and 1 more faults)")
    assert list((tmp_path / "runs").iterdir()) == []
