"""Training core vs the Hugging Face Trainer (and the users' own loop), in one run.

Same rows (the core's fixed split: first N training rows, first M validation rows), same
model, same hyperparameters (Adam-style, lr 5e-5 constant, batch 16, max_len 128, 1 epoch,
seed 42), same device, same process. Prints a markdown table and writes JSON.

    python bench/trainer_vs_hf.py --model ../shared/models/all-MiniLM-L6-v2 --data ../shared/data/imdb

What is compared:
- `hf-trainer`: AutoModelForSequenceClassification + DataCollatorWithPadding + Trainer
  (its classifier head is BERT's pooler -> dropout -> linear, i.e. our `pooling: pooler`);
- `users-loop`: the users' recipe: tokenize with padding='max_length', a plain PyTorch loop
  over a shuffled DataLoader, no length grouping, same head as the Trainer;
- `sweep-core (pooler)` and `sweep-core (cls)`: `trainer.loop.run_job`.
Throughput is training samples (and real, unpadded tokens) per second of training time;
accuracy is on the validation rows, after the epoch. On a GPU every contender runs in bf16
and the model FLOPs utilisation is reported against a measured bf16 matmul peak;
`--arch bert-base|modernbert-base` benchmarks that architecture with random weights.
`--text-pair COLUMN` (with `--text`, `--label`) benchmarks a sentence-pair task: every contender
tokenizes the rows as pairs (longest_first truncation to max_len, segment ids), e.g. on the IMDB
pair task of bench/make_tasks.py:

    python bench/trainer_vs_hf.py --data runs/tasks/imdb_pairs --text review_a --text-pair review_b \
        --only hf-trainer cls --rows 1000 --json bench/results/trainer_vs_hf_pairs.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.config import build_job  # noqa: E402
from trainer.tasks import load  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BF16 = DEVICE.type == "cuda" and torch.cuda.is_bf16_supported()  # the core's `precision: auto` does the same


def build_architecture(arch: str, tokenizer_from: str, directory: Path, seed: int) -> str:
    """A randomly initialised bert-base or ModernBERT-base (speed does not depend on the
    weights), saved with the tokenizer of `tokenizer_from`, so no Hub access is needed."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, ModernBertConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    if arch == "bert-base":  # BertConfig's defaults are bert-base-uncased's shape
        config = BertConfig(vocab_size=max(30522, len(tokenizer)), pad_token_id=tokenizer.pad_token_id)
    else:  # ModernBertConfig's defaults are ModernBERT-base's shape
        config = ModernBertConfig(pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                                  sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                                  eos_token_id=tokenizer.sep_token_id)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def matmul_peak_tflops(size: int = 8192, repeats: int = 50) -> float:
    """Measured bf16 matrix-multiply throughput of this GPU (the MFU denominator)."""
    a = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e12


def training_tflops(model_dir: str, tokens_per_s: float) -> float:
    """Model FLOPs of training, 6 x (non-embedding parameters) per real token (attention's
    quadratic term left out, so MFU is a slight underestimate)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return 6 * params * tokens_per_s / 1e12


def data_keys(args: argparse.Namespace) -> dict:
    keys = {"name": args.data, "text": args.text, "label": args.label}
    return keys | ({"text_pair": args.text_pair} if args.text_pair else {})


def rows_for(args: argparse.Namespace) -> tuple[dict, dict]:
    """The core's rows (its fixed split, first N training / M validation rows), class ids as the core numbers them."""
    task = load(build_job({"data": data_keys(args)}).data)
    args.num_labels = task.num_labels
    out = []
    for role, n in (("train", args.rows), ("val", args.eval_rows)):
        texts, pairs = task.texts(role, n)
        split = {"text": texts, "label": task.parts[role].labels[:n].tolist()}
        out.append(split | ({"text_pair": pairs} if pairs is not None else {}))
    return out[0], out[1]


def encode(tok: object, split: dict, max_len: int, **kwargs: object) -> object:
    if "text_pair" in split:
        return tok(split["text"], split["text_pair"], truncation="longest_first", max_length=max_len,  # type: ignore[operator]
                   **kwargs)
    return tok(split["text"], truncation=True, max_length=max_len, **kwargs)  # type: ignore[operator]


def bench_hf_trainer(args: argparse.Namespace, train: dict, val: dict) -> dict:
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    def enc(batch: dict) -> dict:
        return encode(tok, batch, args.max_len)  # type: ignore[return-value]

    texts = [c for c in ("text", "text_pair") if c in train]
    train_ds = datasets.Dataset.from_dict(train).map(enc, batched=True, remove_columns=texts)
    val_ds = datasets.Dataset.from_dict(val).map(enc, batched=True, remove_columns=texts)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels,
                                                               dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch, per_device_eval_batch_size=64,
            learning_rate=args.lr, lr_scheduler_type="constant", num_train_epochs=1, seed=args.seed,
            weight_decay=0.0, report_to=[], save_strategy="no", eval_strategy="no", logging_steps=50,
            dataloader_num_workers=0, disable_tqdm=True, use_cpu=DEVICE.type == "cpu", bf16=BF16,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=train_ds,
                          data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        metrics = trainer.train().metrics
        seconds = time.perf_counter() - t0
        pred = trainer.predict(val_ds)
    tokens = sum(len(x) for x in train_ds["input_ids"])
    return {"name": "hf-trainer", "seconds": seconds, "samples_per_s": len(train_ds) / seconds,
            "trainer_reported_samples_per_s": metrics["train_samples_per_second"],
            "tokens_per_s": tokens / seconds,
            "val_acc": float((pred.predictions.argmax(-1) == np.asarray(val["label"])).mean())}


def bench_users_loop(args: argparse.Namespace, train: dict, val: dict) -> dict:
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    def tensors(split: dict) -> TensorDataset:
        enc = encode(tok, split, args.max_len, padding="max_length", return_tensors="pt")
        types = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))  # type: ignore[attr-defined]
        return TensorDataset(enc["input_ids"], enc["attention_mask"], types, torch.tensor(split["label"]))  # type: ignore[index]

    train_ds, val_ds = tensors(train), tensors(val)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels,
                                                               dtype=torch.float32).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(train_ds, batch_size=args.batch, shuffle=True)
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=BF16)
    model.train()
    t0 = time.perf_counter()
    for ids, mask, types, labels in loader:
        with autocast:
            loss = model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE), token_type_ids=types.to(DEVICE),
                         labels=labels.to(DEVICE)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"loss {loss.item():.4f}", end="\r", file=sys.stderr)  # what the users' loop logs each step
    seconds = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad(), autocast:
        for ids, mask, types, labels in DataLoader(val_ds, batch_size=64):
            logits = model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE),
                           token_type_ids=types.to(DEVICE)).logits
            correct += int((logits.argmax(-1).cpu() == labels).sum())
    tokens = int(train_ds.tensors[1].sum())
    return {"name": "users-loop", "seconds": seconds, "samples_per_s": len(train_ds) / seconds,
            "tokens_per_s": tokens / seconds, "val_acc": correct / len(val_ds)}


def bench_core(args: argparse.Namespace, pooling: str, cache: Path) -> dict:
    from trainer.loop import run_job

    cfg = build_job({"model": args.model, "pooling": pooling, "max_len": args.max_len, "batch_size": args.batch,
                     "lr": args.lr, "epochs": 1, "seed": args.seed,
                     "data": data_keys(args) | {"limit": args.rows, "eval_limit": args.eval_rows}})
    with tempfile.TemporaryDirectory() as out:
        result = run_job(cfg, Path(out), cache_dir=cache)
    return {"name": f"sweep-core ({pooling})", "seconds": result["train_seconds"],
            "samples_per_s": result["train_samples_per_s"], "tokens_per_s": result["train_tokens_per_s"],
            "val_acc": result["val_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--text", default="text", help="the text column (data.text)")
    parser.add_argument("--text-pair", default=None, help="a second text column: a sentence-pair task (data.text_pair)")
    parser.add_argument("--label", default="label", help="the label column (data.label)")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", nargs="*", default=["hf-trainer", "users-loop", "pooler", "cls"])
    parser.add_argument("--json", type=Path, default=Path("bench/results/trainer_vs_hf.json"))
    parser.add_argument("--arch", choices=["pretrained", "bert-base", "modernbert-base"], default="pretrained",
                        help="bert-base / modernbert-base: that architecture, randomly initialised from its config, "
                             "with --model's tokenizer (no Hub needed; for speed only, not accuracy)")
    args = parser.parse_args()
    if args.arch == "modernbert-base" and "pooler" in args.only:
        args.only.remove("pooler")  # ModernBERT has no pooler; the Trainer's ModernBERT head pools by itself

    train, val = rows_for(args)
    results = []
    with tempfile.TemporaryDirectory() as cache:
        if args.arch != "pretrained":
            args.model = build_architecture(args.arch, args.model, Path(cache) / args.arch, args.seed)
        for name in args.only:
            print(f"== {name}", file=sys.stderr, flush=True)
            if name == "hf-trainer":
                results.append(bench_hf_trainer(args, train, val))
            elif name == "users-loop":
                results.append(bench_users_loop(args, train, val))
            else:
                results.append(bench_core(args, name, Path(cache)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        if DEVICE.type == "cuda":
            peak = matmul_peak_tflops()
            for r in results:
                r["model_tflops"] = training_tflops(args.model, r["tokens_per_s"])
                r["mfu"] = r["model_tflops"] / peak
            print(f"bf16 matmul peak: {peak:.0f} TFLOP/s", file=sys.stderr)
    base = next((r for r in results if r["name"] == "hf-trainer"), results[0])
    import transformers

    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "bf16": BF16,
            "torch": torch.__version__, "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(["python"] + sys.argv), "args": vars(args) | {"json": str(args.json)}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"| run | train samples/s | real tokens/s | vs Trainer | val acc ({args.eval_rows} rows) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        mfu = f" | MFU {r['mfu']:.1%}" if "mfu" in r else ""
        print(f"| {r['name']} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
              f"{r['samples_per_s'] / base['samples_per_s']:.2f}x | {r['val_acc']:.4f}{mfu} |")


if __name__ == "__main__":
    main()
