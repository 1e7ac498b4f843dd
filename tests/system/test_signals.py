"""SIGTERM on the long-running commands: `mona-tune search` saves its state and prints the command
that continues it (which then completes the search); `mona-tune ui` and `mona-tune
tracking-server` stop the MLflow server they started and every worker of it (the port is free
again, no process is left), after serving on 127.0.0.1 only. The search also carries the safe
defaults that need a running search (loopback servers, the dashboard's token, planted secrets)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from proc_net import (
    alive,
    children,
    command_env,
    free_port,
    http_status,
    listening,
    port_free,
    wait_for,
)

pytestmark = pytest.mark.slow

SPACE = """\
searched:
  lam: {uniform: [0.0, 1.0]}
fixed:
  warmup_epochs: 1
  epochs: 3
  batch_size: 16
  n_train: 40
  n_test: 16
  resolution: 29
  device: cpu
budget: {num_samples: 2, max_concurrent: 1}
scheduler: {kind: fifo}
"""
MONA_TUNE = [sys.executable, "-m", "mona_tune.cli"]


def _reported(exp: Path) -> bool:
    """Some trial has reported an epoch (Tune's result.json of it is not empty)."""
    return any(p.stat().st_size > 0 for p in exp.glob("trial_*/result.json"))


SECRETS = {"uri": "pw-in-the-uri-5f1e", "AWS_SECRET_ACCESS_KEY": "aws-key-9c3b",
           "MLFLOW_TRACKING_TOKEN": "mlflow-token-77d2", "HF_TOKEN": "hf-token-31aa"}


def _texts(folder: Path):
    for p in folder.rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            yield p, p.read_bytes().decode("utf-8", "replace")


def _stop(proc: subprocess.Popen, timeout: float) -> float:
    """SIGTERM, wait; SIGKILL the group only if something is left. Seconds until it ended."""
    t0 = time.time()
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return time.time() - t0


def test_search_on_a_tracking_server_sigterm_then_the_printed_resume(tmp_path):
    """One search serves items of both signals and safe defaults (a search costs a minute):

    - `mona-tune tracking-server` listens on 127.0.0.1 only; SIGTERM stops it and its uvicorn
      workers (no process left, the port free);
    - the search runs on it with --dashboard: the dashboard listens on 127.0.0.1 and answers 401
      without the token;
    - SIGTERM after the first trial's report: the search exits 143 within 90 s and prints the
      command that continues it; that line, pasted from another folder, completes the search;
    - secrets planted in the environment and as the tracking URI's password appear in no run's
      params or tags, no artifact, no file of the search's folder but its settings file (which
      keeps the URI as given: --resume reads it), and no printed line (the trials' included).
    """
    from mlflow.tracking import MlflowClient
    from ray.tune import ExperimentAnalysis

    from mona_tune.search.driver import META_FILE

    port, art = free_port(), tmp_path / "mlartifacts"
    with open(tmp_path / "server.log", "w") as out:
        server = subprocess.Popen(
            [*MONA_TUNE, "tracking-server", "--backend-store-uri",
             f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(art),
             "--port", str(port)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env=command_env(), start_new_session=True)
    search = None
    (tmp_path / "space.yaml").write_text(SPACE)
    exp = tmp_path / "runs" / "sig"
    logs = {name: tmp_path / f"{name}.log" for name in ("out", "err", "resumed")}
    secret_env = {k: v for k, v in SECRETS.items() if k != "uri"}
    # a trial waits at stage-2 epoch 2 until `go` exists, so the signal always falls mid-search
    go = tmp_path / "go"
    pause = json.dumps([{"at": [2, 2], "kind": "pause", "until": str(go)}])
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200
                 or server.poll() is not None, 120, "the tracking server")
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        server_pids = children(server.pid)
        sockets = listening([server.pid, *server_pids])
        assert ("127.0.0.1", port) in sockets and {ip for ip, _ in sockets} == {"127.0.0.1"}, \
            sockets

        dash = free_port()
        with open(logs["out"], "w") as out, open(logs["err"], "w") as err:
            search = subprocess.Popen(
                [*MONA_TUNE, "search", "--space", str(tmp_path / "space.yaml"), "--name", "sig",
                 "--storage", str(tmp_path / "runs"), "--tracking-uri",
                 f"http://mona:{SECRETS['uri']}@127.0.0.1:{port}", "--dashboard",
                 "--dashboard-port", str(dash), "--no-register", "--quiet"],
                cwd=tmp_path, stdout=out, stderr=err, start_new_session=True,
                env=command_env(TUNE_GLOBAL_CHECKPOINT_S="1", MONA_TUNE_FAULT=pause,
                                **secret_env))
        url = wait_for(lambda: re.search(r"Ray dashboard: (http://\S+)", logs["out"].read_text())
                       or search.poll() is not None, 300, "the dashboard line")
        assert search.poll() is None, logs["err"].read_text()[-3000:]
        assert url.group(1).startswith(f"http://127.0.0.1:{dash}")
        dash_sockets = [s for s in listening(children(search.pid)) if s[1] == dash]
        assert dash_sockets == [("127.0.0.1", dash)], dash_sockets
        assert http_status(url.group(1).rstrip("/") + "/api/version") == 401  # token auth

        wait_for(lambda: _reported(exp) or search.poll() is not None, 300,
                 "a trial's first report")
        assert search.poll() is None, logs["err"].read_text()[-3000:]
        stop_s = _stop(search, 90)
        go.touch()
        print(f"search stopped {stop_s:.1f} s after SIGTERM")
        err = logs["err"].read_text()
        assert search.returncode == 128 + signal.SIGTERM, err[-3000:]
        lines = err.strip().splitlines()
        assert lines[-2].endswith("its state is saved. Continue it with:"), err[-3000:]
        resume = lines[-1]
        assert resume == ("mona-tune search --name sig --resume --storage "
                          + shlex.quote(str(tmp_path / "runs")))
        assert "Traceback" not in err
        states = {t.trial_id: t.status for t in ExperimentAnalysis(str(exp)).trials}
        assert states and not (len(states) == 2 and set(states.values()) == {"TERMINATED"}), \
            states

        # the line as printed, with the mona-tune of this environment, from another folder
        cmd = shlex.split(resume)
        cmd[0] = str(Path(sys.executable).with_name("mona-tune"))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        with open(logs["resumed"], "w") as out:
            done = subprocess.run(cmd, check=False, cwd=elsewhere, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=400,
                                  env=command_env(**secret_env))
        printed = logs["resumed"].read_text()
        assert done.returncode == 0, printed[-3000:]
        assert "resuming" in printed and not (elsewhere / "mlflow.db").exists()
        trials = ExperimentAnalysis(str(exp)).trials
        assert len(trials) == 2 and all(t.status == "TERMINATED" for t in trials), \
            [(t.trial_id, t.status) for t in trials]
    finally:
        if search is not None and search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait()
        server_stop_s = _stop(server, 30)
    assert server.returncode == 0 and server_stop_s < 20
    assert [p for p in server_pids if alive(p)] == [], "server processes left after SIGTERM"
    assert port_free(port)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 3  # the search and its 2 trials
    seen = {str(p): p.read_text() for p in logs.values()}
    for r in runs:
        seen[f"run {r.info.run_id}"] = repr(r.data.params) + repr(r.data.tags)
    for path, text in [*_texts(art), *_texts(tmp_path / "runs")]:
        if path.name != META_FILE:
            seen[str(path)] = text
    for where, text in seen.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name}'s secret in {where}"


def serve_then_sigterm(argv: list[str], port: int, cwd: Path) -> dict:
    """Start a server command, check what it listens on, SIGTERM it; what was seen."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=command_env(), start_new_session=True)
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200 or proc.poll() is not None, 120, "the server's answer")
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        pids = children(proc.pid)
        sockets = listening([proc.pid, *pids])
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        seconds = time.time() - t0
        left = [p for p in pids if alive(p)]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # only if something is left of it
        except ProcessLookupError:
            pass
        proc.wait()
    return {"code": proc.returncode, "pids": pids, "sockets": sockets, "left": left,
            "seconds": seconds, "out": out}


def test_sigterm_on_ui_stops_the_server_and_its_workers(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")  # an empty SQLite file is a store MLflow initialises
    port = free_port()
    seen = serve_then_sigterm([*MONA_TUNE, "ui", "--port", str(port), "--tracking-uri",
                               f"sqlite:///{db}"], port, tmp_path)
    assert seen["pids"], "the ui started no server process"
    assert seen["sockets"] and all(ip == "127.0.0.1" for ip, _ in seen["sockets"]), seen
    assert ("127.0.0.1", port) in seen["sockets"]
    assert seen["code"] == 0, seen["out"][-2000:]
    assert seen["left"] == [], f"processes left after SIGTERM: {seen['left']}"
    assert port_free(port)
    assert seen["seconds"] < 15
