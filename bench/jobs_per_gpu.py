"""Several jobs per GPU: the makespan of one grid of small jobs run with `sweep grid --gpus G
--jobs-per-gpu K` for each K, in one run, with the GPU's utilisation and memory sampled by
nvidia-smi while each sweep runs (issue 6, item 4: pick the default from these figures).

Every K runs the same grid (N jobs: seeds 1..N of one small all-MiniLM-L6-v2 job) into a fresh
runs directory with a warm tokenization cache (a one-job grid fills it first), so only the
packing differs; the validation accuracies per seed show whether sharing a GPU changed results
(it should not: each job has its own process, seed and data order).

    python bench/jobs_per_gpu.py --model ../shared/models/all-MiniLM-L6-v2 --data ../shared/data/imdb

Without a GPU it refuses, unless `--cpu-check` (then each K is `--parallel K` on the CPU, and
no utilisation is sampled): that checks the script, it measures nothing about GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


class GpuSampler:
    """nvidia-smi's utilisation (%) and memory used (MiB) of one GPU, every `period_ms`."""

    def __init__(self, gpu: int, period_ms: int = 250) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc = subprocess.Popen(
            ["nvidia-smi", f"--id={gpu}", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             f"-lms={period_ms}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                util, memory = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, memory))

    def stop(self) -> dict:
        self._proc.terminate()
        self._proc.wait()
        self._thread.join(timeout=5)
        utils = [u for u, _ in self.samples]
        return {"samples": len(utils), "gpu_util_mean": statistics.fmean(utils) if utils else None,
                "gpu_util_busy_share": sum(u > 0 for u in utils) / len(utils) if utils else None,
                "gpu_memory_peak_mib": max((m for _, m in self.samples), default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--jobs", type=int, default=8, help="jobs in the grid (seeds 1..N)")
    parser.add_argument("--rows", type=int, default=4000, help="training rows per job")
    parser.add_argument("--eval-rows", type=int, default=1000)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--jobs-per-gpu", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--gpu", type=int, default=0, help="the GPU every sweep uses")
    parser.add_argument("--cpu-check", action="store_true", help="no GPU: run each K as --parallel K (checks the script)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/jobs_per_gpu.json"))
    args = parser.parse_args()
    has_gpu = shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0
    if not has_gpu and not args.cpu_check:
        sys.exit("jobs_per_gpu.py: no GPU here (nvidia-smi -L fails); --cpu-check runs it on the CPU to check the script")
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = {"model": args.model, "epochs": args.epochs, "max_len": args.max_len, "batch_size": args.batch,
                "data": {"name": args.data, "limit": args.rows, "eval_limit": args.eval_rows}}
        grid = {"name": "share", "base": base, "seeds": list(range(1, args.jobs + 1))}
        path = Path(tmp) / "g.yaml"
        path.write_text(yaml.safe_dump(grid))
        (Path(tmp) / "w.yaml").write_text(yaml.safe_dump({**grid, "name": "warm", "seeds": [99]}))
        cmd = [sys.executable, "-m", "sweeper.cli", "grid", "--no-live", "--cache-dir", f"{tmp}/cache"]
        place = ["--gpus", str(args.gpu)] if has_gpu and not args.cpu_check else []
        subprocess.run([*cmd, str(Path(tmp) / "w.yaml"), "--runs-dir", f"{tmp}/runs-warm", *place,
                        *(["--jobs-per-gpu", "1"] if place else ["--parallel", "1"])],
                       cwd=REPO, env=env, check=True, capture_output=True)
        for k in args.jobs_per_gpu:
            runs = Path(tmp) / f"runs-{k}"
            packing = ["--jobs-per-gpu", str(k)] if place else ["--parallel", str(k)]
            sampler = GpuSampler(args.gpu) if place else None
            t0 = time.perf_counter()
            done = subprocess.run([*cmd, str(path), "--runs-dir", str(runs), *place, *packing],
                                  cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            gpu = sampler.stop() if sampler else {}
            if done.returncode != 0:
                sys.exit(f"sweep grid with {' '.join(packing)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            results = sorted((json.loads(p.read_text()) for p in (runs / "share").glob("*/result.json")),
                             key=lambda r: r["config"]["seed"])
            rows.append({"jobs_per_gpu": k, "jobs": len(results), "makespan_s": wall,
                         "train_s_sum": sum(r["train_seconds"] for r in results),
                         "samples_per_s_mean": statistics.fmean(r["train_samples_per_s"] for r in results),
                         "peak_memory_mb_max": max(r["peak_memory_mb"] for r in results),
                         "status": sorted({r["status"] for r in results}),
                         "val_acc": [round(r["val_acc"], 4) for r in results], **gpu})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    import torch

    device = "cpu (--cpu-check)"
    if place:
        device = subprocess.run(["nvidia-smi", f"--id={args.gpu}", "--query-gpu=name", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "device": device,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python"] + sys.argv)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.json.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    tmp_json.replace(args.json)
    first = rows[0]
    print(f"{args.jobs} jobs x {args.rows} rows, max_len {args.max_len}, batch {args.batch} on {meta['device']}")
    print("| jobs per GPU | makespan | vs first row | mean job samples/s | GPU util (mean) | GPU memory peak | "
          "val acc per seed |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        util = f"{r['gpu_util_mean']:.0f}%" if r.get("gpu_util_mean") is not None else "-"
        memory = f"{r['gpu_memory_peak_mib']:.0f} MiB" if r.get("gpu_memory_peak_mib") is not None else "-"
        print(f"| {r['jobs_per_gpu']} | {r['makespan_s']:.1f} s | {first['makespan_s'] / r['makespan_s']:.2f}x | "
              f"{r['samples_per_s_mean']:.1f} | {util} | {memory} | {r['val_acc']} |")


if __name__ == "__main__":
    main()
