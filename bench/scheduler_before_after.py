"""Orchestrator overhead before and after a change (issue #17: one scheduling loop), in one run.

Extracts REV (default: the last commit before the one scheduler) with `git archive`, then runs
`bench/orchestrator_overhead.py` of each tree on the same grid, alternating (after, before,
after, before, ...) so that drifts of a shared machine fall on both, and prints the wall time
and overhead of each run and the mean ratio.

    python bench/scheduler_before_after.py --model ../shared/models/all-MiniLM-L6-v2 --data ../shared/data/imdb
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(tree: Path, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, str(tree / "bench" / "orchestrator_overhead.py"), "--model", str(Path(args.model).resolve()),
           "--data", str(Path(args.data).resolve()), "--jobs", str(args.jobs), "--rows", str(args.rows),
           "--parallel", "1", "--warm", "warm-start", "--json", str(out)]
    subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True, capture_output=True)
    row: dict = json.loads(out.read_text())["rows"][0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--before", default="6381c73", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        rows: dict[str, list[dict]] = {"after": [], "before": []}
        for i in range(args.rounds):
            for name, tree in (("after", REPO), ("before", before)):
                row = run(tree, args, Path(tmp) / f"{name}-{i}.json")
                rows[name].append(row)
                print(name, i, f"wall {row['wall']:.1f} s, runtime {row['runtime']:.1f} s", file=sys.stderr, flush=True)
    print("| tree | run | jobs | sweep wall time | sum of jobs' runtime_s | overhead vs runtime | val acc per seed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, runs in rows.items():
        for i, r in enumerate(runs):
            print(f"| {name} | {i + 1} | {r['jobs']} | {r['wall']:.1f} s | {r['runtime']:.1f} s | "
                  f"{(r['wall'] / r['runtime'] - 1) * 100:.1f}% | {r['val_acc']} |")
    overhead = {name: statistics.mean(r["wall"] / r["runtime"] - 1 for r in runs) for name, runs in rows.items()}
    ratio = statistics.mean(r["wall"] for r in rows["after"]) / statistics.mean(r["wall"] for r in rows["before"])
    print(f"\nmean overhead: after {overhead['after'] * 100:.1f}%, before {overhead['before'] * 100:.1f}%; "
          f"wall time after / before: {ratio:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"before": args.before, "rows": rows, "overhead": overhead,
                                               "wall_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
