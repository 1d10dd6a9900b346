"""Tiny local data sets of every shape a user brings (issue #14): string labels, sentence pairs,
given splits with a dev file, three imbalanced classes, a test split without labels."""

from __future__ import annotations

import random
from pathlib import Path

from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE, review

SHAPES = ("strings", "pairs", "dev", "three", "unlabelled_test")


def _three(rng: random.Random, label: int) -> str:
    if label < 2:
        return review(rng, label, rng.randrange(4, 20))
    return " ".join(rng.choice(NEUTRAL) for _ in range(rng.randrange(4, 20)))  # no cue word: the third class


def write_shape(directory: Path, shape: str, *, n_train: int = 160, n_eval: int = 40, seed: int = 0) -> Path:
    """Write one shape's files into `directory`; returns it."""
    import pandas as pd

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    splits = {"strings": ("train", "test"), "pairs": ("train", "test"), "dev": ("train", "dev", "test"),
              "three": ("train", "validation", "test"), "unlabelled_test": ("train", "validation", "test")}[shape]
    for split in splits:
        n = n_train if split == "train" else n_eval
        if shape == "strings":
            ys = [rng.randrange(2) for _ in range(n)]
            frame = pd.DataFrame({"review": [review(rng, y, rng.randrange(4, 30)) for y in ys],
                                  "sentiment": ["pos" if y else "neg" for y in ys]})
        elif shape == "pairs":
            a = [rng.randrange(2) for _ in range(n)]
            b = [rng.randrange(2) for _ in range(n)]
            frame = pd.DataFrame({"text": [review(rng, x, rng.randrange(4, 16)) for x in a],
                                  "text_b": [review(rng, y, rng.randrange(4, 16)) for y in b],
                                  "label": [int(x == y) for x, y in zip(a, b, strict=True)]})
        elif shape == "three":
            ys = [0 if r < 0.7 else 1 if r < 0.9 else 2 for r in (rng.random() for _ in range(n))]
            frame = pd.DataFrame({"text": [_three(rng, y) for y in ys], "label": ys})
        else:
            ys = [rng.randrange(2) for _ in range(n)]
            frame = pd.DataFrame({"text": [review(rng, y, rng.randrange(4, 30)) for y in ys],
                                  "label": [-1 if shape == "unlabelled_test" and split == "test" else y for y in ys]})
        if shape == "strings":
            frame.to_csv(directory / f"{split}.csv", index=False)
        elif shape == "dev":
            frame.to_json(directory / f"{split}.jsonl", orient="records", lines=True)
        else:
            frame.to_parquet(directory / f"{split}.parquet")
    return directory


# The job keys each shape needs (beyond data.name).
SHAPE_KEYS: dict[str, dict] = {
    "strings": {"text": "review", "label": "sentiment"},
    "pairs": {"text_pair": "text_b"},
    "dev": {"split": "given"},
    "three": {"split": "given"},
    "unlabelled_test": {"split": "given", "split_names": {"test": "validation"}},
}

__all__ = ["NEGATIVE", "POSITIVE", "SHAPES", "SHAPE_KEYS", "write_shape"]
