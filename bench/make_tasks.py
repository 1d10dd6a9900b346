"""Write three tasks built from the IMDB parquet files into a directory you name (never the repo):

- `imdb_strings/`: IMDB itself as csv, with string labels: columns `review`, `sentiment`
  (`neg` / `pos`); the same rows as the parquet files, in the same order.
- `imdb_pairs/`: a sentence-pair task: two reviews of the same split, label `same` when they
  have the same sentiment, else `different`; columns `review_a`, `review_b`, `label`. Each
  review is used in one pair only, so no review is in two splits; pairs are drawn with a
  fixed seed, and about half are `same`. (Hard: the model must judge two sentiments and
  compare them; all-MiniLM-L6-v2 was still at chance after 56% of an epoch of 2,000 pairs.)
- `imdb_halves/`: each review cut in two by words, given as a pair: columns `first`, `second`
  and `sentiment` (`neg` / `pos`), the same rows as IMDB. The evidence is spread over both
  texts, so it exercises pair tokenization (each half truncated `longest_first`, segment ids)
  on real data at the cost of a single-text task.

    python bench/make_tasks.py --imdb ../shared/data/imdb --out /tmp/tasks [--rows 4000]

`--rows` keeps the first N rows of each split after a seeded shuffle (for quick runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 0


def strings(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"review": frame["text"], "sentiment": np.where(frame["label"] == 1, "pos", "neg")})


def pairs(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(order) // 2
    a, b = frame.iloc[order[:half]].reset_index(drop=True), frame.iloc[order[half : 2 * half]].reset_index(drop=True)
    same = a["label"].to_numpy() == b["label"].to_numpy()
    return pd.DataFrame({"review_a": a["text"], "review_b": b["text"], "label": np.where(same, "same", "different")})


def halves(frame: pd.DataFrame) -> pd.DataFrame:
    words = [t.split() for t in frame["text"]]
    return pd.DataFrame({"first": [" ".join(w[: len(w) // 2]) for w in words],
                         "second": [" ".join(w[len(w) // 2 :]) for w in words],
                         "sentiment": np.where(frame["label"] == 1, "pos", "neg")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imdb", type=Path, default=Path("../shared/data/imdb"), help="train/test parquet files")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the tasks' directories into")
    parser.add_argument("--rows", type=int, default=None, help="rows kept per split (default: all)")
    args = parser.parse_args()
    for task in ("imdb_strings", "imdb_pairs", "imdb_halves"):
        (args.out / task).mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "test")):
        frame = pd.read_parquet(args.imdb / f"{split}.parquet")
        if args.rows is not None:
            keep = np.sort(np.random.default_rng(SEED + 10 + i).permutation(len(frame))[: args.rows])
            frame = frame.iloc[keep].reset_index(drop=True)
        strings(frame).to_csv(args.out / "imdb_strings" / f"{split}.csv", index=False)
        pair_frame = pairs(frame, SEED + i)
        pair_frame.to_parquet(args.out / "imdb_pairs" / f"{split}.parquet", index=False)
        half_frame = halves(frame)
        half_frame.to_parquet(args.out / "imdb_halves" / f"{split}.parquet", index=False)
        print(f"{split}: {len(frame)} reviews as strings, {len(pair_frame)} review pairs "
              f"({(pair_frame['label'] == 'same').mean():.3f} same sentiment), {len(half_frame)} halves")
    print(f"wrote imdb_strings, imdb_pairs and imdb_halves into {args.out}")


if __name__ == "__main__":
    main()
