"""Encoder + pooling + dropout + linear head, for any Hugging Face encoder.

What the encoder accepts (`token_type_ids`), whether it has a pooler and how long its inputs
may be are read from the model itself, never from its name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import MIN_MAX_LEN, ConfigError, JobConfig
from trainer.io import write_json
from trainer.jobdir import CLASSIFIER_FILE, WEIGHTS_FILE  # noqa: F401 - re-exported
from trainer.maxlen import limits_of, out_of_range
from trainer.modeling_sweep import accepts_token_type_ids, pool
from trainer.modeling_sweep import masked_mean as masked_mean  # re-exported: one pooling for training and export

log = logging.getLogger(__name__)



class Classifier(nn.Module):
    def __init__(self, encoder: Any, *, num_labels: int, pooling: str, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)
        self.accepts_token_type_ids = accepts_token_type_ids(encoder)

    def encoder_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, *, padded: bool = True) -> dict[str, torch.Tensor]:
        """What the encoder is given. `padded=False` (the caller knows the batch has no padding)
        leaves the mask out: an encoder given one checks it on the device (`mask.all()`, a host
        sync per forward) only to find it has nothing to mask."""
        inputs = {"input_ids": input_ids}
        if padded:
            inputs["attention_mask"] = attention_mask
        if self.accepts_token_type_ids:
            # A pair brings its segments; a single text is segment 0 throughout.
            inputs["token_type_ids"] = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return inputs

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
              *, padded: bool = True, **encoder_kwargs: Any) -> tuple[torch.Tensor, Any]:
        """The pooled vector the head sees (before dropout), and the encoder's output."""
        out = self.encoder(**self.encoder_inputs(input_ids, attention_mask, token_type_ids, padded=padded),
                           **encoder_kwargs)
        return pool(out, attention_mask, self.pooling), out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, *, padded: bool = True) -> torch.Tensor:
        pooled, _ = self.embed(input_ids, attention_mask, token_type_ids, padded=padded)
        return self.head(self.dropout(pooled))


def load_encoder(path: str, *, pretrained: bool = True, attention: str = "sdpa") -> nn.Module:
    """The encoder with SDPA attention where the architecture supports it (or `attention`), its
    weights in float32 whatever dtype the checkpoint was saved in.

    transformers 5 loads a checkpoint in its stored dtype (and `from_config` follows the config's
    `dtype`): a model saved in float16 or bfloat16 would train with half-precision weights and
    optimizer updates (float16 fails on the float32 head; bfloat16 under autocast runs and loses
    small updates). The weights stay float32; `precision` decides the compute dtype (autocast).
    """
    from transformers import AutoConfig, AutoModel

    load = AutoModel.from_pretrained if pretrained else AutoModel.from_config
    source: Any = path if pretrained else AutoConfig.from_pretrained(path)
    try:
        return load(source, attn_implementation=attention, dtype=torch.float32)
    except (ValueError, ImportError) as exc:  # the architecture has no SDPA path
        log.info("SDPA attention not available for %s (%s); using the default", path, exc)
        return load(source, dtype=torch.float32)


def model_max_len(encoder: nn.Module, tokenizer: Any) -> int:
    """Longest input the model takes: the tokenizer's limit where it gives a real one, else
    the position table (RoBERTa's 514 positions hold 512 tokens; its tokenizer says so)."""
    found = _max_len(encoder, tokenizer)
    return found[0] if found is not None else 10**9


def _max_len(encoder: nn.Module, tokenizer: Any) -> tuple[int, str] | None:
    return limits_of(getattr(encoder.config, "max_position_embeddings", None),
                     getattr(tokenizer, "model_max_length", None), config="its config", tokenizer="its tokenizer")


def check_encoder(cfg: JobConfig, encoder: nn.Module, tokenizer: Any) -> None:
    """Checks that need the model: its maximum length, and whether it has a pooler."""
    limit = _max_len(encoder, tokenizer)
    if limit is not None and cfg.max_len > limit[0]:
        raise ConfigError(out_of_range(cfg.max_len, low=MIN_MAX_LEN, limit=limit, model=cfg.model))
    if cfg.pooling == "pooler" and getattr(encoder, "pooler", None) is None:
        raise ConfigError(
            f"pooling: 'pooler' is not available for model {cfg.model!r} ({type(encoder).__name__} has no "
            "pooler); expected 'cls' or 'mean'"
        )


def save_model_files(directory: Path, model: Classifier, tokenizer: Any, labels: list[str] | None = None) -> None:
    """Encoder config, tokenizer and head description: what loading the weights needs."""
    directory.mkdir(parents=True, exist_ok=True)
    config: Any = model.encoder.config
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    spec = {"num_labels": model.head.out_features, "pooling": model.pooling, "dropout": model.dropout.p,
            "labels": labels or [str(i) for i in range(model.head.out_features)]}
    write_json(directory / CLASSIFIER_FILE, spec)


def label_names(directory: Path) -> list[str]:
    """The class names saved with the model (the data set's, or "0", "1", … where it has none)."""
    spec = json.loads((directory / CLASSIFIER_FILE).read_text())
    return list(spec.get("labels") or [str(i) for i in range(spec["num_labels"])])


def load_classifier(
    directory: Path, weights: Path, device: str = "cpu", *, attention: str = "sdpa"
) -> tuple[Classifier, Any]:
    """A saved classifier and its tokenizer, ready for inference (no training code involved)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    spec = json.loads((directory / CLASSIFIER_FILE).read_text())
    encoder = load_encoder(str(directory), pretrained=False, attention=attention)
    model = Classifier(encoder, num_labels=spec["num_labels"], pooling=spec["pooling"], dropout=spec["dropout"])
    model.load_state_dict(load_file(str(weights), device=device))
    return model.to(device).eval(), AutoTokenizer.from_pretrained(directory)
