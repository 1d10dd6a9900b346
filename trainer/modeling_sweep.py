"""The classifier as a Hugging Face model: any encoder, a pooling, dropout and a linear head.

This file is self-contained (torch and transformers only). `sweep export` copies it next to
the exported weights, where `AutoModelForSequenceClassification.from_pretrained(dir,
trust_remote_code=True)` loads it; the training core imports its pooling from here, so the
exported model and the trained one pool the same way.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("cls", "mean", "pooler")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only: padded positions contribute nothing, whatever they hold."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    return summed / weights.sum(dim=1).clamp(min=1.0)


def pool(out: Any, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text: the first token, the mean of the real tokens, or the encoder's pooler."""
    if pooling == "cls":
        return out.last_hidden_state[:, 0]
    if pooling == "mean":
        return masked_mean(out.last_hidden_state, attention_mask)
    return out.pooler_output


def accepts_token_type_ids(encoder: nn.Module) -> bool:
    return "token_type_ids" in inspect.signature(encoder.forward).parameters


class SweepClassifierConfig(PretrainedConfig):
    """The encoder's own configuration (as a dict, with its `model_type`) plus the head's."""

    model_type = "sweep_classifier"

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        pooling: str = "cls",
        classifier_dropout: float = 0.1,
        max_len: int | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.max_len = max_len
        # What the model was trained on: one text, or pairs (classify {"text": …, "text_pair": …}).
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")

    def encoder_config(self) -> PretrainedConfig:
        values = dict(self.encoder)
        config = AutoConfig.for_model(values.pop("model_type"), **values)
        implementation = getattr(self, "_attn_implementation", None)
        if implementation:
            config._attn_implementation = implementation
        return config


class SweepClassifierModel(PreTrainedModel):
    config_class = SweepClassifierConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: SweepClassifierConfig) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder_config())
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, int(config.num_labels or 2))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "head", None):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **_: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if accepts_token_type_ids(self.encoder):
            # Sentence pairs: the tokenizer's segments (as in training); a single text: segment 0.
            inputs["token_type_ids"] = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        if output_attentions:
            inputs["output_attentions"] = True
        if output_hidden_states:
            inputs["output_hidden_states"] = True
        out = self.encoder(**inputs)
        logits = self.head(self.dropout(pool(out, attention_mask, self.config.pooling)))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=getattr(out, "hidden_states", None),
                                        attentions=getattr(out, "attentions", None))
