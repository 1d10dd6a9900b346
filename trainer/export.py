"""A job's best model in Hugging Face format: config, weights, tokenizer, modeling code, card.

The head (pooling + dropout + linear on any encoder) is not one of transformers' own classes,
so the export carries `modeling_sweep.py` (torch + transformers only) and maps the auto
classes to it; it loads with

    AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)
    AutoTokenizer.from_pretrained(DIR, trust_remote_code=True)  # else transformers asks about the config's code

and the tokenizer's `model_max_length` is the job's max_len, so `truncation=True` cuts texts
where training did. The directory is built beside DIR and renamed into place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from trainer import modeling_sweep
from trainer.config import DATA_SEED, JobConfig
from trainer.io import atomic_dir, check_output_dir, write_json
from trainer.jobdir import CLASSIFIER_FILE, MODEL_DIR, WEIGHTS_FILE
from trainer.model import label_names

MARKER = "sweep_job.json"  # what says a directory is an export (and may be replaced by a new one)
PROBE_TEXTS = (
    "An absolute delight from start to finish; the cast is wonderful.",
    "Dull, overlong and badly acted. I wanted my two hours back.",
    "It was fine.",
    "x",
)
PROBE_PAIRS = (  # second texts for a model trained on pairs
    "A wonderful film, I loved every minute.",
    "Dull and overlong.",
    "It was fine.",
    "y",
)


def export(job_dir: Path, config: JobConfig, result: dict[str, Any], out: Path, *, force: bool = False) -> dict[str, Any]:
    """Write the export to `out` (replacing an earlier export there) and check that it loads back
    with transformers alone and gives the training code's probabilities; returns that check."""
    check_output_dir(out, marker=MARKER, force=force)
    with atomic_dir(out) as tmp:
        _write(job_dir, config, result, tmp)
        check = roundtrip(job_dir, tmp, config.max_len, config.data.text_pair is not None)
        write_json(tmp / MARKER, {"job_dir": str(job_dir.resolve()), "job_id": job_dir.name, "config": config.to_dict(),
                                  "result": {k: v for k, v in result.items() if k != "config"}, "roundtrip": check})
    return check


def _write(job_dir: Path, config: JobConfig, result: dict[str, Any], dest: Path) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoTokenizer

    model_dir = job_dir / MODEL_DIR
    spec = json.loads((model_dir / CLASSIFIER_FILE).read_text())
    labels = label_names(model_dir)
    encoder = AutoConfig.from_pretrained(model_dir).to_dict()
    for key in ("architectures", "_name_or_path", "id2label", "label2id"):  # the job's, not the encoder's
        encoder.pop(key, None)
    hf_config = modeling_sweep.SweepClassifierConfig(
        encoder=encoder, pooling=spec["pooling"], classifier_dropout=spec["dropout"], max_len=config.max_len,
        text_column=config.data.text, text_pair_column=config.data.text_pair,
        num_labels=spec["num_labels"], id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        architectures=["SweepClassifierModel"],
        auto_map={"AutoConfig": "modeling_sweep.SweepClassifierConfig",
                  "AutoModel": "modeling_sweep.SweepClassifierModel",
                  "AutoModelForSequenceClassification": "modeling_sweep.SweepClassifierModel"},
    )
    hf_config.save_pretrained(dest)
    shutil.copyfile(modeling_sweep.__file__, dest / "modeling_sweep.py")
    weights = load_file(str(job_dir / WEIGHTS_FILE))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(dest / "model.safetensors"), metadata={"format": "pt"})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.model_max_length = config.max_len
    tokenizer.save_pretrained(dest)
    (dest / "README.md").write_text(model_card(job_dir.name, config, result, labels))


def roundtrip(job_dir: Path, export_dir: Path, max_len: int, pairs: bool = False) -> dict[str, Any]:
    """Probabilities of the export (loaded by transformers alone) against the job's own
    checkpoint (loaded by the training code) on a few texts (or pairs): the largest difference."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainer import inference

    texts = list(PROBE_TEXTS)
    seconds = list(PROBE_PAIRS) if pairs else None
    model, tokenizer = inference.load(job_dir, device=torch.device("cpu"))
    ours = inference.predict(model, tokenizer, texts, max_len=max_len, pairs=seconds).probs
    exported = AutoModelForSequenceClassification.from_pretrained(export_dir, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(export_dir, trust_remote_code=True)
    with torch.inference_mode():
        enc = tok(texts, seconds, truncation="longest_first", padding=True, return_tensors="pt")
        theirs = exported(**enc).logits.float().softmax(-1).numpy()
    diff = float(np.abs(ours - theirs).max())
    if not diff <= 1e-5:
        raise RuntimeError(f"the export's probabilities differ from the job's by {diff:.2e} (> 1e-5); not written")
    return {"texts": len(texts), "max_abs_diff": diff}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return "—" if value is None else str(value)


def model_card(job_id: str, config: JobConfig, result: dict[str, Any], labels: list[str]) -> str:
    """The export's README.md: front matter for the Hub, what the model is, its results, its data,
    its training configuration and how to use it."""
    rows = result.get("rows", {})
    lines = [
        f"# {Path(config.model_path).name} text classifier (sweep job `{job_id}`)",
        "",
        f"Fine-tuned by `sweep` from `{config.model_path}`: "
        f"{config.pooling} pooling, dropout {config.dropout}, a linear head over {len(labels)} classes "
        f"({', '.join(labels)}). Job status: **{result.get('status')}**; the weights are the best validation "
        f"epoch's ({result.get('best_epoch')} of {config.epochs}).",
        "",
        "## Results",
        "",
        "| Split | Rows | Accuracy | Loss | ECE (15 bins) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| validation | {rows.get('val', '—')} | {_fmt(result.get('val_acc'))} | — | — |",
        f"| test | {rows.get('test', '—')} | {_fmt(result.get('test_acc'))} | {_fmt(result.get('test_loss'))} "
        f"| {_fmt(result.get('test_ece'))} |",
        "",
        f"Majority-class accuracy on validation: {_fmt(result.get('majority_class_acc'))}. One run, seed "
        f"{config.seed}: compare configurations over several seeds (`sweep report`) before drawing conclusions.",
        "",
        "## Data",
        "",
        _data_text(config, result),
        "",
        "## Training configuration",
        "",
        "| Key | Value |",
        "| --- | --- |",
        *_config_rows(config),
        "",
        *_use(config),
    ]
    return "\n".join(_front_matter(config) + lines)


def _front_matter(config: JobConfig) -> list[str]:
    front = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:", "- sweep",
             "- text-classification"]
    if not Path(config.model_path).exists():  # a Hub model
        front.append(f"base_model: {config.model_path}")
    if not Path(config.data.name).exists():  # a Hub data set
        front += ["datasets:", f"- {config.data.name}"]
    return front + ["metrics:", "- accuracy", "---", ""]


def _data_text(config: JobConfig, result: dict[str, Any]) -> str:
    """Which data, split how, which columns, how many rows."""
    rows = result.get("rows", {})
    data_cfg = config.data
    if isinstance(data_cfg.split, str):
        sources = (result.get("data") or {}).get("splits") or {}
        where = ", ".join(f"{role} from `{src}`" for role, src in sources.items()) or "train, validation, test"
        split_text = f"its own splits ({where}), each shuffled with the fixed data seed {DATA_SEED}"
    else:
        fractions = " / ".join(f"{f:g}" for f in data_cfg.split)
        split_text = (f"train and test merged, shuffled with the fixed data seed {DATA_SEED} and split "
                      f"train / validation / test = {fractions}")
    subset = f" (configuration `{data_cfg.config}`)" if data_cfg.config else ""
    columns = (f"text columns `{data_cfg.text}` and `{data_cfg.text_pair}` (sentence pairs)" if data_cfg.text_pair
               else f"text column `{data_cfg.text}`")
    caps = [f"data.limit {config.data.limit}" if config.data.limit else "",
            f"data.eval_limit {config.data.eval_limit}" if config.data.eval_limit else ""]
    limits = f" (the first rows of each split: {', '.join(c for c in caps if c)})" if any(caps) else ""
    return (f"`{config.data.name}`{subset}: {split_text}; {columns}, label column `{config.data.label}`. "
            f"Rows used: {rows.get('train', '—')} train, {rows.get('val', '—')} validation, {rows.get('test', '—')} test"
            f"{limits}.")


def _config_rows(config: JobConfig) -> list[str]:
    cfg = config.to_dict()
    data = cfg.pop("data")
    return [*(f"| {k} | {_fmt(v)} |" for k, v in cfg.items()), *(f"| data.{k} | {_fmt(v)} |" for k, v in data.items())]


def _use(config: JobConfig) -> list[str]:
    """How to load and run the export: transformers alone, then a pipeline."""
    data_cfg = config.data
    return [
        "## Use",
        "",
        "The head is defined in `modeling_sweep.py` (torch and transformers only), hence `trust_remote_code`:",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        'model = AutoModelForSequenceClassification.from_pretrained("PATH", trust_remote_code=True).eval()',
        'tokenizer = AutoTokenizer.from_pretrained("PATH", trust_remote_code=True)',
        *(['batch = tokenizer(["What a film!"], ["A great one."], truncation=True, padding=True, return_tensors="pt")']
          if data_cfg.text_pair else
          ['batch = tokenizer(["What a film!"], truncation=True, padding=True, return_tensors="pt")']),
        "with torch.inference_mode():",
        "    probs = model(**batch).logits.softmax(-1)",
        "print({model.config.id2label[i]: float(p) for i, p in enumerate(probs[0])})",
        "```",
        "",
        "or, with a pipeline:",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classify = pipeline("text-classification", model="PATH", trust_remote_code=True)',
        *(['classify({"text": "What a film!", "text_pair": "A great one."}, truncation=True, top_k=None)']
          if data_cfg.text_pair else ['classify(["What a film!"], truncation=True, top_k=None)']),
        "```",
        "",
        f"`truncation=True` cuts at {config.max_len} tokens, the length it was trained at "
        "(the tokenizer's `model_max_length`)"
        + (f"; a pair is the two texts (`{data_cfg.text}`, `{data_cfg.text_pair}`) as trained, the longer one "
           "truncated first." if data_cfg.text_pair else "."),
        "",
    ]
