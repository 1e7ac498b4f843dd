"""A private Slurm cluster of one node on this machine, for the Slurm system tests.

Debian's ``slurm-wlm`` (22.05) and ``munge``, as a site runs them, but every part of its own:
``munged`` on its own socket and key, ``slurmctld`` and ``slurmd`` on free ports with their state,
spool, logs and configuration in one temporary folder. Clients find it through ``$SLURM_CONF``.
The node declares 8 CPUs (``SlurmdParameters=config_overrides``: two jobs fit at once on a small
machine) and 2 GPUs whose device files are plain files: Slurm allocates them and sets
``SLURM_GPUS_ON_NODE``, which is what the recipe reads (no CUDA device is used).

Every daemon is started here in a session of its own and stopped by its process id. The jobs'
processes are started by ``slurmd`` in sessions of their own: at the end every job is cancelled,
and what is left of them (processes whose environment names this cluster's ``SLURM_CONF``) is
killed, nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import services

SBIN = Path("/usr/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "scancel", "squeue", "sinfo", "srun")
GPUS = 2
CPUS = 8
# how long a job's credential lives, and so how long Slurm holds a requeued job before it may
# start again (default 120 s; a requeued job started sooner is killed, its credential revoked)
CRED_EXPIRE_S = 30
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE"}


class SlurmRefused(RuntimeError):
    """This machine cannot run the private cluster (one line: what and why)."""


@dataclass
class SlurmCluster:
    folder: Path
    conf: Path
    node: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def env(self, base: dict | None = None, **extra: str) -> dict:
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf), **extra}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, script: Path, *flags: str, env: dict, cwd: Path) -> int:
        """Submits ``script`` from ``cwd`` with the environment ``env`` (``--export=ALL``: the
        job sees it); the job's id."""
        done = subprocess.run(["sbatch", "--parsable", "--export=ALL", *flags, str(script)],
                              env=self.env(env), cwd=cwd, capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode:
            raise RuntimeError(f"sbatch {script.name}: {done.stderr.strip()}")
        return int(done.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, ExitCode, Restarts, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id))
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_state(self, job_id: int, states: set[str], timeout: float) -> dict[str, str]:
        deadline = time.time() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id} is {info.get('JobState')}, not in {states}, "
                                   f"after {timeout:g} s")
            time.sleep(1)

    def daemon_lines(self, job_id: int) -> list[str]:
        """What slurmctld and slurmd logged of the job (for failure messages)."""
        pattern = re.compile(rf"(JobId={job_id}\b|job {job_id}\b|\[{job_id}\.)")
        lines = []
        for name in ("slurmctld", "slurmd"):
            log = self.folder / f"{name}.log"
            if log.exists():
                lines += [f"{name}: {ln}" for ln in log.read_text(errors="replace").splitlines()
                          if pattern.search(ln)]
        return lines

    def stop(self) -> None:
        try:
            self.run("scancel", "--full", "--signal=KILL", "--user", "root", check=False)
            self.run("scancel", "--user", "root", check=False)
            deadline = time.time() + 60
            while time.time() < deadline and self.run("squeue", "-h", check=False).strip():
                time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass
        for pid in self.job_processes():  # steps whose slurmstepd went first
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in reversed(self.procs):
            services.stop_session(proc)
        shutil.rmtree(self.folder, ignore_errors=True)

    def job_processes(self) -> list[int]:
        """The live processes started under this cluster (their environment names its conf)."""
        mark = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


def _config(folder: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=mona{ctld_port}
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/socket,cred_expire={CRED_EXPIRE_S}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=30
MinJobAge=600
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=4000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def start_slurm() -> SlurmCluster:
    """munged, slurmctld and slurmd, each started here; the cluster once its node is idle.
    :class:`SlurmRefused` (one line) when this machine lacks Slurm or refuses a daemon."""
    missing = [n for n in DAEMONS if not (SBIN / n).exists()] + \
        [n for n in CLIENTS if shutil.which(n) is None]
    if missing:
        raise SlurmRefused(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install "
                           "slurm-wlm munge (.ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="mona-slurm-"))
    folder.chmod(0o755)
    node = socket.gethostname().split(".")[0]
    for d in ("state", "spool", "munge", "key"):
        (folder / d).mkdir()
    (folder / "munge").chmod(0o755)
    (folder / "key").chmod(0o700)
    key = folder / "key" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for i in range(GPUS):
        (folder / f"gpu{i}").touch()
    (folder / "gres.conf").write_text(f"NodeName={node} Name=gpu File={folder}/gpu[0-{GPUS - 1}]\n")
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, node, services.free_port(), services.free_port()))
    cluster = SlurmCluster(folder, conf, node)
    # the daemons read their configuration from -f; only the jobs' processes carry SLURM_CONF
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    steps = (
        ("munged", [str(SBIN / "munged"), "--foreground", "--force",
                    f"--socket={folder}/munge/socket", f"--key-file={key}",
                    f"--pid-file={folder}/munge/pid", f"--log-file={folder}/munged.log",
                    f"--seed-file={folder}/munge/seed"], lambda: (folder / "munge/socket").exists()),
        ("slurmctld", [str(SBIN / "slurmctld"), "-D", "-c", "-f", str(conf)],
         lambda: cluster.run("scontrol", "ping", check=False).count("UP") >= 1),
        ("slurmd", [str(SBIN / "slurmd"), "-D", "-f", str(conf), "-N", node],
         lambda: cluster.run("sinfo", "-h", "-o", "%T", check=False).strip() == "idle"),
    )
    try:
        for name, cmd, ready in steps:
            log = folder / f"{name}.out"
            proc = services.start(cmd, log, env=env)
            cluster.procs.append(proc)
            try:
                services.wait_for(ready, 30, name, proc, log)
            except RuntimeError as e:
                detail = " ".join(_last_error(folder, name) or str(e).split("\n")[:1])
                raise SlurmRefused(f"{name} did not start: {detail}") from None
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _last_error(folder: Path, name: str) -> list[str]:
    """The last error line of a daemon's logs, if any."""
    lines: list[str] = []
    for log in (folder / f"{name}.log", folder / f"{name}.out"):
        if log.exists():
            lines += [ln for ln in log.read_text(errors="replace").splitlines()
                      if "error" in ln.lower()]
    return lines[-1:]
