"""Inference with a finished job's best checkpoint: class probabilities, the pooled vectors
the head sees, and last-layer attention.

Texts are tokenized exactly as in training (truncation at the job's max_len) and batched by
length with dynamic padding, as evaluation is.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.data import collate, encode_texts, eval_batches
from trainer.jobdir import MODEL_DIR, WEIGHTS_FILE
from trainer.model import Classifier, load_classifier


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(job_dir: Path, *, device: torch.device | None = None, attention: str = "sdpa") -> tuple[Classifier, Any]:
    """The job's best classifier (eval mode) and its tokenizer."""
    device = device or default_device()
    return load_classifier(job_dir / MODEL_DIR, job_dir / WEIGHTS_FILE, str(device), attention=attention)


DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def evaluation_dtype(job_dir: Path) -> torch.dtype:
    """The compute dtype the job evaluated in (result.json's `precision`): predictions made in
    another one (fp32 after bf16 autocast) disagree with the stored ones on some examples."""
    from trainer.jobdir import RESULT_FILE

    try:
        precision = json.loads((job_dir / RESULT_FILE).read_text()).get("precision")
    except (OSError, ValueError, AttributeError):
        precision = None
    return DTYPES.get(str(precision), torch.float32)


def _autocast(device: torch.device, dtype: torch.dtype) -> Any:
    return nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)


@dataclass(frozen=True)
class Outputs:
    probs: np.ndarray  # (n, classes), float32, in the texts' order
    embeddings: np.ndarray | None  # (n, hidden): the pooled vectors, where asked for


@torch.inference_mode()
def predict(
    model: Classifier, tokenizer: Any, texts: list[str], *, max_len: int, batch_size: int = 64,
    embeddings: bool = False, pairs: list[str] | None = None, dtype: torch.dtype = torch.float32,
) -> Outputs:
    """Class probabilities of `texts` (with `pairs`: of the pairs (texts[i], pairs[i]), for a
    model trained on sentence pairs), computed in `dtype` (autocast; `evaluation_dtype(job_dir)`
    to agree with the job's own evaluation)."""
    device = next(model.parameters()).device
    split = encode_texts(tokenizer, texts, max_len, pairs)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    probs = np.zeros((len(texts), model.head.out_features), dtype=np.float32)
    pooled_all = np.zeros((len(texts), model.head.in_features), dtype=np.float32) if embeddings else None
    for rows in eval_batches(split, batch_size):
        batch = collate(split, rows, pad_id)
        types = batch.get("token_type_ids")
        with _autocast(device, dtype):
            pooled, _ = model.embed(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                    types.to(device) if types is not None else None)
            logits = model.head(pooled)
        probs[rows] = logits.float().softmax(-1).cpu().numpy()
        if pooled_all is not None:
            pooled_all[rows] = pooled.float().cpu().numpy()
    return Outputs(probs=probs, embeddings=pooled_all)


@torch.inference_mode()
def last_layer_attention(model: Classifier, tokenizer: Any, text: str, *, max_len: int,
                         pair: str | None = None) -> tuple[list[str], np.ndarray]:
    """Tokens and the last layer's attention averaged over heads, (tokens, tokens): row i is
    where token i attends; with `pair`, of the pair tokenized as in training. The model must
    use eager attention (`load(..., attention="eager")`)."""
    device = next(model.parameters()).device
    enc = tokenizer([text], [pair] if pair is not None else None, truncation=True, max_length=max_len,
                    return_tensors="pt")
    types = enc.get("token_type_ids")
    _, out = model.embed(enc["input_ids"].to(device), enc["attention_mask"].to(device),
                         types.to(device) if types is not None else None, output_attentions=True)
    if not getattr(out, "attentions", None):
        raise RuntimeError(f"{type(model.encoder).__name__} returned no attention weights; load it with eager attention")
    weights = out.attentions[-1][0].float().mean(dim=0).cpu().numpy()
    return tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist()), weights
