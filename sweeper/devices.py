"""Where jobs run: the devices this process was given, `--gpus` choosing among them, and the
slots (GPU shares or CPU lanes) the scheduler fills, each with its jobs' environment. No torch:
devices are read from CUDA_VISIBLE_DEVICES or `nvidia-smi -L`."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass

from trainer.config import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    name: str  # "cpu:0", "gpu:1#0", "gpu:MIG-4f1c…#1"
    env: dict[str, str]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (a SLURM allocation, `taskset`, a cgroup
    cpuset), not the whole node that `os.cpu_count()` counts."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def make_slots(*, gpus: list[str] | None, jobs_per_gpu: int, parallel: int) -> list[Slot]:
    """GPU shares when there are GPUs (each job sees one device through CUDA_VISIBLE_DEVICES,
    named as this process was given it: an index, a GPU-… or MIG-… UUID), else CPU lanes.

    The CPUs this process may use are divided among the slots: jobs that each start one thread
    per core oversubscribe the CPU and run many times slower (two tiny jobs on 2 cores: 50x).
    """
    n = len(gpus) * jobs_per_gpu if gpus else parallel
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, usable_cpus() // n))
    limits = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if gpus:
        return [Slot(f"gpu:{g}#{i}", {"CUDA_VISIBLE_DEVICES": g, **limits})
                for g in gpus for i in range(jobs_per_gpu)]
    return [Slot(f"cpu:{i}", {"CUDA_VISIBLE_DEVICES": "", **limits}) for i in range(parallel)]


DEVICE_ENTRY = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")


def visible_gpus() -> list[str]:
    """The devices this process was given, each as CUDA_VISIBLE_DEVICES names it (an index, a
    `GPU-…` or `MIG-…` UUID), without importing torch. Unset: what nvidia-smi lists, a GPU's MIG
    slices by their UUIDs where it is split. CUDA reads the variable up to its first entry it
    cannot parse (e.g. -1, which hides the rest): so do we."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        entries = []
        for entry in (x.strip() for x in env.split(",")):
            if not DEVICE_ENTRY.match(entry):
                if entry:
                    log.warning("CUDA_VISIBLE_DEVICES=%s: %r hides it and every device after it (as CUDA reads it)",
                                env, entry)
                break
            entries.append(entry)
        return entries
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return devices_of_nvidia_smi(out)


def devices_of_nvidia_smi(listing: str) -> list[str]:
    """`nvidia-smi -L`'s devices: a GPU by its index, or by its MIG slices' UUIDs when it has some
    (a MIG-enabled GPU runs nothing itself)."""
    devices: list[str] = []
    for line in listing.splitlines():
        gpu = re.match(r"GPU (\d+):", line)
        mig = re.search(r"\bMIG\b.*\(UUID: (MIG-[^)\s]+)\)", line)
        if gpu:
            devices.append(gpu[1])
        elif mig:
            if devices and devices[-1].isdigit():
                devices.pop()  # its GPU: replaced by its slices
            devices.append(mig[1])
    return devices


def select_gpus(selection: str, visible: list[str]) -> list[str]:
    """The devices `--gpus` picks among the visible ones: a number is a position (0: the first
    visible device, as torch numbers them: cuda:0), anything else a name (a GPU-… or MIG-… UUID,
    as CUDA_VISIBLE_DEVICES or nvidia-smi -L shows it). Never a device this process was not given.
    Raises ConfigError naming the visible devices."""
    shown = ", ".join(visible) or "none"
    chosen: list[str] = []
    for item in (x.strip() for x in selection.split(",")):
        if not item:
            continue
        if item.isdigit() and int(item) < len(visible):
            device = visible[int(item)]
        elif not item.isdigit() and item in visible:
            device = item
        else:
            raise ConfigError(f"--gpus: {item!r} is not a visible device; this process sees {len(visible)} ({shown}): "
                             f"expected a position 0..{max(0, len(visible) - 1)} or one of those names, or none "
                             "(the CPU)" if visible else
                             f"--gpus: {item!r}: no GPU is visible to this process (CUDA_VISIBLE_DEVICES, nvidia-smi); "
                             "--gpus none runs on the CPU")
        if device in chosen:
            raise ConfigError(f"--gpus: {item!r} names {device} twice; use --jobs-per-gpu to share a device")
        chosen.append(device)
    return chosen


def choose_slots(gpus: str | None, jobs_per_gpu: int, parallel: int | None) -> list[Slot]:
    """The slots of `--gpus`, `--jobs-per-gpu` and `--parallel` (None: 2 lanes on 2 or more cores).
    Raises ConfigError for a `--gpus` that names a device this process was not given."""
    if parallel is None:  # measured: two one-thread jobs beat one two-thread job on 2 cores
        parallel = 2 if (os.cpu_count() or 1) >= 2 else 1
    visible = visible_gpus()
    if gpus is not None and gpus.strip().lower() == "none":
        chosen: list[str] = []
    elif gpus:
        chosen = select_gpus(gpus, visible)
    else:
        chosen = visible
    return make_slots(gpus=chosen, jobs_per_gpu=jobs_per_gpu, parallel=parallel)
