"""Build `.gpu/`, the folder a lent GPU machine needs to run `bench/gpu.sh` (it is git-ignored
and travels with the working tree, 64 MiB at most; the GPU machine reaches no network).

What goes in:
- `whl/`: wheels for Python 3.12 (the GPU image's) of what that image lacks or holds in another
  version: datasets, dill and multiprocess (the data path), optuna with sqlalchemy, alembic,
  mako and colorlog (the sweep store), typer with pydantic (the CLI), each at this machine's
  installed version;
- `imdb/`: a seeded, label-balanced subset of ../shared's IMDB parquet files (default 6,000 rows
  of each split: the merged 8:1:1 split then has 9,600 training rows);
- `minilm/`: all-MiniLM-L6-v2 with its weights stored in float16 (43 MiB instead of 87; the core
  loads any checkpoint in float32), its config and tokenizer.

    python bench/gpu_bundle.py                # then: the device tool, carry [".gpu"], bash bench/gpu.sh check
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The GPU image has torch, transformers, numpy, pyarrow, pandas, fsspec, xxhash, huggingface-hub,
# requests, httpx, tqdm, pyyaml, rich, click, shellingham, annotated-doc, markupsafe (device KINDS.md).
WHEELS = ["datasets", "dill", "multiprocess", "optuna", "sqlalchemy", "alembic", "mako", "colorlog", "typer",
          "pydantic", "pydantic-core", "annotated-types", "typing-inspection"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
LIMIT_MIB = 60  # of the 64 MiB a call carries; the working tree takes the rest


def download_wheels(dest: Path, python: str) -> None:
    dest.mkdir(parents=True)
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "-d", str(dest), *pins]
    subprocess.run(cmd, check=True)


def subset_imdb(source: Path, dest: Path, rows: int, seed: int) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    dest.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        table = pq.read_table(source / f"{split}.parquet")
        labels = np.asarray(table.column("label").to_numpy())
        keep = []
        classes = np.unique(labels)
        for label in classes:
            where = np.flatnonzero(labels == label)
            keep.append(rng.choice(where, size=min(len(where), rows // len(classes)), replace=False))
        pq.write_table(table.take(np.sort(np.concatenate(keep))), dest / f"{split}.parquet", compression="zstd",
                       compression_level=19)


def half_model(source: Path, dest: Path, *, weights: bool = True) -> None:
    """The model's config and tokenizer files, and (with `weights`) its weights in float16."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True)
    for path in source.iterdir():
        if path.name != "model.safetensors":
            shutil.copy(path, dest / path.name)
    if weights:
        tensors = load_file(str(source / "model.safetensors"))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()},
                  str(dest / "model.safetensors"), metadata={"format": "pt"})


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / ".gpu")
    parser.add_argument("--rows", type=int, default=6000, help="rows kept of each IMDB split")
    parser.add_argument("--python", default="3.12", help="the GPU image's Python")
    parser.add_argument("--no-weights", action="store_true", help="leave MiniLM's weights out (tokenizer and config only)")
    args = parser.parse_args()
    data, model = args.shared / "data" / "imdb", args.shared / "models" / "all-MiniLM-L6-v2"
    for path in (data / "train.parquet", model / "model.safetensors"):
        if not path.exists():
            sys.exit(f"gpu_bundle.py: {path} not found; --shared names the folder holding data/ and models/")
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    download_wheels(tmp / "whl", args.python)
    subset_imdb(data, tmp / "imdb", args.rows, seed=0)
    half_model(model, tmp / "minilm", weights=not args.no_weights)
    total = size_mib(tmp)
    if total > LIMIT_MIB:
        sys.exit(f"gpu_bundle.py: {total:.1f} MiB is over {LIMIT_MIB} MiB; lower --rows or add --no-weights "
                 f"(left in {tmp})")
    if args.out.exists():  # replaced only once the new bundle is whole
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    for part in sorted(args.out.iterdir()):
        print(f"{part.relative_to(REPO) if part.is_relative_to(REPO) else part}: {size_mib(part):.1f} MiB")
    print(f"total {total:.1f} MiB")


if __name__ == "__main__":
    main()
