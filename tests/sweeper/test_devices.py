"""Every way a machine names its GPUs (issue #30, item 3): CUDA_VISIBLE_DEVICES entries kept as
they are (indices, GPU-… and MIG-… UUIDs), --gpus choosing among them and never more, threads
from the CPUs this process may use, SLURM GPU workers asking for CPUs, and --dry-run showing it.
No GPU needed: the environment, nvidia-smi and sched_getaffinity stand in."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sweeper import scheduler
from sweeper.cli import app
from sweeper.devices import make_slots, select_gpus, visible_gpus
from tests.sweeper.test_scheduler import grid_file

MIG_A = "MIG-4f1c1a9e-2b7d-5e1f-9c1a-0d3e8b7a6c51"
MIG_B = "MIG-9d2e3b4c-5a6f-5b7a-8c9d-1e2f3a4b5c6d"
GPU_A = "GPU-7e2b1c3d-4a5f-6b7c-8d9e-0f1a2b3c4d5e"

NVIDIA_SMI = f"""GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
  MIG 3g.40gb     Device  0: (UUID: {MIG_A})
  MIG 3g.40gb     Device  1: (UUID: {MIG_B})
GPU 1: NVIDIA A100-SXM4-80GB (UUID: {GPU_A})
"""


@pytest.mark.parametrize(("env", "expected"), [
    ("0,1", ["0", "1"]),
    (f"{GPU_A},{MIG_A}", [GPU_A, MIG_A]),
    (f"{MIG_A},{MIG_B}", [MIG_A, MIG_B]),
    ("MIG-GPU-11111111-2222-3333-4444-555555555555/1/0", ["MIG-GPU-11111111-2222-3333-4444-555555555555/1/0"]),
    ("2, 3", ["2", "3"]),
    ("0,-1,1", ["0"]),  # CUDA stops at the first entry it cannot read
    ("", []),
])
def test_visible_devices_are_kept_as_cuda_visible_devices_names_them(
        monkeypatch: pytest.MonkeyPatch, env: str, expected: list[str]) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == expected
    slots = make_slots(gpus=visible_gpus(), jobs_per_gpu=2, parallel=1)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == [d for d in expected for _ in range(2)] or (
        not expected and [s.name for s in slots] == ["cpu:0"])


def test_without_cuda_visible_devices_a_mig_gpu_is_its_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(scheduler.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=NVIDIA_SMI, stderr=""))
    assert visible_gpus() == [MIG_A, MIG_B, "1"]


def test_gpus_chooses_among_the_visible_devices_by_position_or_name_and_never_widens() -> None:
    visible = ["2", "3"]
    assert select_gpus("1", visible) == ["3"]  # the second visible device (cuda:1), not physical GPU 1
    assert select_gpus("0,1", visible) == ["2", "3"]
    assert select_gpus(f"{MIG_B}", [MIG_A, MIG_B]) == [MIG_B]
    with pytest.raises(ValueError, match=r"'2' is not a visible device; this process sees 2 \(2, 3\)"):
        select_gpus("2", visible)
    with pytest.raises(ValueError, match="not a visible device"):
        select_gpus(MIG_A, [MIG_B])
    with pytest.raises(ValueError, match="no GPU is visible"):
        select_gpus("0", [])
    with pytest.raises(ValueError, match="twice"):
        select_gpus("0,0", visible)


def test_threads_per_job_come_from_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(scheduler.os, "sched_getaffinity", lambda pid: set(range(8)))  # a SLURM allocation of 8
    monkeypatch.setattr(scheduler.os, "cpu_count", lambda: 96)  # on a 96-core node
    slots = make_slots(gpus=["0", "1"], jobs_per_gpu=2, parallel=1)
    assert {s.env["OMP_NUM_THREADS"] for s in slots} == {"2"}


def _dry_run(tmp_path: Path, tiny_models: dict, tiny_data: Path, env: dict[str, str], *extra: str) -> Any:
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, seeds=(1,))
    return CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run", *extra],
                              env={"COLUMNS": "200", "OMP_NUM_THREADS": "3", **env})


def test_dry_run_shows_each_slot_by_the_device_its_jobs_will_see(
        tmp_path: Path, tiny_models: dict, tiny_data: Path) -> None:
    done = _dry_run(tmp_path, tiny_models, tiny_data, {"CUDA_VISIBLE_DEVICES": f"{MIG_A},{MIG_B}"})
    assert done.exit_code == 0, done.output
    assert "2 slot(s)" in done.output
    rows = [line for line in done.output.splitlines() if "gpu:MIG-" in line]
    assert len(rows) == 2
    assert MIG_A in rows[0] and MIG_B in rows[1] and all(" 3 " in row for row in rows)
    narrowed = _dry_run(tmp_path, tiny_models, tiny_data, {"CUDA_VISIBLE_DEVICES": "2,3"}, "--gpus", "1",
                        "--jobs-per-gpu", "2")
    assert narrowed.exit_code == 0, narrowed.output
    assert narrowed.output.count("gpu:3#") == 2 and "gpu:1#" not in narrowed.output
    wider = _dry_run(tmp_path, tiny_models, tiny_data, {"CUDA_VISIBLE_DEVICES": "2,3"}, "--gpus", "0,1,2")
    assert wider.exit_code == 2 and "not a visible device" in wider.output


def test_slurm_gpu_workers_ask_for_cpus_for_their_jobs(tmp_path: Path, tiny_models: dict, tiny_data: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeper import slurm

    asked: dict[str, Any] = {}

    def submit(**kwargs: Any) -> Any:
        asked.update(kwargs)
        raise slurm.SlurmError("not submitted: a test")

    monkeypatch.setattr(slurm, "check_reachable", lambda runs, storage: (runs, str(runs / "sweeps.journal")))
    monkeypatch.setattr(slurm, "submit", submit)
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, seeds=(1,))
    CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(tmp_path / "runs"), "--slurm",
                             "--slurm-gpus-per-task", "2", "--jobs-per-gpu", "2"])
    assert asked["cpus_per_task"] == 2 * 2 * slurm.CPUS_PER_GPU_JOB
    CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(tmp_path / "runs"), "--slurm", "--parallel", "3"])
    assert asked["cpus_per_task"] == 3  # CPU workers: one per lane, as before


def test_a_slot_named_by_an_old_style_mig_name_gets_its_warm_process(tmp_path: Path) -> None:
    from sweeper.process import WarmPool

    (slot,) = make_slots(gpus=["MIG-GPU-11111111-2222-3333-4444-555555555555/1/0"], jobs_per_gpu=1, parallel=1)
    pool = WarmPool(tmp_path / ".warm")
    pool.prime([slot])  # its early log's name holds no slash
    (spare,) = pool.spares.values()
    assert spare.early_log.parent == tmp_path / ".warm"
    pool.close()
    assert spare.proc.poll() is not None
