"""Tokenization cache: the second job's data preparation against the first's (target >= 10x),
and the cache's size on disk.

Each job's `trainer.data.prepare` (load the data through `datasets`, split, tokenize or hit the
cache) runs in a fresh process, as jobs do; the first against an empty cache directory, the
second against the entry the first left.

    python bench/tokenize_cache.py --model ../shared/models/all-MiniLM-L6-v2 --data ../shared/data/imdb
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

JOB = """
import time, sys
from pathlib import Path
from transformers import AutoTokenizer
from trainer.config import DataConfig
from trainer.data import prepare
tok = AutoTokenizer.from_pretrained({model!r})
t = time.perf_counter()
p = prepare(DataConfig(name={data!r}, limit={limit}), tok, {max_len}, cache_dir=Path({cache!r}))
print(f"{{time.perf_counter() - t:.3f}} {{p.cache_hit}} {{len(p.train)}} {{len(p.val)}} {{len(p.test)}}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--limit", default="None", help="data.limit (None: all 40,000 training rows)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        code = JOB.format(model=args.model, data=args.data, limit=args.limit, max_len=args.max_len, cache=cache)
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
            runs.append(out.stdout.split())
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    (t1, hit1, *rows), (t2, hit2, *_) = runs
    print(f"| rows (train/val/test) | max_len | first job (hit={hit1}) | second job (hit={hit2}) | speed-up | cache size |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {'/'.join(rows)} | {args.max_len} | {float(t1):.2f} s | {float(t2):.2f} s | "
          f"{float(t1) / float(t2):.0f}x | {size / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
