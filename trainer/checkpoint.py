"""What a job directory holds, written atomically so a killed job never leaves a torn file.

- `config.json`: the resolved configuration; a directory belongs to one job.
- `best.safetensors`: the classifier's weights at the best validation epoch (loads with
  `trainer.model.load_classifier`, or plain torch + transformers, see the README).
- `last.pt`: the last finished epoch's full state (weights, optimizer, scheduler, scaler, RNG,
  history), from which an interrupted job resumes.
- `test_predictions.npz`: per-example test rows, labels and class probabilities.
"""

from __future__ import annotations

import fcntl
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import ConfigError, JobConfig, defaults_filled, id_fields
from trainer.io import atomic_write, write_json
from trainer.jobdir import PREDICTIONS_FILE, STATE_FILE  # noqa: F401 - re-exported
from trainer.model import WEIGHTS_FILE, Classifier


class JobBusy(RuntimeError):
    """Another live process is running this job directory."""


_held_locks: dict[Path, Any] = {}


def lock(out_dir: Path) -> None:
    """Hold an exclusive lock on the job directory for the life of this process.

    The kernel drops it when the process dies (even by kill -9), so a second runner of the
    same directory is refused only while the first one is alive.
    """
    path = (out_dir / ".lock").resolve()
    if path in _held_locks:
        return
    f = open(path, "w")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise JobBusy(f"{out_dir}: another process is running this job; not starting it twice") from None
    _held_locks[path] = f


def unlock(out_dir: Path) -> None:
    f = _held_locks.pop((out_dir / ".lock").resolve(), None)
    if f is not None:
        f.close()


def claim(out_dir: Path, cfg: JobConfig) -> None:
    """Write `config.json`, or check that the directory already belongs to this job."""
    path = out_dir / "config.json"
    if path.exists():
        stored = defaults_filled(json.loads(path.read_text()))  # written before a key was added
        if stored != cfg.to_dict() and id_fields(stored) == id_fields(cfg.to_dict()):
            write_json(path, cfg.to_dict())  # the same job run another way (a smaller micro-batch)
            return
        if stored != cfg.to_dict():
            changed = sorted(k for k in set(stored) | set(cfg.to_dict()) if stored.get(k) != cfg.to_dict().get(k))
            raise ConfigError(
                f"{out_dir}: holds a job with another configuration (differs in {', '.join(changed)}); "
                "use another --out directory, or remove this one to start over"
            )
        return
    write_json(path, cfg.to_dict())


def save_best(out_dir: Path, model: Classifier) -> None:
    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: save_file(weights, str(tmp)))


def load_best(out_dir: Path, model: Classifier, device: torch.device) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(out_dir / WEIGHTS_FILE), device=str(device)))


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_state(
    out_dir: Path, model: Classifier, optimizer: Any, scheduler: Any, scaler: Any, progress: dict[str, Any]
) -> None:
    blob = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
        "progress": progress,
    }
    atomic_write(out_dir / STATE_FILE, lambda tmp: torch.save(blob, tmp))


def load_state(out_dir: Path, model: Classifier, optimizer: Any, scheduler: Any, scaler: Any) -> dict[str, Any] | None:
    """Restore the last epoch's state into the given objects; returns its progress dict."""
    path = out_dir / STATE_FILE
    if not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    scaler.load_state_dict(blob["scaler"])
    _set_rng_state(blob["rng"])
    progress: dict[str, Any] = blob["progress"]
    return progress


def save_predictions(out_dir: Path, *, rows: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, rows=rows, labels=labels, probs=probs)

    atomic_write(out_dir / PREDICTIONS_FILE, write)
