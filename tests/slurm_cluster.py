"""A throwaway one-node SLURM cluster on this machine, for the tests and bench/slurm_latency.py.

Debian's `slurm-wlm` and `munge` (installed by .ci/run) bring the daemons; nothing starts them
(no systemd), so this module writes a config of its own (localhost only, the host's short name as
controller and node), a fresh state and spool directory each time (job state survives restarts
in the state directory), starts munged (as the munge user), slurmctld and slurmd, waits until the
node is idle, and stops them afterwards. No slurmdbd: the launcher does not need accounting
(sweeper/slurm.py reads squeue, and each worker's own record once SLURM has forgotten it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun")


def missing() -> str | None:
    """Why no cluster can be started here (absent binaries, not root), or None."""
    absent = [name for name in (*DAEMONS, *CLIENTS)
              if not shutil.which(name) and not Path("/usr/sbin", name).exists()]
    if absent:
        return f"no SLURM here ({', '.join(absent)} missing); .ci/run installs Debian's slurm-wlm and munge"
    if os.geteuid() != 0:
        return "the one-node SLURM cluster runs its daemons as root (SlurmUser=root); not root here"
    return None


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class Cluster:
    root: Path
    conf: Path
    node: str

    @property
    def env(self) -> dict[str, str]:
        """The environment the client commands (and submitit) need to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def squeue(self) -> str:
        return subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %R"], capture_output=True, text=True,
                              env={**os.environ, **self.env}, check=False).stdout


CONFIG = """\
ClusterName=sweeptest
SlurmctldHost={node}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=defer_batch=0,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=300
KillWait=30
InactiveLimit=0
NodeName={node} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def one_node_cluster(cpus: int | None = None) -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd on this host with a config of their own; stop them after."""
    if why := missing():
        raise RuntimeError(why)
    node = socket.gethostname().split(".")[0]
    root = Path(tempfile.mkdtemp(prefix="sweep-slurm-"))
    root.chmod(0o755)  # munged runs as the munge user
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir()
    cpus = cpus or os.cpu_count() or 1
    memory = min(20000, int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8))
    conf = root / "slurm.conf"
    conf.write_text(CONFIG.format(node=node, root=root, cpus=cpus, memory=memory, ctld_port=_free_port(),
                                  d_port=_free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: list[tuple[str, Path]] = []
    try:
        # munged: a key and a socket of our own, run as the munge user (it refuses root's files).
        key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        shutil.chown(root / "munge", "munge", "munge")
        shutil.chown(key, "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", _bin("munged"), f"--key-file={key}", f"--socket={sock}",
                        f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'munge' / 'munged.log'}",
                        f"--seed-file={root / 'munge' / 'munged.seed'}", "--force"],
                       check=True, capture_output=True, text=True, timeout=30)
        started.append(("munged", root / "munge" / "munged.pid"))
        # The daemons and clients find munge's socket through their auth options.
        with conf.open("a") as f:
            f.write(f"AuthInfo=socket={sock}\n")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([_bin(daemon), "-f", str(conf)], check=True, capture_output=True, env=env, timeout=30)
            started.append((daemon, root / f"{daemon}.pid"))
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                   env=env, check=False).stdout.strip()
            if state.startswith("idle"):
                break
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-1500:] for p in (root / "slurmctld.log", root / "slurmd.log")
                                 if p.exists())
                raise RuntimeError(f"the one-node SLURM did not come up (node state {state!r}):\n{logs}")
            time.sleep(0.3)
        yield Cluster(root=root, conf=conf, node=node)
    finally:
        # Jobs first: their slurmstepd would outlive slurmd. SIGKILL, then wait until none is left.
        with suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["scancel", "--signal=KILL", "--full", "-u", "root"], env=env, capture_output=True,
                           timeout=30)
            subprocess.run(["scancel", "-u", "root"], env=env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30).stdout.strip():
                time.sleep(0.5)
        for _name, pid_file in reversed(started):
            _stop(pid_file)
        if not os.environ.get("SWEEP_KEEP_SLURM"):
            shutil.rmtree(root, ignore_errors=True)


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
