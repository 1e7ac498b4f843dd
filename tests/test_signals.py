"""SIGTERM on the long-running commands: `mona-tune search` saves its state and prints the command
that continues it (which then completes the search); `mona-tune ui` stops the MLflow server it
started and every worker of it (the port is free again, no process is left), after serving on
127.0.0.1 only."""

from __future__ import annotations

import os
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
  epochs: 4
  batch_size: 8      # epochs slow enough that the signal comes mid-search
  n_train: 60
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


def test_sigterm_on_search_saves_state_and_the_printed_resume_completes_it(tmp_path):
    from ray.tune import ExperimentAnalysis

    (tmp_path / "space.yaml").write_text(SPACE)
    exp = tmp_path / "runs" / "sig"
    argv = [*MONA_TUNE, "search", "--space", str(tmp_path / "space.yaml"), "--name", "sig",
            "--storage", str(tmp_path / "runs"), "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--quiet"]
    log = tmp_path / "search.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=subprocess.PIPE,
                                text=True, env=command_env(TUNE_GLOBAL_CHECKPOINT_S="1"))
    try:
        wait_for(lambda: _reported(exp) or proc.poll() is not None, 300, "a trial's first report")
        assert proc.poll() is None, log.read_text()[-3000:] + proc.stderr.read()[-3000:]
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        stop_s = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"stopped {stop_s:.1f} s after SIGTERM")
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    lines = err.strip().splitlines()
    assert lines[-2].endswith("its state is saved. Continue it with:"), err[-3000:]
    resume = lines[-1]
    assert resume == ("mona-tune search --name sig --resume --storage "
                      + shlex.quote(str(tmp_path / "runs")))
    assert "Traceback" not in err
    states = {t.trial_id: t.status for t in ExperimentAnalysis(str(exp)).trials}
    assert states and not (len(states) == 2 and set(states.values()) == {"TERMINATED"}), states

    # the line as printed, with the mona-tune of this environment, from another folder
    cmd = shlex.split(resume)
    cmd[0] = str(Path(sys.executable).with_name("mona-tune"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(cmd, check=False, cwd=elsewhere, capture_output=True, text=True,
                          timeout=300, env=command_env())
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resuming" in done.stdout
    trials = ExperimentAnalysis(str(exp)).trials
    assert len(trials) == 2 and all(t.status == "TERMINATED" for t in trials), \
        [(t.trial_id, t.status) for t in trials]
    assert not (elsewhere / "mlflow.db").exists()  # the search's own store was used


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
