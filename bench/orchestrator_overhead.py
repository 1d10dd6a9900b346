"""Orchestrator overhead: the wall time of an N-job grid against the sum of its jobs' own
time, and what one job's start-up costs (target: under 10% for one-minute jobs).

Runs `sweep grid` on a grid of N real all-MiniLM-L6-v2 jobs sized to about a minute each on
this machine, one at a time (so the sum of job times is the ideal wall time), with a warm
tokenization cache; then the same grid with `--parallel 2` (both cores shared by two jobs at one
thread each: the makespan ratio says which default is faster); each of them with warm starts
(the default) and with `--no-warm-start`; then times the pieces of a job's start-up and exit in
fresh processes.

    python bench/orchestrator_overhead.py --model ../shared/models/all-MiniLM-L6-v2 --data ../shared/data/imdb
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter()\n" + code +
                          "\nprint(time.perf_counter() - t)"], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def exit_cost(imports: str) -> float:
    """Seconds from the last statement to the process being gone, for a normal shutdown."""
    code = f"{imports}\nimport time\nprint(time.time(), flush=True)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return time.time() - float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=640, help="training rows per job (~1 min at max_len 128)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per job (on a GPU: to make a job last a minute)")
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2],
                        help="run the grid once per value of sweep grid --parallel (overhead figures: the jobs "
                             "run alone only with 1)")
    parser.add_argument("--warm", nargs="+", default=["warm-start", "no-warm-start"],
                        choices=["warm-start", "no-warm-start"], help="and once per start mode")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    env = {**os.environ, "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as tmp:
        grid = {"name": "overhead", "base": {"model": args.model, "epochs": args.epochs, "max_len": 128,
                                             "data": {"name": args.data, "limit": args.rows,
                                                      "eval_limit": args.eval_rows}},
                "seeds": list(range(1, args.jobs + 1))}
        path = Path(tmp) / "g.yaml"
        path.write_text(yaml.safe_dump(grid))
        cache = Path(tmp) / "cache"
        cmd = [sys.executable, "-m", "sweeper.cli", "grid", str(path), "--runs-dir", f"{tmp}/runs", "--no-live",
               "--cache-dir", str(cache)]
        # Warm the tokenization cache (and datasets' own) with a one-job grid first.
        warm = {**grid, "name": "warm", "seeds": [99]}
        (Path(tmp) / "w.yaml").write_text(yaml.safe_dump(warm))
        subprocess.run([*cmd[:4], str(Path(tmp) / "w.yaml"), *cmd[5:]], cwd=REPO, env=env, check=True,
                       capture_output=True)
        rows = []
        # the same grid, warm cache, a fresh runs directory each time
        for parallel, start in itertools.product(args.parallel, args.warm):
            runs = Path(tmp) / f"runs-p{parallel}-{start}"
            run_cmd = [*cmd[:6], str(runs), *cmd[7:], "--parallel", str(parallel), f"--{start}"]
            t0 = time.perf_counter()
            subprocess.run(run_cmd, cwd=REPO, env=env, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            results = [json.loads(p.read_text()) for p in (runs / "overhead").glob("*/result.json")]
            rows.append({"parallel": parallel, "warm": start, "jobs": len(results), "wall": wall,
                         "runtime": sum(r["runtime_s"] for r in results),
                         "train": sum(r["train_seconds"] for r in results),
                         "val_acc": [round(r["val_acc"], 4) for r in sorted(results, key=lambda r: r["config"]["seed"])]})
            print(rows[-1], file=sys.stderr, flush=True)
        startup = {
            "python + `sweep` CLI imports (no torch)": timed("import sweeper.cli"),
            "import torch + transformers": timed("import torch, transformers"),
            "model + tokenizer load": timed(f"import torch, transformers\nt = time.perf_counter()\n"
                                            f"transformers.AutoModel.from_pretrained({args.model!r}); "
                                            f"transformers.AutoTokenizer.from_pretrained({args.model!r})"),
            "interpreter exit after the job (torch + transformers + datasets loaded)": exit_cost(
                "import torch, transformers, datasets, trainer.loop, sweeper.cli"),
            "data preparation (cache hit)": timed(
                "from pathlib import Path\nfrom transformers import AutoTokenizer\nfrom trainer.config import DataConfig\n"
                f"from trainer.data import prepare\ntok = AutoTokenizer.from_pretrained({args.model!r})\n"
                "t = time.perf_counter()\n"
                f"prepare(DataConfig(name={args.data!r}, limit={args.rows}, eval_limit={args.eval_rows}), tok, 128, "
                f"cache_dir=Path({str(cache)!r}))"),
        }
    first = rows[0]
    print("| --parallel | start | jobs | sweep wall time | vs first row | sum of jobs' runtime_s | sum of training time | "
          "overhead vs runtime | overhead vs training | val acc per seed |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['parallel']} | {r['warm']} | {r['jobs']} | {r['wall']:.1f} s | {first['wall'] / r['wall']:.2f}x | "
              f"{r['runtime']:.1f} s | {r['train']:.1f} s | {(r['wall'] / r['runtime'] - 1) * 100:.1f}% | "
              f"{(r['wall'] / r['train'] - 1) * 100:.1f}% | {r['val_acc']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "startup": startup}, indent=2))
    print()
    print("| start-up piece (fresh process) | seconds |")
    print("| --- | ---: |")
    for name, seconds in startup.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
