"""A smaller encoder from a real one: its embeddings and first N layers, saved as a model directory
(the second real encoder of `sweep compare`'s example and tests; `../shared` has one real model).

    python bench/cut_model.py ../shared/models/all-MiniLM-L6-v2 /tmp/minilm-l3 --layers 3
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cut(source: Path, out: Path, layers: int) -> Path:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(source)
    encoder = model.encoder.layer
    if not 1 <= layers <= len(encoder):
        raise SystemExit(f"--layers: {layers}; {source} has {len(encoder)} layers")
    model.encoder.layer = encoder[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=3)
    args = parser.parse_args()
    print(cut(args.source, args.out, args.layers))


if __name__ == "__main__":
    main()
