"""Each speed lever of the training core, switched off (or on) one at a time, in one run.

Training throughput of the core's own step (the model, batches and optimizer `trainer.loop`
builds) on the same real rows, for:
- `core defaults`: SDPA attention, fused Adam, length-grouped batches with dynamic padding;
- `eager attention`: the encoder's eager attention instead of SDPA;
- `foreach Adam`: torch's default multi-tensor Adam instead of the fused kernel;
- `random batches`: dynamic padding, but batches drawn at random (no length grouping);
- `pad to max_len`: every batch padded to max_len (the users' recipe);
- `torch.compile`: the classifier compiled with dynamic shapes (first-step compile time
  reported apart; throughput measured after it);
- on a GPU only (both are free on a CPU, so they are not timed there): `pageable copies`,
  batches copied from pageable instead of pinned memory; `loss.item() every step`, a host-device
  sync per step as in the users' loop (the core reads the loss once every 10 steps);
and evaluation throughput at evaluation batch sizes 16, 64 and 256 (the core uses
max(64, 2 x batch)). Timed steps start after 2 warm-up steps; every variant sees the same
rows. On a GPU every variant runs in bf16 autocast, as the core's `precision: auto` does;
`--arch bert-base|modernbert-base` times that architecture with random weights.

    python bench/levers.py --model ../shared/models/all-MiniLM-L6-v2 --data ../shared/data/imdb
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainer.config import build_job  # noqa: E402
from trainer.data import Split, eval_batches, iterate, prepare, train_batches  # noqa: E402
from trainer.loop import make_optimizer  # noqa: E402
from trainer.model import Classifier, load_encoder  # noqa: E402


def padded_to(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    extra = width - batch["input_ids"].shape[1]
    if extra <= 0:
        return batch
    return {"input_ids": F.pad(batch["input_ids"], (0, extra), value=pad_id),
            "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0), "labels": batch["labels"]}


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
AUTOCAST_DTYPE = torch.bfloat16 if DEVICE.type == "cuda" and torch.cuda.is_bf16_supported() else None


def autocast() -> Any:
    return torch.autocast("cuda", dtype=AUTOCAST_DTYPE) if AUTOCAST_DTYPE else nullcontext()


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def train_variant(name: str, args: argparse.Namespace, split: Split, pad_id: int, *, attention: str = "sdpa",
                  fused: bool = True, order: str = "grouped", compile_model: bool = False, pin: bool = True,
                  item_every_step: bool = False) -> dict:
    torch.manual_seed(args.seed)
    cfg = build_job({"model": args.model, "max_len": args.max_len, "data": {"name": args.data}})
    model = Classifier(load_encoder(args.model, attention=attention), num_labels=2, pooling="cls",
                       dropout=0.1).to(DEVICE)
    optimizer = make_optimizer(cfg, model, DEVICE)
    if not fused:
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, foreach=True)
    if order == "grouped":
        batches = train_batches(split, args.batch, seed=args.seed, epoch=1)
    else:
        rng = np.random.default_rng(args.seed)
        perm = rng.permutation(len(split))
        batches = [perm[i : i + args.batch] for i in range(0, len(perm), args.batch)]
    batches = batches[: args.steps + 2]
    step = torch.compile(model, dynamic=True) if compile_model else model
    model.train()
    compile_s = 0.0
    timed_samples = timed_tokens = 0
    t0 = 0.0
    running = 0.0
    window = torch.zeros((), device=DEVICE)
    pin = pin and DEVICE.type == "cuda"
    for i, batch in enumerate(iterate(split, batches, pad_id, pin=pin and order != "max_len")):
        if order == "max_len":
            batch = padded_to(batch, args.max_len, pad_id)
            batch = {k: v.pin_memory() for k, v in batch.items()} if pin else batch
        if i == 2:
            sync()
            t0 = time.perf_counter()
        s = time.perf_counter()
        tokens = int(batch["attention_mask"].sum())  # on the host, before the copy
        batch = {k: v.to(DEVICE, non_blocking=True) for k, v in batch.items()}
        with autocast():
            logits = step(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if item_every_step:
            running += loss.item()
        else:  # the core: accumulate on the device, read once every 10 steps
            window += loss.detach()
            if (i + 1) % 10 == 0:
                running += window.item()
                window.zero_()
        if i == 0 and compile_model:
            sync()
            compile_s = time.perf_counter() - s
        if i >= 2:
            timed_samples += len(batch["labels"])
            timed_tokens += tokens
    sync()
    seconds = time.perf_counter() - t0
    result = {"name": name, "samples_per_s": timed_samples / seconds, "real_tokens_per_s": timed_tokens / seconds,
              "steps": len(batches) - 2, "seconds": seconds}
    if compile_model:
        result["first_step_s"] = compile_s
    print(json.dumps(result), flush=True)
    return result


@torch.inference_mode()
def eval_variant(args: argparse.Namespace, split: Split, pad_id: int, batch_size: int) -> dict:
    model = Classifier(load_encoder(args.model), num_labels=2, pooling="cls", dropout=0.1).to(DEVICE).eval()
    batches = eval_batches(split, batch_size)
    pin = DEVICE.type == "cuda"
    for batch in iterate(split, batches[-1:], pad_id, pin=pin):  # warm-up
        with autocast():
            model(batch["input_ids"].to(DEVICE), batch["attention_mask"].to(DEVICE))
    sync()
    t0 = time.perf_counter()
    outputs = []
    for batch in iterate(split, batches, pad_id, pin=pin):
        with autocast():
            logits = model(batch["input_ids"].to(DEVICE, non_blocking=True),
                           batch["attention_mask"].to(DEVICE, non_blocking=True))
        outputs.append(logits.float().softmax(-1))
    torch.cat(outputs).cpu()
    seconds = time.perf_counter() - t0
    result = {"name": f"eval batch {batch_size}", "samples_per_s": len(split) / seconds, "seconds": seconds}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24, help="timed training steps per variant")
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--arch", choices=["pretrained", "bert-base", "modernbert-base"], default="pretrained",
                        help="bert-base / modernbert-base: that architecture, randomly initialised from its config, "
                             "with --model's tokenizer (for speed only)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/levers.json"))
    args = parser.parse_args()
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = (args.steps + 2) * args.batch
    with tempfile.TemporaryDirectory() as cache:
        cfg = build_job({"data": {"name": args.data, "limit": rows, "eval_limit": args.eval_rows}})
        data = prepare(cfg.data, tokenizer, args.max_len, cache_dir=Path(cache))
    pad_id = tokenizer.pad_token_id or 0
    with tempfile.TemporaryDirectory() as built:
        if args.arch != "pretrained":
            from bench.trainer_vs_hf import build_architecture

            args.model = build_architecture(args.arch, args.model, Path(built) / args.arch, args.seed)
        results = [
            train_variant("core defaults", args, data.train, pad_id),
            train_variant("eager attention", args, data.train, pad_id, attention="eager"),
            train_variant("foreach Adam", args, data.train, pad_id, fused=False),
            train_variant("random batches", args, data.train, pad_id, order="random"),
            train_variant("pad to max_len", args, data.train, pad_id, order="max_len"),
        ]
        if DEVICE.type == "cuda":
            results.append(train_variant("pageable copies", args, data.train, pad_id, pin=False))
            results.append(train_variant("loss.item() every step", args, data.train, pad_id, item_every_step=True))
        if not args.skip_compile:
            results.append(train_variant("torch.compile (dynamic)", args, data.train, pad_id, compile_model=True))
        results += [eval_variant(args, data.val, pad_id, b) for b in (16, 64, 256)]
    base = results[0]["samples_per_s"]
    eval_base = next(r for r in results if r["name"] == "eval batch 64")["samples_per_s"]
    print("\n| Variant | samples/s | vs core defaults |\n| --- | ---: | ---: |")
    for r in results:
        ref = eval_base if r["name"].startswith("eval") else base
        print(f"| {r['name']} | {r['samples_per_s']:.2f} | {r['samples_per_s'] / ref:.2f}x |")
    meta = {"machine": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
            "precision": "bf16 autocast" if AUTOCAST_DTYPE else "fp32",
            "threads": torch.get_num_threads(), "args": {k: str(v) for k, v in vars(args).items()},
            "date": time.strftime("%Y-%m-%d")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
