"""Checking every node of the cluster before any trial starts.

:func:`preflight` runs a small task pinned to every alive node: the storage path is the same place
from every node (a marker written by the driver is read there, and each node's marker is read back
by the driver), the tracking store is reachable from there and is not a file on the driver's disk
only, and the data paths exist. A fault is one line naming the node, before anything is written to
the tracking store or the storage.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mona_tune.cluster import storage
from mona_tune.errors import MonaError
from mona_tune.cluster.nodes import Node, gather, pinned
from mona_tune.tracking.server import store_fault

PREFLIGHT_TIMEOUT_S = 60.0
MARKER_PREFIX = ".mona-preflight-"


@dataclass
class PreflightSpec:
    """What every node must see. Local paths are checked with a marker file the driver writes."""

    storage: str  # absolute path or URI
    tracking_uri: str
    marker: str = field(default_factory=lambda: MARKER_PREFIX + uuid.uuid4().hex[:12])
    # (label, local directory) that must be the driver's own directory on every node
    shared_dirs: list[tuple[str, str]] = field(default_factory=list)
    # (label, path) that must exist on every node (read-only inputs)
    inputs: list[tuple[str, str]] = field(default_factory=list)


def _storage_marker(spec: PreflightSpec, suffix: str = "") -> str:
    return f"{spec.storage.rstrip('/')}/{spec.marker}{suffix}"


def check_node(spec: PreflightSpec) -> list[str]:
    """Runs on one node: what this node cannot see or reach (empty: all is well). Writes this
    node's storage marker, which the driver reads back."""
    import ray

    faults = []
    node_id = ray.get_runtime_context().get_node_id()
    if storage.read_text(_storage_marker(spec)) != spec.marker:
        faults.append(f"--storage {spec.storage} is not the driver's: a file the driver wrote "
                      "there is missing on this node (use a filesystem every node mounts, or "
                      "s3:// / gs://)")
    else:
        try:
            storage.write_bytes(_storage_marker(spec, "." + node_id), node_id.encode())
        except OSError as e:
            faults.append(f"--storage {spec.storage} is not writable here ({e})")
    for label, directory in spec.shared_dirs:
        if not Path(directory, spec.marker).is_file():
            faults.append(f"{label} {directory} is on the driver's disk only (a file the driver "
                          "wrote there is missing on this node)")
    fault = store_fault(spec.tracking_uri)
    if fault:
        faults.append(fault)
    for label, path in spec.inputs:
        if not Path(path).exists():
            faults.append(f"{label} {path} does not exist on this node")
    return faults


def _mkdirs(path: Path, created: list[Path]) -> None:
    """``mkdir -p`` that records the folders it made (removed again after the check)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    created.extend(missing)  # deepest first


def _driver_writes(spec: PreflightSpec, written: list[str], created: list[Path]) -> None:
    """Place the markers (recorded in ``written``, folders made in ``created``). A storage path
    or folder that cannot be created or written is the driver's own fault, named as such."""
    if not storage.is_uri(spec.storage):
        try:
            _mkdirs(Path(spec.storage), created)
        except OSError as e:
            raise MonaError(f"--storage {spec.storage}: cannot create it ({e.strerror or e})") \
                from None
    try:
        storage.write_bytes(_storage_marker(spec), spec.marker.encode())
        written.append(_storage_marker(spec))
    except OSError as e:
        raise MonaError(f"--storage {spec.storage}: cannot write there ({e})") from None
    for label, directory in spec.shared_dirs:
        path = Path(directory, spec.marker)
        try:
            _mkdirs(Path(directory), created)
            path.write_text(spec.marker)
        except OSError as e:
            raise MonaError(f"{label} {directory}: cannot write there ({e.strerror or e})") \
                from None
        written.append(str(path))


def _clean(written: list[str], created: list[Path]) -> None:
    for path in written:
        storage.delete(path)
    for folder in created:
        try:
            folder.rmdir()  # only if still empty
        except OSError:
            pass


def preflight(spec: PreflightSpec, nodes: list[Node],
              timeout: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """Check every node (see the module docstring). Raises MonaError naming the first node at
    fault; returns warnings (things that work but are unwise)."""
    written: list[str] = []
    created: list[Path] = []
    try:
        _driver_writes(spec, written, created)
        refs = {n: pinned(check_node, n, num_cpus=0).remote(spec) for n in nodes}
        written.extend(_storage_marker(spec, "." + n.node_id) for n in nodes)
        results = gather(refs, timeout, "the preflight check")
        bad = [(n, f) for n, faults in results.items() for f in faults]
        if bad:
            node, fault = bad[0]
            more = f" (and {len(bad) - 1} more faults)" if len(bad) > 1 else ""
            raise MonaError(f"{node.label}: {fault}{more}")
        for n in nodes:  # each node's write is visible here: the same storage everywhere
            if storage.read_text(_storage_marker(spec, "." + n.node_id)) != n.node_id:
                raise MonaError(f"{n.label}: --storage {spec.storage}: what this node wrote is "
                                "not visible to the driver (not the same storage)")
    except BaseException:
        _clean(written, created)
        raise
    _clean(written, [])  # the checked folders stay: the search uses them
    warnings = []
    if len(nodes) > 1 and spec.tracking_uri.startswith("sqlite:"):
        warnings.append(f"warning: {len(nodes)} Ray nodes share a SQLite tracking store on a "
                        "shared filesystem; an MLflow server (`mona-tune tracking-server`) is "
                        "safer for many trials")
    return warnings
