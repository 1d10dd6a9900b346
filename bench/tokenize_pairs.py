"""Tokenization cost of sentence pairs against single texts, as the core tokenizes them
(`trainer.data._tokenize`: batches of 1,000, truncation to max_len; pairs `longest_first`,
with segment ids), on the IMDB pair task of bench/make_tasks.py.

    python bench/tokenize_pairs.py --data runs/tasks/imdb_pairs --rows 2000

Single = `review_a` alone; pair = (`review_a`, `review_b`), the same rows. Best of --repeats
runs each; prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from trainer.data import _tokenize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=Path("runs/tasks/imdb_pairs"))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--max-len", type=int, nargs="*", default=[128, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench/results/tokenize_pairs.json"))
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    frame = pd.read_parquet(args.data / "train.parquet").head(args.rows)
    a, b = list(frame["review_a"]), list(frame["review_b"])
    results = []
    for max_len in args.max_len:
        for name, pairs in (("single", None), ("pair", b)):
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                ids, offsets, types = _tokenize(tok, a, max_len, pairs)
                best = min(best, time.perf_counter() - t0)
            results.append({"max_len": max_len, "input": name, "rows": len(a), "seconds": best,
                            "rows_per_s": len(a) / best, "tokens_per_row": float(offsets[-1]) / len(a),
                            "segments": types is not None})
            print(json.dumps(results[-1]), file=sys.stderr)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(["python"] + sys.argv), "tokenizer": type(tok).__name__}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print("| max_len | input | rows/s | tokens/row | pair vs single (time) |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for r in results:
        single = next(x for x in results if x["max_len"] == r["max_len"] and x["input"] == "single")
        print(f"| {r['max_len']} | {r['input']} | {r['rows_per_s']:.0f} | {r['tokens_per_row']:.1f} | "
              f"{r['seconds'] / single['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
