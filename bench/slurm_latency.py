"""Submit-to-first-job latency and overhead of `--slurm` against a local run of the same grid,
on the throwaway one-node SLURM of tests/slurm_cluster.py (needs slurm-wlm and munge, root).

The same 4-job tiny grid (2 epochs, CPU, OMP_NUM_THREADS=1) runs twice, two jobs at a time each:
locally (`sweep grid --parallel 2`) and on SLURM (`--slurm --slurm-workers 2 --parallel 1`).
Measured from the moment the command starts: when it returns, when the first job writes its
`start` event, and when the last job's result is stored (the makespan).

    PYTHONPATH=. .venv/bin/python bench/slurm_latency.py --json bench/results/slurm_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import build_tiny_model, write_dataset  # noqa: E402
from tests.slurm_cluster import one_node_cluster  # noqa: E402


def first_start(sweep_dir: Path) -> float | None:
    times = []
    for events in sweep_dir.glob("*/events.jsonl"):
        for line in events.read_text().splitlines():
            if '"event":"start"' in line:
                times.append(json.loads(line)["time"])
                break
    return min(times) if times else None


def results(sweep_dir: Path) -> dict[str, float]:
    found = {}
    for path in sweep_dir.glob("*/result.json"):
        result = json.loads(path.read_text())
        if result.get("status") == "completed":
            found[path.parent.name] = result["test_acc"]
    return found


def measure(command: list[str], sweep_dir: Path, env: dict[str, str], jobs: int) -> dict[str, float]:
    start = time.time()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = returned = None
    while True:
        if returned is None and proc.poll() is not None:
            returned = time.time() - start
        if first is None and (t := first_start(sweep_dir)) is not None:
            first = t - start
        if len(results(sweep_dir)) == jobs and returned is not None:
            break
        time.sleep(0.1)
    done = max(p.stat().st_mtime for p in sweep_dir.glob("*/result.json")) - start
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    return {"command_returned_s": round(returned, 2), "first_job_start_s": round(first or 0, 2),
            "makespan_s": round(done, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sweep-bench-slurm-"))
    model = build_tiny_model("bert", root / "model")
    data = write_dataset(root / "data", n_train=800, n_test=100, seed=1)
    grid = {"name": "g", "base": {"model": str(model), "max_len": 32, "batch_size": 16, "epochs": 2,
                                  "data": {"name": str(data)}},
            "axes": {"lr": [1e-3, 2e-3]}, "seeds": [1, 2]}
    path = root / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    base = [sys.executable, "-m", "sweeper.cli", "grid", str(path), "--no-live"]
    with one_node_cluster() as cluster:
        env = {**os.environ, **cluster.env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
               "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
        # Each run with an empty tokenization cache of its own: neither profits from the other.
        local = measure([*base, "--runs-dir", str(root / "local"), "--parallel", "2"], root / "local" / "g",
                        {**env, "SWEEP_CACHE_DIR": str(root / "cache-local")}, 4)
        on_slurm = measure([*base, "--runs-dir", str(root / "slurm"), "--slurm", "--slurm-workers", "2",
                            "--parallel", "1"], root / "slurm" / "g", {**env, "SWEEP_CACHE_DIR": str(root / "cache-slurm")}, 4)
    same = results(root / "local" / "g") == results(root / "slurm" / "g")
    out = {"grid": "4 tiny BERT jobs (2 layers, 32 wide), 2 epochs, 640 training rows, two at a time",
           "machine": f"{os.cpu_count()} cores", "local": local, "slurm": on_slurm,
           "overhead_makespan": round(on_slurm["makespan_s"] / local["makespan_s"], 3),
           "same_test_acc": same}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
