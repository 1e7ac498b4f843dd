"""The tracking store's checks that the cluster commands run: a server or database reachable, a
driver installed, MLflow's allowed hosts, an artifact root on a local disk."""

from __future__ import annotations

import socket
import time

from mona_tune.tracking import server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends

def test_store_fault_names_an_unreachable_server_and_database_quickly():
    t0 = time.time()
    fault = server.store_fault(f"http://127.0.0.1:{_closed_port()}")
    assert "not reachable (connection refused)" in fault
    fault = server.store_fault(f"postgresql://u:pw@127.0.0.1:{_closed_port()}/db")
    assert "database not reachable" in fault and "pw" not in fault and "u:***@" in fault
    assert time.time() - t0 < 15
    assert server.store_fault("sqlite:////tmp/x.db") is None  # a file: the preflight's question

def test_store_fault_names_a_missing_database_driver():
    fault = server.store_fault("mysql://u@127.0.0.1:3306/db")
    assert "database driver" in fault and "pip install 'mona-tune[mysql]'" in fault

def test_allowed_hosts_cover_the_names_with_any_port_and_loopback():
    hosts = server.allowed_hosts("0.0.0.0", ["head-node", "10.0.0.5", "mlflow:5000"]).split(",")
    for h in ("head-node", "head-node:*", "10.0.0.5", "10.0.0.5:*", "mlflow:5000",
              "localhost:*", "127.0.0.1:*", "[::1]", "[[]::1]:*"):
        assert h in hosts
    from mlflow.server.security_utils import is_allowed_host_header

    assert is_allowed_host_header(hosts, "head-node:5000")
    assert is_allowed_host_header(hosts, "[::1]:5000")
    assert not is_allowed_host_header(hosts, "evil.example:5000")
    assert not is_allowed_host_header(hosts, "mlflow:5001")

def test_local_dir():
    assert server.local_dir("file:///srv/mlartifacts/x") == "/srv/mlartifacts/x"
    assert server.local_dir("/srv/a") == "/srv/a"
    for remote in ("mlflow-artifacts:/1", "s3://b/p", None):
        assert server.local_dir(remote) is None
