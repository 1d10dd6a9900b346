"""The longest input a model takes, read from its files without loading it, and the message for
a `max_len` above it. Torch-free: the job file's checks and the pre-flight use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_CONFIG_FILE = "config.json"  # a Hugging Face model directory's (the job directory's is jobdir.CONFIG_FILE)
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > 1 << 20:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_dir(value: str) -> bool:
    try:
        return Path(value).expanduser().is_dir()
    except (OSError, ValueError):  # ENAMETOOLONG, a NUL byte
        return False


def limits_of(positions: Any, tokenizer_limit: Any, *, config: str = "its config.json",
              tokenizer: str = "its tokenizer_config.json") -> tuple[int, str] | None:
    """The smaller of a model's position table and its tokenizer's limit (a tokenizer's "no
    limit", 10^30 and such, is ignored), with what said it (`config`, `tokenizer`: where each was
    read); None when neither says anything."""
    found = []
    if isinstance(positions, int) and not isinstance(positions, bool) and positions > 0:
        found.append((positions, f"{config}: max_position_embeddings {positions}"))
    if isinstance(tokenizer_limit, int) and not isinstance(tokenizer_limit, bool) and 0 < tokenizer_limit < 10**6:
        found.append((tokenizer_limit, f"{tokenizer}: model_max_length {tokenizer_limit}"))
    return min(found) if found else None


def local_max_len(path: str) -> tuple[int, str] | None:
    """A local model's longest input, read from its config.json (and its tokenizer's limit, as
    trainer.model.model_max_len reads it from the loaded model), with where it was read; None when
    the model is not a local directory or says nothing."""
    if not _is_dir(path):
        return None
    local = Path(path).expanduser()
    return limits_of(_read_json(local / MODEL_CONFIG_FILE).get("max_position_embeddings"),
                     _read_json(local / TOKENIZER_CONFIG_FILE).get("model_max_length"))


def known_max_len(path: str) -> tuple[int, str] | None:
    """A model's longest input where its files are here without a download: a local directory,
    or a Hub id in the local Hugging Face cache (never the network)."""
    if _is_dir(path):
        return local_max_len(path)
    if "\n" in path or "\0" in path or len(path) > 300:
        return None
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> dict[str, Any]:
        try:
            found = try_to_load_from_cache(path, name)
        except Exception:  # not a well-formed Hub id: the model's own check says so
            return {}
        return _read_json(Path(found)) if isinstance(found, str) else {}

    return limits_of(cached(MODEL_CONFIG_FILE).get("max_position_embeddings"),
                     cached(TOKENIZER_CONFIG_FILE).get("model_max_length"), config="its cached config.json",
                     tokenizer="its cached tokenizer_config.json")


def above_any(max_len: int, *, low: int, high: int, path: str | None) -> str:
    """The message for a max_len outside [low, high] (`high`: what no encoder here exceeds),
    naming the model's own maximum where its files say it."""
    limit = known_max_len(path) if path else None
    if limit is not None and limit[0] <= high:
        return out_of_range(max_len, low=low, limit=limit)
    return (f"max_len: {max_len} is out of range; expected {low} <= max_len <= {high}, and at most the model's "
            "maximum (its max_position_embeddings)")


def out_of_range(max_len: int, *, low: int, limit: tuple[int, str], model: str | None = None) -> str:
    """`max_len: N is out of range; ...` for a model whose maximum is known: the number, and what
    said it."""
    whose = f"the maximum of model {model!r}" if model else "the model's maximum"
    return f"max_len: {max_len} is out of range; expected {low} <= max_len <= {limit[0]}, {whose} ({limit[1]})"
