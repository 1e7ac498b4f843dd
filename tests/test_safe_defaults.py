"""Safe defaults: files that would run code when loaded are refused on every loading path; the
servers a search uses listen on 127.0.0.1 (the Ray dashboard asks for its token); no secret of the
environment or of a tracking URI reaches MLflow, the artifacts or the printed output.

(`mona-tune ui` binding 127.0.0.1 only is checked in test_signals.py, where it is started.)
"""

from __future__ import annotations

import os
import re
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

from mona_tune.cli import main
from mona_tune.search.driver import META_FILE


class RunsCode:
    """Unpickled with full pickle, this creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(path: Path, marker: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": RunsCode(marker)}, path)
    return path


LOADERS = {  # name -> (argv, text of the error line); {evil} is the planted file
    "--weights": (["train", "--source-model", "swin_tiny_patch4_window7_224", "--weights",
                   "{evil}"], "cannot read weights file"),
    "search --weights": (["search", "--source-model", "swin_tiny_patch4_window7_224",
                          "--weights", "{evil}", "--storage", "{tmp}/runs", "--tracking-uri",
                          "sqlite:///{tmp}/mlflow.db"], "cannot read weights file"),
    "train --resume (a trainer checkpoint)": (["train", "--out", "{tmp}/run", "--resume"],
                                              "cannot read checkpoint"),
    "--init-embedder": (["train", "--init-embedder", "{tmp}/embedder"],
                        "cannot read the embedder"),
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_pickle_that_runs_code_is_refused(loader, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "code-ran"
    evil = _evil(tmp_path / "evil.pt", marker)
    _evil(tmp_path / "run" / "checkpoint" / "trainer.pt", marker)
    _evil(tmp_path / "embedder" / "embedder.safetensors", marker)
    (tmp_path / "embedder" / "embedder.json").write_text("{}")
    argv, says = LOADERS[loader]
    code = main([a.format(evil=evil, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not marker.exists(), "the pickle ran code"


def test_trial_checkpoints_load_weights_only(tmp_path):
    """Trials restore through ``Trainer.from_checkpoint`` (search/trial.py)."""
    from mona_tune.errors import MonaError
    from mona_tune.train.trainer import CHECKPOINT_FILE, Trainer

    marker = tmp_path / "code-ran"
    _evil(tmp_path / "ckpt" / CHECKPOINT_FILE, marker)
    with pytest.raises(MonaError, match="cannot read checkpoint"):
        Trainer.from_checkpoint(tmp_path / "ckpt")
    assert not marker.exists()


# ---------------------------------------------------------------- a search on a tracking server
SPACE = """\
searched:
  lam: {uniform: [0.0, 1.0]}
fixed:
  warmup_epochs: 1
  epochs: 1
  batch_size: 16
  n_train: 40
  n_test: 8
  resolution: 29
  device: cpu
budget: {num_samples: 2, max_concurrent: 2}
scheduler: {kind: fifo}
"""
SECRETS = {"uri": "pw-in-the-uri-5f1e", "AWS_SECRET_ACCESS_KEY": "aws-key-9c3b",
           "MLFLOW_TRACKING_TOKEN": "mlflow-token-77d2", "HF_TOKEN": "hf-token-31aa",
           "RAY_AUTH_TOKEN_EXTRA": "not-used-4b0c"}


def _texts(folder: Path):
    for p in folder.rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            yield p, p.read_bytes().decode("utf-8", "replace")


@pytest.mark.slow
def test_search_on_a_tracking_server_binds_loopback_and_keeps_secrets(tmp_path):
    """`mona-tune tracking-server` listens on 127.0.0.1 only and stops whole on SIGTERM; a search
    with --dashboard started on it: the dashboard listens on 127.0.0.1 and answers 401 without
    the token; secrets planted in the environment and in the tracking URI's password appear in
    no run's params or tags, no artifact, no file of the search's folder but its settings file,
    and none of the printed output (the trials' included)."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    art = tmp_path / "mlartifacts"
    server = subprocess.Popen(
        [sys.executable, "-m", "mona_tune.cli", "tracking-server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(art),
         "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=command_env(), start_new_session=True)
    search = None
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200
                 or server.poll() is not None, 120, "the tracking server")
        assert server.poll() is None, server.stdout.read()[-2000:]
        server_pids = children(server.pid)
        sockets = listening([server.pid, *server_pids])
        assert ("127.0.0.1", port) in sockets and {ip for ip, _ in sockets} == {"127.0.0.1"}, \
            sockets

        (tmp_path / "space.yaml").write_text(SPACE)
        dash = free_port()
        secret_env = {k: v for k, v in SECRETS.items() if k != "uri"}
        log = tmp_path / "search.log"
        with open(log, "w") as out:
            search = subprocess.Popen(
                [sys.executable, "-m", "mona_tune.cli", "search", "--space",
                 str(tmp_path / "space.yaml"), "--name", "secrets", "--storage",
                 str(tmp_path / "runs"), "--tracking-uri",
                 f"http://mona:{SECRETS['uri']}@127.0.0.1:{port}", "--dashboard",
                 "--dashboard-port", str(dash), "--no-register"],
                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True,
                env=command_env(**secret_env))
        url = wait_for(lambda: re.search(r"Ray dashboard: (http://\S+)", log.read_text())
                       or search.poll() is not None, 180, "the dashboard line")
        assert search.poll() is None, log.read_text()[-3000:]
        dash_url = url.group(1)
        assert dash_url.startswith(f"http://127.0.0.1:{dash}")
        dash_sockets = [s for s in listening(children(search.pid)) if s[1] == dash]
        assert dash_sockets == [("127.0.0.1", dash)], dash_sockets
        assert http_status(dash_url.rstrip("/") + "/api/version") == 401  # token authentication
        search.wait(timeout=300)
        printed = log.read_text()
        assert search.returncode == 0, printed[-3000:]
    finally:
        if search is not None and search.poll() is None:
            search.kill()
            search.wait()
        t0 = time.time()
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=30)
        finally:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait()
    stop_s = time.time() - t0
    # SIGTERM stopped the server and its uvicorn workers: nothing left, the port free
    assert server.returncode == 0 and stop_s < 20
    assert [p for p in server_pids if alive(p)] == []
    assert port_free(port)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 3  # the search and its 2 trials
    seen = {"printed output": printed}
    for r in runs:
        seen[f"run {r.info.run_id}"] = repr(r.data.params) + repr(r.data.tags)
    for path, text in [*_texts(art), *_texts(tmp_path / "runs")]:
        if path.name != META_FILE:  # the search's settings keep the URI as given: --resume uses it
            seen[str(path)] = text
    for where, text in seen.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name}'s secret in {where}"
