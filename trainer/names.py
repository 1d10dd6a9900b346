"""The one table of users' names for job keys: the HF Trainer's, W&B sweep files', users' scripts'.

Used for the hint after an unknown key (`nearest`) and to read a W&B sweep file's parameters
(`sweeper.wandb_sweep.job_key`). `warmup` alone is in neither list: the HF Trainer's
`warmup_ratio` is a fraction of the training steps and its `warmup_steps` a number of steps
(from transformers 5 also a fraction when below 1), so a bare `warmup` could mean either; the
hint names both.
"""

from __future__ import annotations

import difflib

USER_NAMES: dict[str, str] = {
    # the HF Trainer's TrainingArguments (and run_classification.py's model and data arguments)
    "learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size", "gradient_accumulation_steps": "grad_accum",
    "max_grad_norm": "clip", "lr_scheduler_type": "scheduler", "model_name_or_path": "model",
    "max_seq_length": "max_len", "classifier_dropout": "dropout", "dataset_name": "data.name",
    # users' scripts and W&B examples
    "num_epochs": "epochs", "n_epochs": "epochs", "max_length": "max_len", "bs": "batch_size",
    "train_batch_size": "batch_size", "grad_clip": "clip", "wd": "weight_decay", "lr_scheduler": "scheduler",
    "model_name": "model", "pretrained_model": "model", "pool": "pooling", "dataset": "data.name",
}
# Names that stand for more than one job key: the hint names each.
AMBIGUOUS: dict[str, tuple[str, ...]] = {"warmup": ("warmup_ratio", "warmup_steps")}


def nearest(key: str, choices: list[str]) -> str:
    """The hint after an unknown `key`: the job key a user's name stands for (or the closest
    spelling), then every valid key."""
    prefix, _, leaf = key.rpartition(".")
    meant = [USER_NAMES[leaf]] if leaf in USER_NAMES else list(AMBIGUOUS.get(leaf, ()))
    meant = [m if m.startswith("data.") or not prefix else f"{prefix}.{m}" for m in meant]
    # data.name among the top-level keys is under `data` (data: {name: ...})
    close = ([m for m in meant if m in choices or m.partition(".")[0] in choices]
             or difflib.get_close_matches(key, choices, n=1, cutoff=0.5))
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}valid keys: {', '.join(choices)}"
