"""Joining Ray: what travels to the trials, addresses and their default ports, where a Ray token
is looked for, the probe of a cluster's GCS and its token check (against a real local Ray with
token authentication), what ``ray.init`` gets, and the dashboard line."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from mona_tune.cluster import join
from mona_tune.errors import MonaError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends

def test_forwarded_env_takes_what_trials_need_and_nothing_else():
    env = {"MONA_TUNE_CACHE": "/shared/cache", "MLFLOW_TRACKING_TOKEN": "t",
           "MLFLOW_TRACKING_URI": "http://h:5000", "MLFLOW_S3_ENDPOINT_URL": "http://s3",
           "AWS_SECRET_ACCESS_KEY": "s", "AWS_PROFILE": "p", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
           "HOME": "/root", "PATH": "/bin", "RAY_AUTH_TOKEN": "x", "CUDA_VISIBLE_DEVICES": "0",
           "MLFLOW_SERVER_ALLOWED_HOSTS": "h"}
    got = join.forwarded_env(env)
    assert set(got) == {"MONA_TUNE_CACHE", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI",
                        "MLFLOW_S3_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                        "GOOGLE_APPLICATION_CREDENTIALS"}
    assert got["MONA_TUNE_CACHE"] == "/shared/cache"

@pytest.mark.parametrize("address, default, expected", [
    ("10.0.0.5:6379", 1, ("10.0.0.5", 6379)),
    ("head-node", 6379, ("head-node", 6379)),
    ("ray://head:10001", 1, ("head", 10001)),
    ("http://127.0.0.1:8265", 1, ("127.0.0.1", 8265)),
    ("[::1]:6380", 1, ("::1", 6380)),
])
def test_host_port(address, default, expected):
    assert join.host_port(address, default) == expected

def test_host_port_rejects_a_bad_port():
    with pytest.raises(MonaError, match="not a number"):
        join.host_port("head:port", 6379)
    with pytest.raises(MonaError, match=r"^:6379: not HOST:PORT$"):
        join.host_port(":6379", 1)

def test_no_ray_at_an_address_is_one_line_within_seconds():
    t0 = time.time()
    port = _closed_port()
    with pytest.raises(MonaError, match=rf"^--address 127.0.0.1:{port}: no Ray cluster answers "
                                        r"there \(.*\); start one with `ray start --head` or "
                                        r"check the address$"):
        join.check_address(f"127.0.0.1:{port}")
    assert time.time() - t0 < 10

def test_where_a_ray_token_is_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert join._token_source({}) is None
    default = tmp_path / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("  \n")
    assert join._token_source({}) is None  # an empty file is no token
    default.write_text("tok")
    assert join._token_source({}) == str(default)
    other = tmp_path / "t"
    assert join._token_source({"RAY_AUTH_TOKEN_PATH": str(other)}) is None  # named, missing
    other.write_text("tok")
    assert join._token_source({"RAY_AUTH_TOKEN_PATH": str(other)}) == str(other)
    assert join._token_source({"RAY_AUTH_TOKEN": "x", "RAY_AUTH_TOKEN_PATH": str(other)}) == \
        "$RAY_AUTH_TOKEN"

def test_the_dashboard_line_names_where_the_token_is_never_the_token(monkeypatch):
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    assert "not running" in join.dashboard_help(None)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert join.dashboard_help("http://127.0.0.1:8265") == \
        "Ray dashboard: http://127.0.0.1:8265 (while the search runs)"
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cr3t-token")
    text = join.dashboard_help("http://127.0.0.1:8265")
    assert "s3cr3t-token" not in text
    assert "`ray get-auth-token` (it is kept in $RAY_AUTH_TOKEN)" in text
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert "(it is kept in ~/.ray/auth_token)" in join.dashboard_help("http://h:1")


def test_the_dashboard_line_asks_ray_when_the_auth_mode_is_not_set(local_ray, monkeypatch):
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    text = join.dashboard_help("http://h:1")  # the Ray of this process has token authentication
    assert text.splitlines() == [
        "Ray dashboard: http://h:1 (while the search runs)",
        "  token authentication is on: the page asks for the cluster token; print it with "
        "`ray get-auth-token` (it is kept in ~/.ray/auth_token); for HTTP clients send "
        "`Authorization: Bearer $(ray get-auth-token)`"]
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/etc/ray-token")
    assert "(it is kept in /etc/ray-token)" in join.dashboard_help("http://h:1")


# ---------------------------------------------------------------- what ray.init gets
def test_ray_init_args_for_an_address_and_for_a_ray_started_here():
    assert join.init_args("10.0.0.1:6379", dashboard=True, dashboard_port=1,
                          env={"HF_HOME": "/h"}) == {
        "address": "10.0.0.1:6379", "runtime_env": {"env_vars": {"HF_HOME": "/h"}},
        "log_to_driver": True, "logging_level": logging.WARNING}
    assert join.init_args("auto", dashboard=True, dashboard_port=1, env={})["runtime_env"] is None
    assert join.init_args(None, dashboard=True, dashboard_port=8266, env={"HF_HOME": "/h"}) == {
        "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": 8266,
        "log_to_driver": True, "logging_level": logging.WARNING}
    assert join.init_args("", dashboard=False, dashboard_port=0, env={})["include_dashboard"] \
        is False


def test_the_dashboard_url_is_a_link_or_none():
    assert join.http_url("127.0.0.1:8265") == "http://127.0.0.1:8265"
    assert join.http_url("https://head:8265") == "https://head:8265"
    assert join.http_url("") is None and join.http_url(None) is None


# ---------------------------------------------------------------- a real cluster's GCS
def _no_token_anywhere(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)


def test_the_gcs_probe_tells_a_missing_or_wrong_token_apart(local_ray, monkeypatch, tmp_path):
    _no_token_anywhere(monkeypatch, tmp_path)
    env = dict(os.environ)
    assert join._probe_gcs(local_ray.gcs, env) == "auth"
    assert join._probe_gcs(local_ray.gcs, {**env, "RAY_AUTH_MODE": "token",
                                           "RAY_AUTH_TOKEN": local_ray.token}) is None
    assert join._probe_gcs(local_ray.gcs, {**env, "RAY_AUTH_MODE": "token",
                                           "RAY_AUTH_TOKEN": "0" * 64}) == "auth"
    fault = join._probe_gcs("not an address", env)  # the client's own error, on one line
    assert fault and "\n" not in fault and fault != "auth"


@pytest.mark.parametrize("code, out, err, verdict", [
    (0, "", "", None),
    (1, "ModuleNotFoundError: No module named 'ray._raylet'", "", None),  # ray.init decides
    (1, "", "log\nImportError: cannot import name 'GcsClient'", None),
    (1, "AttributeError: 'GcsClient' has no attribute 'internal_kv_get'", "", None),
    (1, "AuthenticationError: token missing", "", "auth"),
    (1, "RpcError: InvalidAuthToken", "", "auth"),
    (1, "", "RpcError: Unauthenticated\n", "auth"),
    (1, "  RpcError: deadline exceeded \n", "ignored", "RpcError: deadline exceeded"),
    (1, "", "first\nlast line\n", "last line"),
    (3, "", "", "exit status 3"),
])
def test_the_probes_verdict(code, out, err, verdict):
    assert join.probe_verdict(code, out, err) == verdict


def test_a_silent_address_is_named_within_the_probes_deadline(monkeypatch):
    monkeypatch.setattr(join, "GCS_PROBE_TIMEOUT_S", 1.5)
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        t0 = time.time()
        assert join._probe_gcs(f"127.0.0.1:{server.getsockname()[1]}", dict(os.environ)) == \
            "it accepts connections but does not answer as a Ray cluster within 1.5 s"
        assert time.time() - t0 < 10
    assert join.GCS_PROBE_TIMEOUT_S == 1.5


def test_check_address_turns_token_auth_on_with_the_token_at_hand(local_ray, monkeypatch,
                                                                   tmp_path):
    _no_token_anywhere(monkeypatch, tmp_path)
    monkeypatch.setenv("RAY_AUTH_TOKEN", local_ray.token)
    join.check_address(local_ray.gcs)
    assert os.environ["RAY_AUTH_MODE"] == "token"
    import ray

    # the token cache was emptied: read the token again now, while this process has the right one
    assert ray.nodes()[0]["NodeID"] == local_ray.node_id


def test_check_address_names_a_missing_or_refused_token(local_ray, monkeypatch, tmp_path):
    _no_token_anywhere(monkeypatch, tmp_path)
    with pytest.raises(MonaError) as err:
        join.check_address(local_ray.gcs)
    assert str(err.value) == (
        f"--address {local_ray.gcs}: the Ray cluster requires its authentication token; set "
        "RAY_AUTH_TOKEN (print it on the head with `ray get-auth-token`) or write it to "
        "~/.ray/auth_token, and RAY_AUTH_MODE=token")
    assert "RAY_AUTH_MODE" not in os.environ
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    for mode in ("", "TOKEN"):  # not set: tried with the token; set: the token was used
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
        with pytest.raises(MonaError) as err:
            join.check_address(local_ray.gcs)
        assert str(err.value) == (
            f"--address {local_ray.gcs}: the Ray cluster refused the token from $RAY_AUTH_TOKEN; "
            "use the head's (`ray get-auth-token` on the head) and RAY_AUTH_MODE=token")
        assert os.environ["RAY_AUTH_MODE"] == mode


def test_an_address_without_a_port_is_at_rays_default_ports(local_ray, monkeypatch):
    assert (join.GCS_PORT, join.CLIENT_PORT) == (6379, 10001)
    host, port = local_ray.gcs.rsplit(":", 1)
    monkeypatch.setattr(join, "GCS_PORT", int(port))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", local_ray.token)
    with pytest.raises(MonaError) as err:  # the TCP check passes at the default port ...
        join.check_address(host)
    assert str(err.value).startswith(f"--address {host}: ")  # ... the probe wants HOST:PORT
    assert "no Ray cluster answers there" not in str(err.value)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(join, "CLIENT_PORT", server.getsockname()[1])
        join.check_address("ray://127.0.0.1")  # something answers there
    with pytest.raises(MonaError) as err:
        join.check_address("ray://127.0.0.1")
    assert str(err.value).startswith("--address ray://127.0.0.1: no Ray client server answers "
                                     "there (")
    join.check_address("auto")  # ray.init finds those itself
    join.check_address("local")


def test_join_uses_the_ray_of_this_process_or_joins_the_address(local_ray, tmp_path):
    assert join.join("10.0.0.1:1", dashboard=True, dashboard_port=1, env={}) == (False, None)
    script = tmp_path / "join.py"
    script.write_text(
        "import os, ray\n"
        "from mona_tune.cluster.join import join\n"
        "got = join(None, dashboard=False, dashboard_port=0, env={'MONA_TUNE_X': 'sent'})\n"
        "print(got, ray.get(ray.remote(lambda: os.environ.get('MONA_TUNE_X')).options("
        "num_cpus=0).remote()))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_MODE")}
    env.update(RAY_ADDRESS=local_ray.gcs, RAY_AUTH_TOKEN=local_ray.token,
               PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.splitlines()[-1:] == ["(True, None) sent"], proc.stderr[-2000:]
