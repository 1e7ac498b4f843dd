"""Bad input across every command and flag family: one table, one row per case.

Every row must end with exactly one line on stderr (``mona-tune: error: ...``) that contains the
row's text, exit status 2, no traceback, nothing written (the row's own folder, its working
directory and the target of every output flag, stays empty; the shared input files stay as they
were), within the row's time limit.

Rows marked ``PROC`` run as real ``mona-tune`` subprocesses, all launched at once from a thread
pool (each pays Python's and torch's imports): the cases where a process, a Ray cluster or a
network service is involved. The others call ``mona_tune.cli.main`` in this process.

Placeholders in a row's arguments: ``{in}`` the shared input folder (files made once, below),
``{row}`` the row's own empty folder (also its working directory), ``{closed}`` a TCP port nobody
listens on, ``{silent}`` a port that accepts connections and never answers.

A new case is one line in ``ROWS``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import darcy_arrays, write_mat_v5, write_pdebench
from proc_net import command_env, free_port

from mona_tune.cli import main
from mona_tune.tracking import server


@dataclass(frozen=True)
class Row:
    argv: str        # the command line after ``mona-tune``, split on spaces
    says: str        # a text the one stderr line must contain (what and where)
    proc: bool = False
    limit_s: float = 10.0


# a subprocess: Python's and Ray's imports included, on 2 shared cores
PROC = {"proc": True, "limit_s": 90.0}

TINY = "--config {in}/tiny.yaml"
SEARCH = "search --storage {row}/runs --tracking-uri sqlite:///{row}/mlflow.db"

ROWS: dict[str, Row] = {
    # ---- processes, a Ray cluster, network services (first: they run while the others wait)
    "search no ray there": Row(f"{SEARCH} --address 127.0.0.1:{{closed}}",
                               "no Ray cluster answers there", **PROC),
    "search silent ray address": Row(f"{SEARCH} --address 127.0.0.1:{{silent}}",
                                     "127.0.0.1:{silent}", **PROC),
    "search tracking unreachable": Row("search --storage {row}/runs --tracking-uri "
                                       "http://127.0.0.1:{closed}", "not reachable", **PROC),
    # ---- the top level
    "unknown command": Row("fly", "invalid choice: 'fly'"),
    # ---- data make: ranges, choices, an --out that is a file or cannot be made
    "make n-train 0": Row("data make darcy --out {row}/out --n-train 0", "--n-train"),
    "make n-test vs pdebench": Row("data make darcy --out {row}/out --format pdebench "
                                   "--n-train 90 --n-test 11", "--n-test"),
    "make resolution": Row("data make darcy --out {row}/out --resolution 2", "--resolution"),
    "make workers": Row("data make darcy --out {row}/out --workers 0", "--workers"),
    "make beta": Row("data make darcy --out {row}/out --format pdebench --beta -1", "--beta"),
    "make format": Row("data make darcy --out {row}/out --format netcdf", "--format"),
    "make unknown task": Row("data make navier-stokes --out {row}/out",
                             "invalid choice: 'navier-stokes'"),
    "make 1d parameter": Row("data make advection --out {row}/out --nu 1", "--nu does not apply"),
    "make out is a file": Row("data make darcy --out {in}/a-file --n-train 2 --n-test 1 "
                              "--resolution 9", "{in}/a-file"),
    "make out uncreatable": Row("data make darcy --out {in}/a-file/sub --n-train 2 --n-test 1 "
                                "--resolution 9", "{in}/a-file/sub"),
    # ---- data inspect (the file kinds: test_data_cli.py)
    "inspect missing": Row("data inspect {in}/missing.mat", "{in}/missing.mat"),
    "inspect corrupt hdf5": Row("data inspect {in}/corrupt-pde/2D_DarcyFlow_beta0.1_Train.hdf5",
                                "{in}/corrupt-pde/2D_DarcyFlow_beta0.1_Train.hdf5"),
    # ---- train: types, ranges, unknown names, consistency
    "train method": Row(f"train {TINY} --method bogus", "method"),
    "train lr": Row(f"train {TINY} --lr -1", "lr"),
    "train task": Row(f"train {TINY} --task nope", "unknown task 'nope'"),
    "train first-order": Row(f"train {TINY} --first-order --method emb",
                             "first_order applies only"),
    "train epochs type": Row(f"train {TINY} --epochs many", "invalid int value"),
    "train scale paper": Row(f"train --config {{in}}/paper.yaml --out {{row}}/run --tracking-uri "
                             "sqlite:///{row}/mlflow.db", "train --task darcy declares scale: "
                             "paper, but this run would train on generated data (no --data-dir "
                             "DIR), the embedded 0.3 M-parameter Swin (no --source-model NAME), "
                             "the embedded digits (no --source-data cifar10:DIR or text:FILE)"),
    "train scale paper fractals": Row(f"train {TINY} --scale paper --data-dir {{in}} "
                                      "--source-model swin_tiny_patch4_window7_224 --source-data "
                                      "fractals --out {row}/run", "would train on the embedded "
                                      "fractals (--source-data fractals, not cifar10:DIR"),
    "train config missing": Row("train --config {in}/missing.yaml", "not found"),
    "train config bad yaml": Row("train --config {in}/bad-yaml.yaml", "not valid YAML"),
    "train config unknown field": Row("train --config {in}/lamda.yaml", "lamda"),
    "train beta": Row(f"train {TINY} --beta 0", "beta: Input should be greater than 0"),
    "train resolution": Row(f"train {TINY} --resolution 1",
                            "resolution: Input should be greater than or equal to 2"),
    "train resolution type": Row(f"train {TINY} --resolution 64.5", "invalid int value"),
    "train val-fraction": Row(f"train {TINY} --val-fraction 1",
                              "val_fraction: Input should be less than 1"),
    "train n-train": Row(f"train {TINY} --n-train 0",
                         "n_train: Input should be greater than or equal to 1"),
    "train n-test": Row(f"train {TINY} --n-test 0", "n_test"),
    "train weight-decay": Row(f"train {TINY} --weight-decay -0.1", "weight_decay"),
    "train lr-warmup": Row(f"train {TINY} --lr-warmup-epochs -1", "lr_warmup_epochs"),
    "train grad-clip": Row(f"train {TINY} --grad-clip 0", "grad_clip"),
    "train grad-clip type": Row(f"train {TINY} --grad-clip off", "expected a number or 'none'"),
    "train probe-samples": Row(f"train {TINY} --probe-samples 4", "probe_samples"),
    "train resume without out": Row(f"train {TINY} --resume", "--resume needs --out"),
    # ---- train: data files
    "train data-dir missing": Row(f"train {TINY} --data-dir {{in}}/missing", "{in}/missing"),
    "train data-dir corrupt mat": Row(f"train {TINY} --data-dir {{in}}/corrupt-fno",
                                      "{in}/corrupt-fno"),
    "train data-dir wrong shape": Row(f"train {TINY} --data-dir {{in}}/misshapen-fno",
                                      "{in}/misshapen-fno"),
    "train data-dir corrupt hdf5": Row(f"train {TINY} --task pdebench-darcy "
                                       "--data-dir {in}/corrupt-pde", "{in}/corrupt-pde"),
    # ---- train: weights that are no checkpoint or do not fit, embedders, checkpoints, --out
    "train weights without model": Row(f"train {TINY} --weights {{in}}/misfit.pt",
                                       "weights needs source_model"),
    "train weights misfit": Row(f"train {TINY} --source-model swin_tiny_patch4_window7_224 "
                                "--weights {in}/misfit.pt",
                                "does not fit swin_tiny_patch4_window7_224 (timm layout)",
                                limit_s=60),
    "train weights not a checkpoint": Row(f"train {TINY} --source-model "
                                          "swin_tiny_patch4_window7_224 --weights {in}/garbage.pt",
                                          "cannot read weights file {in}/garbage.pt"),
    "train weights missing": Row(f"train {TINY} --source-model swin_tiny_patch4_window7_224 "
                                 "--weights {in}/nothing.pt", "{in}/nothing.pt"),
    "train init-embedder missing": Row(f"train {TINY} --init-embedder {{in}}/none",
                                       "not an exported embedder"),
    "train init-embedder corrupt": Row(f"train {TINY} --init-embedder {{in}}/corrupt-embedder",
                                       "{in}/corrupt-embedder"),
    "train resume corrupt checkpoint": Row(f"train {TINY} --out {{in}}/corrupt-run --resume",
                                           "{in}/corrupt-run/checkpoint/trainer.pt"),
    "train out uncreatable": Row(f"train {TINY} --out {{in}}/a-file/sub", "{in}/a-file/sub"),
    # ---- compare
    "compare methods": Row("compare --methods ft,nope --out {row}/cmp", "nope"),
    "compare seeds": Row("compare --seeds 0 --out {row}/cmp", "--seeds"),
    "compare config missing": Row("compare --config {in}/missing.yaml --out {row}/cmp",
                                  "{in}/missing.yaml"),
    "compare epochs": Row("compare --epochs 0 --out {row}/cmp", "epochs"),
    "compare out uncreatable": Row("compare --methods ft --seeds 1 --out {in}/a-file/sub",
                                   "{in}/a-file/sub"),
    # ---- search: flags, before Ray starts
    "search task": Row(f"{SEARCH} --task nosuchtask", "unknown task 'nosuchtask'"),
    "search paper space on the toy": Row(f"{SEARCH} --space darcy-paper --source-model "
                                         "swin_tiny_patch4_window7_224", "space darcy-paper.yaml "
                                         "declares scale: paper, but this run would train on "
                                         "generated data (no --data-dir DIR), the embedded digits"),
    "search sampler": Row(f"{SEARCH} --search grid", "invalid choice: 'grid'"),
    "search num-samples": Row(f"{SEARCH} --num-samples 0", "--num-samples 0"),
    "search num-samples type": Row(f"{SEARCH} --num-samples two", "invalid int value"),
    "search cpus": Row(f"{SEARCH} --cpus-per-trial 0", "--cpus-per-trial"),
    "search gpus": Row(f"{SEARCH} --gpus-per-trial -1", "--gpus-per-trial"),
    "search reduction factor": Row(f"{SEARCH} --reduction-factor 1", "--reduction-factor 1"),
    "search grace above max-t": Row(f"{SEARCH} --grace-period 5 --max-t 2", "--grace-period 5"),
    "search set unknown": Row(f"{SEARCH} --set epochz=3", "epochz is not a TrainConfig field"),
    "search set range": Row(f"{SEARCH} --set epochs=0", "epochs"),
    "search name": Row(f"{SEARCH} --name a/b", "--name"),
    "search resume without name": Row(f"{SEARCH} --resume", "--resume needs --name"),
    "search resume unknown": Row(f"{SEARCH} --resume --name nothing-here",
                                 "no search 'nothing-here'"),
    "search method": Row(f"{SEARCH} --set method=magic", "method"),
    "search data-dir missing": Row(f"{SEARCH} --data-dir {{in}}/missing", "{in}/missing"),
    "search dashboard port": Row(f"{SEARCH} --dashboard --dashboard-port 70000",
                                 "--dashboard-port"),
    "search weights not a checkpoint": Row(f"{SEARCH} --source-model swin_tiny_patch4_window7_224"
                                           " --weights {in}/garbage.pt",
                                           "cannot read weights file {in}/garbage.pt"),
    # ---- search: space files
    "space missing": Row(f"{SEARCH} --space {{in}}/nothing.yaml", "{in}/nothing.yaml"),
    "space bad yaml": Row(f"{SEARCH} --space {{in}}/space-bad-yaml.yaml", "not valid YAML"),
    "space unknown field": Row(f"{SEARCH} --space {{in}}/space-unknown-field.yaml",
                               "fixed.epoch"),
    "space unknown distribution": Row(f"{SEARCH} --space {{in}}/space-bad-dist.yaml",
                                      "searched.lam"),
    "space low >= high": Row(f"{SEARCH} --space {{in}}/space-low-high.yaml", "searched.lam"),
    # ---- search: the tracking store, the storage
    "search tracking silent": Row("search --storage {row}/runs --tracking-uri "
                                  "http://127.0.0.1:{silent}", "no answer within"),
    "search tracking driver": Row("search --storage {row}/runs --tracking-uri "
                                  "mysql://u:pw@127.0.0.1:{closed}/db", "pip install"),
    "search tracking folder": Row("search --storage {row}/runs --tracking-uri "
                                  "sqlite:///{in}/a-file/mlflow.db", "{in}/a-file"),
    "search storage uncreatable": Row("search --storage {in}/a-file/runs --tracking-uri "
                                      "sqlite:///{row}/mlflow.db", "{in}/a-file/runs"),
    # ---- best
    "best no store": Row("best --tracking-uri sqlite:///{row}/none.db", "no MLflow store"),
    "best top": Row("best --top 0 --tracking-uri sqlite:///{row}/none.db", "--top"),
    "best tracking unreachable": Row("best --tracking-uri http://127.0.0.1:{closed}",
                                     "not reachable"),
    # ---- ui and tracking-server
    "ui port": Row("ui --port 70000 --tracking-uri sqlite:///{in}/empty.db", "not a TCP port"),
    "ui port type": Row("ui --port web", "invalid int value"),
    "ui no store": Row("ui --tracking-uri sqlite:///{row}/none.db", "no MLflow store"),
    "ui server uri": Row("ui --tracking-uri http://127.0.0.1:{closed}", "a tracking server"),
    "server port": Row("tracking-server --port 70000 --backend-store-uri "
                       "sqlite:///{row}/mlflow.db", "not a TCP port"),
    "server backend is a server": Row("tracking-server --backend-store-uri "
                                      "http://127.0.0.1:5000", "a tracking server already"),
    "server no folder": Row("tracking-server --backend-store-uri "
                            "sqlite:///{in}/no/such/folder/mlflow.db", "no folder"),
    "server workers": Row("tracking-server --workers 0 --backend-store-uri "
                          "sqlite:///{row}/mlflow.db", "at least 1"),
    "server database unreachable": Row("tracking-server --backend-store-uri "
                                       "postgresql://postgres@127.0.0.1:{closed}/mlflow",
                                       "database not reachable"),
    "server database driver": Row("tracking-server --backend-store-uri "
                                  "mysql://u:pw@127.0.0.1:{closed}/db", "database driver"),
    "server artifacts uncreatable": Row("tracking-server --backend-store-uri "
                                        "sqlite:///{row}/mlflow.db --artifacts-destination "
                                        "{in}/a-file/art", "{in}/a-file/art"),
}


# ---------------------------------------------------------------- the shared inputs
def _make_inputs(d: Path) -> None:
    import torch

    (d / "a-file").write_text("x")
    (d / "empty.db").write_bytes(b"")
    (d / "tiny.yaml").write_text("n_train: 24\nn_test: 8\nbatch_size: 8\nsource_batch_size: 8\n"
                                 "probe_samples: 40\nnum_threads: 1\ndevice: cpu\nepochs: 3\n")
    (d / "paper.yaml").write_text((d / "tiny.yaml").read_text() + "scale: paper\n")
    (d / "bad-yaml.yaml").write_text("lam: [unclosed\n")
    (d / "lamda.yaml").write_text("lamda: 0.5\n")
    (d / "space-bad-yaml.yaml").write_text("searched:\n  lam: {uniform: [0, 1]\n")
    (d / "space-unknown-field.yaml").write_text("fixed:\n  epoch: 3\n")
    (d / "space-bad-dist.yaml").write_text("searched:\n  lam: {gaussian: [0, 1]}\n")
    (d / "space-low-high.yaml").write_text("searched:\n  lam: {uniform: [1, 0]}\n")
    (d / "garbage.pt").write_bytes(b"not a checkpoint " * 64)
    torch.save({"patch_embed.proj.weight": torch.zeros(2, 3, 4, 4)}, d / "misfit.pt")
    a, u = darcy_arrays(12, 85)
    (d / "corrupt-fno").mkdir()
    (d / "corrupt-fno" / "piececonst_r85_N8_smooth1.mat").write_bytes(b"garbage " * 100)
    (d / "corrupt-fno" / "piececonst_r85_N4_smooth2.mat").write_bytes(b"garbage " * 100)
    (d / "misshapen-fno").mkdir()
    write_mat_v5(d / "misshapen-fno" / "piececonst_r85_N8_smooth1.mat",
                 {"coeff": a[:8, :, :4], "sol": u[:8, :, :4]})
    write_mat_v5(d / "misshapen-fno" / "piececonst_r85_N4_smooth2.mat",
                 {"coeff": a[8:, :, :4], "sol": u[8:, :, :4]})
    (d / "corrupt-pde").mkdir()
    good = write_pdebench(d / "corrupt-pde" / "2D_DarcyFlow_beta0.1_Train.hdf5",
                          np.where(a > 5, 1.0, 0.1), u)
    good.write_bytes(good.read_bytes()[:1500])
    (d / "corrupt-embedder").mkdir()
    (d / "corrupt-embedder" / "embedder.json").write_text("{}")
    (d / "corrupt-embedder" / "embedder.safetensors").write_bytes(b"\x00" * 40)
    (d / "corrupt-run" / "checkpoint").mkdir(parents=True)
    (d / "corrupt-run" / "checkpoint" / "trainer.pt").write_bytes(b"\x80\x04garbage")


def _snapshot(d: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The shared input folder and the ports; a listener that accepts and never answers."""
    inputs = tmp_path_factory.mktemp("inputs")
    _make_inputs(inputs)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    ports = {"closed": str(free_port()), "silent": str(silent.getsockname()[1])}
    try:
        yield inputs, ports, tmp_path_factory.mktemp("rows"), _snapshot(inputs)
    finally:
        silent.close()


def _argv(row: Row, inputs: Path, row_dir: Path, ports: dict) -> list[str]:
    return [_fill(a, inputs, row_dir, ports) for a in row.argv.split()]


def _fill(text: str, inputs: Path, row_dir: Path, ports: dict) -> str:
    return text.format(**{"in": str(inputs), "row": str(row_dir), **ports})


def _row_dir(base: Path, name: str) -> Path:
    d = base / name.replace(" ", "_").replace("/", "_")
    d.mkdir()
    return d


def _run_process(argv: list[str], cwd: Path, limit: float) -> tuple[int, str, str, float]:
    env = command_env()
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, "-m", "mona_tune.cli", *argv], check=False, cwd=cwd,
                           env=env, capture_output=True, text=True, timeout=limit + 30)
        return p.returncode, p.stdout, p.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        return -9, str(e.stdout or ""), str(e.stderr or ""), time.time() - t0


@pytest.fixture(scope="module")
def processes(places):
    """Every PROC row launched at once; name -> future of (rc, out, err, seconds, row folder)."""
    inputs, ports, base, _ = places
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {}
    for name, row in ROWS.items():
        if row.proc:
            d = _row_dir(base, name)
            futures[name] = (pool.submit(_run_process, _argv(row, inputs, d, ports), d,
                                         row.limit_s), d)
    yield futures
    pool.shutdown(wait=True)


def _no_server(cmd, env):
    raise AssertionError(f"passed every check and started {' '.join(cmd[:4])}")


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input(name, places, processes, capsys, monkeypatch, request):
    row = ROWS[name]
    inputs, ports, base, before = places
    if row.proc:
        future, row_dir = processes[name]
        code, out, err, seconds = future.result()
    else:
        request.getfixturevalue("fast_source")  # a source model, should a row reach one
        row_dir = _row_dir(base, name)
        monkeypatch.chdir(row_dir)
        for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(server, "run_process_group", _no_server)
        t0 = time.time()
        code = main(_argv(row, inputs, row_dir, ports))
        seconds = time.time() - t0
        out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    says = _fill(row.says, inputs, row_dir, ports)
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err[-3000:]}\nstdout:\n" \
                                          f"{out[-1500:]}"
    assert lines[0].startswith("mona-tune: error: ") and says in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert seconds < row.limit_s, f"{seconds:.1f} s"
    assert list(row_dir.iterdir()) == [], "written: " + ", ".join(map(str, row_dir.iterdir()))
    assert _snapshot(inputs) == before
