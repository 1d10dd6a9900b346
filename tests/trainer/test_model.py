from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import ARCHS, build_tokenizer
from trainer.config import ConfigError, build_job
from trainer.model import Classifier, check_encoder, load_encoder, masked_mean


def _batch(texts: list[str]) -> dict[str, torch.Tensor]:
    enc = build_tokenizer()(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_each_pooling_gives_logits(tiny_models: dict[str, Path], arch: str, pooling: str) -> None:
    encoder = load_encoder(str(tiny_models[arch]))
    cfg = build_job({"model": str(tiny_models[arch]), "pooling": pooling, "max_len": 32})
    if pooling == "pooler" and arch == "modernbert":
        with pytest.raises(ConfigError, match="pooling: 'pooler' is not available .* expected 'cls' or 'mean'"):
            check_encoder(cfg, encoder, build_tokenizer())
        return
    check_encoder(cfg, encoder, build_tokenizer())
    model = Classifier(encoder, num_labels=3, pooling=pooling, dropout=0.1).eval()
    logits = model(**_batch(["good movie", "a dull and boring film with a weak plot"]))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_pooler_uses_the_encoders_pooler(tiny_models: dict[str, Path]) -> None:
    model = Classifier(load_encoder(str(tiny_models["bert"])), num_labels=2, pooling="pooler", dropout=0.0).eval()
    batch = _batch(["good movie"])
    out = model.encoder(**model.encoder_inputs(**batch))
    torch.testing.assert_close(model(**batch), model.head(out.pooler_output))


@pytest.mark.parametrize(("arch", "accepts"), [("bert", True), ("roberta", True), ("modernbert", False)])
def test_token_type_ids_go_only_to_encoders_that_accept_them(
    tiny_models: dict[str, Path], arch: str, accepts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Classifier(load_encoder(str(tiny_models[arch])), num_labels=2, pooling="cls", dropout=0.0)
    assert model.accepts_token_type_ids is accepts
    seen: dict[str, object] = {}
    original = model.encoder.forward

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(model.encoder, "forward", spy)
    model(**_batch(["good movie"]))
    assert ("token_type_ids" in seen) is accepts
    if accepts:
        assert not seen["token_type_ids"].any()  # type: ignore[union-attr]


def test_masked_mean_ignores_padded_positions() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5)
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
    expected = torch.stack([hidden[0].mean(0), hidden[1, :3].mean(0), hidden[2, 0]])
    changed = hidden.clone()
    changed[mask == 0] = 1e6 * torch.randn(int((mask == 0).sum()), 5)
    torch.testing.assert_close(masked_mean(hidden, mask), expected)
    torch.testing.assert_close(masked_mean(changed, mask), expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_mean_pooled_logits_do_not_depend_on_padding(tiny_models: dict[str, Path], arch: str) -> None:
    model = Classifier(load_encoder(str(tiny_models[arch])), num_labels=2, pooling="mean", dropout=0.0).eval()
    alone = model(**_batch(["good movie"]))
    padded = model(**_batch(["good movie", "the plot and the actor and the script were dull and weak"]))[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


def test_max_len_above_the_models_maximum_is_refused(tiny_models: dict[str, Path]) -> None:
    encoder = load_encoder(str(tiny_models["bert"]))
    cfg = build_job({"model": str(tiny_models["bert"]), "max_len": 65})
    with pytest.raises(ConfigError, match=r"max_len: 65 is out of range; expected 8 <= max_len <= 64"):
        check_encoder(cfg, encoder, build_tokenizer())


def test_sdpa_attention_is_used(tiny_models: dict[str, Path]) -> None:
    for arch in ARCHS:
        assert load_encoder(str(tiny_models[arch])).config._attn_implementation == "sdpa"
