"""``sbatch cluster/slurm-ray.sbatch`` on a real Slurm controller (``slurm_cluster.py``: munged,
slurmctld and slurmd of this test module's own), run as users run it: the Ray head in the batch
step, the search as a job step against the tracking server the job starts, every trial tracked in
MLflow and the best embedder registered; a job stopped by ``scancel --signal=TERM`` and one stopped
by its time limit's ``--signal`` stop cleanly and continue (resubmitted, or requeued); two jobs on
one node at once keep to their own Ray clusters.

A machine that cannot run the private cluster fails here in one line: no skip.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
from proc_net import port_free
from tracked import search_runs, tracked_once

from mona_tune.tracking import mlflow_runs as mr

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "cluster" / "slurm-ray.sbatch"
SPACE = """\
searched:
  lam: {uniform: [0.0, 1.0]}
fixed: {warmup_epochs: 1, epochs: 3, batch_size: 16, n_train: 40, n_test: 16, resolution: 29,
        device: cpu}
budget: {num_samples: 2, max_concurrent: 2}
scheduler: {kind: fifo}
"""
# one node, 2 of its 8 CPUs and 1 of its 2 GPUs: two such jobs run at once
JOB = ["--nodes=1", "--cpus-per-task=2", "--gpus-per-node=1"]


@pytest.fixture(scope="module")
def slurm():
    try:
        cluster = slurm_cluster.start_slurm()
    except slurm_cluster.SlurmRefused as e:
        pytest.fail(f"no private Slurm cluster here: {e}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def job_env(mona_cache, tmp_path):
    """The environment of a user's job: the project's venv (MONA_VENV), the session's cache (the
    source model trained once), a token of its own, a search of two tiny trials."""
    (tmp_path / "space.yaml").write_text(SPACE)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "AWS_", "MLFLOW_", "MONA_TUNE_", "SLURM_"))}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), MONA_VENV=sys.prefix, MONA_TUNE_CACHE=str(mona_cache),
               RAY_AUTH_TOKEN=os.urandom(16).hex(), RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1", TUNE_GLOBAL_CHECKPOINT_S="1",
               SEARCH_ARGS=f"--task darcy --space {tmp_path / 'space.yaml'} --cpus-per-trial 1 "
                           "--seed 3")
    return env


def _folder(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def _log(folder: Path, job: int) -> str:
    path = folder / f"slurm-{job}.out"
    return path.read_text(errors="replace") if path.exists() else ""


def _ended(slurm, job: int, folder: Path, timeout: float = 600) -> dict:
    try:
        return slurm.wait_state(job, slurm_cluster.ENDED, timeout)
    except TimeoutError as e:
        pytest.fail(f"{e}\n{_log(folder, job)[-4000:]}\n" + "\n".join(slurm.daemon_lines(job)))


def _check_tracked(folder: Path, search: str, n_trials: int = 2) -> dict[str, object]:
    """Every trial tracked exactly once and completed, the best embedder registered; the runs by
    trial id."""
    store = f"sqlite:///{folder / 'mlflow.db'}"
    runs = tracked_once(store, search, n_trials)
    best = mr.get_client(store).get_model_version_by_alias("mona-darcy-embedder", "best")
    assert best.run_id in {run.info.run_id for run in runs.values()}
    assert best.tags["search"] == search
    return runs


def _check_ray_gone(slurm, job: int, log: str) -> None:
    """The job's Ray is stopped: its temp folder removed, no process of it left, its ports free."""
    assert not Path(f"/tmp/ray-{job}").exists()
    left = [pid for pid in slurm.job_processes()
            if f"ray-{job}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert not left, f"processes of job {job} left: {left}"
    base = int(re.search(r"ports (\d+)-\d+", log).group(1))
    assert port_free(base), f"something still listens on job {job}'s GCS port {base}"


def test_two_jobs_on_one_node_each_run_their_search(slurm, job_env, tmp_path):
    """Two jobs at once on the one node: each starts its Ray head and tracking server on ports of
    its own, runs its search to the end (exit status 0, every trial tracked once, the best
    embedder registered) on its own cluster: no trial of either ran on the other's node."""
    folders = [_folder(tmp_path, "a"), _folder(tmp_path, "b")]
    jobs = [slurm.sbatch(SBATCH, *JOB, "--time=20", env={**job_env, "SEARCH_NAME": f"job-{i}"},
                         cwd=folder) for i, folder in enumerate(folders)]
    infos = [_ended(slurm, job, folder) for job, folder in zip(jobs, folders)]
    logs = [_log(folder, job) for job, folder in zip(jobs, folders)]
    for info, log in zip(infos, logs):
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log[-4000:]
        # a readable job log: what happened, in order, and no traceback
        for line in ("Ray cluster ready: 1 of 1 nodes alive, 2 CPUs and 1 GPUs each",
                     "tracking server at http://", "search job-", "the search ended (exit status 0)",
                     "Ray stopped"):
            assert line in log, (line, log[-4000:])
        assert "Traceback" not in log, log[-4000:]
    # both ran at once
    starts = [time.mktime(time.strptime(i["StartTime"], "%Y-%m-%dT%H:%M:%S")) for i in infos]
    ends = [time.mktime(time.strptime(i["EndTime"], "%Y-%m-%dT%H:%M:%S")) for i in infos]
    assert max(starts) < min(ends), "the two jobs did not overlap"
    blocks = [re.search(r"ports (\d+)-(\d+)", log).groups() for log in logs]
    assert blocks[0] != blocks[1], blocks
    nodes = []
    for i, folder in enumerate(folders):
        runs = _check_tracked(folder, f"job-{i}")
        nodes.append({r.data.tags["mona.node_id"] for r in runs.values()})
    assert len(nodes[0]) == len(nodes[1]) == 1 and not nodes[0] & nodes[1], nodes
    for job, log in zip(jobs, logs):
        _check_ray_gone(slurm, job, log)


def _pause_second_epoch(job_env: dict, tmp_path: Path) -> tuple[dict, Path]:
    """The first trial to reach stage-2 epoch 2 (its epoch-1 checkpoint written) waits there, so
    the stop always falls mid-search; the other trial completes meanwhile."""
    faults = tmp_path / "faults.json"
    paused = tmp_path / "paused"
    faults.write_text(json.dumps([{"at": [2, 2], "kind": "pause", "until": str(tmp_path / "go"),
                                   "once": str(paused)}]))
    return {**job_env, "MONA_TUNE_FAULT": str(faults)}, paused


def _tracking_url(log: str) -> str | None:
    m = re.search(r"tracking server at (http://\S+)", log)
    return m.group(1) if m else None


def _wait_mid_search(slurm, job: int, folder: Path, search: str, paused: Path) -> None:
    """Until one trial waits at its second epoch and the other has completed."""
    deadline = time.time() + 420
    while time.time() < deadline:
        assert slurm.job(job)["JobState"] in {"PENDING", "RUNNING"}, _log(folder, job)[-4000:]
        url = _tracking_url(_log(folder, job))
        if paused.exists() and url:
            try:
                trials = search_runs(url, search)[1]
            except Exception:  # the server is busy starting
                trials = {}
            if any(r.data.tags.get("mona.outcome") == "completed"
                   for runs in trials.values() for r in runs):
                return
        time.sleep(2)
    pytest.fail("no trial completed while the other waited:\n" + _log(folder, job)[-4000:])


def _seconds(run_time: str) -> int:
    """Slurm's [D-]HH:MM:SS in seconds."""
    days, _, hms = run_time.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def _check_stopped(slurm, job: int, info: dict, log: str) -> None:
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "143:0", (info, log[-4000:])
    assert "the search stopped" in log and "Ray stopped" in log, log[-4000:]
    assert "its state is saved" in log, log[-4000:]
    _check_ray_gone(slurm, job, log)


def _check_continued(folder: Path, search: str) -> None:
    runs = _check_tracked(folder, search)
    assert any(r.data.tags.get("mona.restored_from_global_epoch") for r in runs.values()), \
        "the stopped trial did not continue from its checkpoint"


def test_scancel_term_stops_cleanly_and_a_resubmitted_job_continues(slurm, job_env, tmp_path):
    """``scancel --signal=TERM`` mid-search: the search saves its state, Ray stops, the job ends
    with 143 and says how to continue; the same job submitted again with the search's name
    continues it: the completed trial is not run again, the stopped one goes on from its
    checkpoint, each tracked once."""
    env, paused = _pause_second_epoch(job_env, tmp_path)
    folder = _folder(tmp_path, "job")
    env["SEARCH_NAME"] = "preempted"
    first = slurm.sbatch(SBATCH, *JOB, "--time=20", env=env, cwd=folder)
    _wait_mid_search(slurm, first, folder, "preempted", paused)
    slurm.run("scancel", "--signal=TERM", str(first))
    info = _ended(slurm, first, folder, timeout=180)
    log = _log(folder, first)
    _check_stopped(slurm, first, info, log)
    assert "continue with: sbatch --export=ALL,SEARCH_NAME=preempted" in log
    (tmp_path / "go").touch()

    second = slurm.sbatch(SBATCH, *JOB, "--time=20", env=env, cwd=folder)
    info = _ended(slurm, second, folder)
    log = _log(folder, second)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log[-4000:]
    assert "continuing search preempted" in log and "resuming" in log, log[-4000:]
    _check_continued(folder, "preempted")


def test_time_limit_signal_requeues_the_job_and_it_continues(slurm, job_env, tmp_path):
    """The time limit's ``--signal=B:TERM@120`` (the limit shortened mid-search, so that the
    signal falls there): the batch script stops the search cleanly and, with REQUEUE=1, puts the
    job back in the queue before the limit; run again (same job id), it continues the search to
    the end."""
    env, paused = _pause_second_epoch(job_env, tmp_path)
    folder = _folder(tmp_path, "job")
    env.update(SEARCH_NAME="timed", REQUEUE="1")
    job = slurm.sbatch(SBATCH, *JOB, "--time=20", "--signal=B:TERM@120", env=env, cwd=folder)
    _wait_mid_search(slurm, job, folder, "timed", paused)
    # the limit 130-190 s from now: Slurm's timer (every 30 s) sends the signal 120 s before it
    minutes = math.ceil((_seconds(slurm.job(job)["RunTime"]) + 130) / 60)
    slurm.run("scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}")
    info = slurm.wait_state(job, {"PENDING", *slurm_cluster.ENDED}, 300)
    assert info["JobState"] == "PENDING" and info["Restarts"] == "1", (info, _log(folder, job))
    log = _log(folder, job)
    assert "SIGTERM: stopping the search" in log and "requeueing job" in log, log[-4000:]
    assert "its state is saved" in log and "Ray stopped" in log, log[-4000:]
    (tmp_path / "go").touch()
    # time to finish when it runs again (Slurm holds a requeued job for the credential lifetime,
    # CRED_EXPIRE_S here)
    slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=20")
    info = _ended(slurm, job, folder)
    log = _log(folder, job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), \
        log[-4000:] + "\n".join(slurm.daemon_lines(job))
    assert "continuing search timed" in log, log[-4000:]
    _check_continued(folder, "timed")
    _check_ray_gone(slurm, job, log)


def test_the_job_log_names_a_missing_venv_in_one_line(slurm, job_env, tmp_path):
    """A job on a node without the environment fails at once, saying where it looked."""
    folder = _folder(tmp_path, "job")
    job = slurm.sbatch(SBATCH, *JOB, env={**job_env, "MONA_VENV": str(tmp_path / "nowhere")},
                       cwd=folder)
    info = _ended(slurm, job, folder, timeout=60)
    log = _log(folder, job)
    assert info["JobState"] == "FAILED", info
    assert log.strip() == f"error: no virtual environment at {tmp_path / 'nowhere'} (set MONA_VENV)"


def test_private_cluster_is_its_own(slurm):
    """The fixture's cluster: one idle node with the declared CPUs and GPUs, reached through its
    own configuration only."""
    out = slurm.run("sinfo", "-h", "-N", "-o", "%N %c %G")
    assert out.split() == [slurm.node, str(slurm_cluster.CPUS), f"gpu:{slurm_cluster.GPUS}"]
    text = slurm.conf.read_text()
    assert f"StateSaveLocation={slurm.folder}/state" in text


def test_a_machine_without_slurm_fails_in_one_line(monkeypatch, tmp_path):
    """The fixture's refusal: one line saying what is missing and how to install it."""
    monkeypatch.setattr(slurm_cluster, "SBIN", tmp_path)
    with pytest.raises(slurm_cluster.SlurmRefused) as refused:
        slurm_cluster.start_slurm()
    line = str(refused.value)
    assert "\n" not in line
    assert line == ("Slurm is not installed (munged, slurmctld, slurmd missing): apt-get install "
                    "slurm-wlm munge (.ci/run does)")
