"""What a job directory holds, written atomically so a killed job never leaves a torn file.

- `config.json`: the resolved configuration; a directory belongs to one job.
- `best.safetensors`: the classifier's weights at the best validation epoch (loads with
  `trainer.model.load_classifier`, or plain torch + transformers, see the README).
- `last.pt`: the last finished epoch's full state (weights, optimizer, scheduler, scaler, RNG,
  history), from which an interrupted job resumes.
- `test_predictions.npz`: per-example test rows, labels and class probabilities.

`last.pt` holds tensors and plain data only (the RNG states as tensors and lists, the progress
as numbers, strings, lists and dicts) and is read with `torch.load(weights_only=True)`: a
runs directory on a shared disk must not let whoever can write there run code in the next
resume. One `torch.save` file rather than safetensors + JSON, because the state must change
as a whole: two files renamed one after the other could pair one epoch's weights with
another's progress after a kill. A file that cannot be read as such a state (torn, garbage, a
pickle of anything else) is set aside and the job starts over from what is left.
"""

from __future__ import annotations

import fcntl
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import ConfigError, JobConfig, defaults_filled, id_fields
from trainer.io import atomic_write, write_json
from trainer.jobdir import CONFIG_FILE, LOCK_FILE, PREDICTIONS_FILE, STATE_FILE, set_aside  # noqa: F401 - re-exported
from trainer.model import WEIGHTS_FILE, Classifier

log = logging.getLogger(__name__)

STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "progress")


class JobBusy(RuntimeError):
    """Another live process is running this job directory."""


class SetAside(RuntimeError):
    """A job file could not be used and was moved aside (or removed): the job must start again
    from what is left, with freshly built objects (some may hold part of the bad state)."""


def _unreadable(exc: BaseException) -> bool:
    """Whether a failure to load a file says its content is bad, not that reading it failed (an
    I/O error, a permission: setting a good file aside for those would throw work away)."""
    return not (isinstance(exc, OSError) and exc.errno is not None)


_held_locks: dict[Path, Any] = {}


def lock(out_dir: Path) -> None:
    """Hold an exclusive lock on the job directory for the life of this process.

    The kernel drops it when the process dies (even by kill -9), so a second runner of the
    same directory is refused only while the first one is alive.
    """
    path = (out_dir / LOCK_FILE).resolve()
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
    f = _held_locks.pop((out_dir / LOCK_FILE).resolve(), None)
    if f is not None:
        f.close()


def claim(out_dir: Path, cfg: JobConfig) -> None:
    """Write `config.json`, or check that the directory already belongs to this job."""
    path = out_dir / CONFIG_FILE
    if path.exists():
        try:
            stored = defaults_filled(json.loads(path.read_text()))  # written before a key was added
        except (OSError, ValueError, AttributeError):  # torn or not a mapping: set aside, claim afresh
            set_aside(path, "unreadable configuration")
            write_json(path, cfg.to_dict())
            return
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
    """Load the best weights into `model`. An unreadable or mismatched file is set aside and,
    since only training again brings those weights back, so is the resume state: SetAside."""
    from safetensors.torch import load_file

    path = out_dir / WEIGHTS_FILE
    try:
        model.load_state_dict(load_file(str(path), device=str(device)))
    except Exception as exc:
        if not _unreadable(exc):
            raise
        set_aside(path, f"the best checkpoint cannot be loaded ({type(exc).__name__}: {exc})")
        if (out_dir / STATE_FILE).exists():
            (out_dir / STATE_FILE).unlink()
            log.warning("%s: removed (it resumes towards a best checkpoint that is gone)", out_dir / STATE_FILE)
        raise SetAside(f"{path}: the best checkpoint was damaged; the job trains again") from exc


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and lists (what `torch.load(weights_only=True)` reads)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
        # The job's own device only (a slot's job sees one): a state per visible GPU could not be
        # restored where fewer are visible, and the others' states are not the job's.
        "cuda": torch.cuda.get_rng_state(torch.cuda.current_device()) if torch.cuda.is_available() else None,
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    cuda = rng["cuda"]
    if isinstance(cuda, list):  # written before: one state per visible GPU; the job ran on the first
        cuda = cuda[0] if cuda else None
    if cuda is None:
        return
    if torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda, torch.cuda.current_device())  # whichever GPU this is
    else:
        log.warning("resumed on the CPU from a checkpoint written on a GPU: its CUDA random state cannot be "
                    "restored here, so dropout draws from now on differ from an uninterrupted run on a GPU")


def _check_state(blob: Any, model: Classifier) -> None:
    """Raise ValueError unless `blob` is a resume state for this model (before any of it is used)."""
    if not isinstance(blob, dict) or set(blob) != set(STATE_KEYS):
        shown = sorted(map(str, blob)) if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"not a resume state (holds {shown}; expected {', '.join(STATE_KEYS)})")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = blob["model"]
    if not isinstance(weights, dict) or {k: tuple(getattr(v, "shape", ())) for k, v in weights.items()} != expected:
        raise ValueError("its weights do not match this job's model")
    if not isinstance(blob["progress"], dict):
        raise ValueError("its progress is not a mapping")


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
    """Restore the last epoch's state into the given objects; returns its progress dict, or None
    when there is none.

    Only tensors and plain data are read (`weights_only=True`): a file holding anything else
    (code to run, a torn or foreign file) is set aside. SetAside when that happens after some of
    it was already applied to the objects (they must be built again); a file refused before
    that is set aside and None returned, as if there had been none.
    """
    path = out_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        _check_state(blob, model)
    except Exception as exc:
        if not _unreadable(exc):
            raise
        set_aside(path, f"not a readable resume state ({type(exc).__name__}: {_first_line(exc)}); the job starts over")
        return None
    try:
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        scaler.load_state_dict(blob["scaler"])
        _set_rng_state(blob["rng"])
    except Exception as exc:
        set_aside(path, f"not a usable resume state ({type(exc).__name__}: {_first_line(exc)}); the job starts over")
        raise SetAside(f"{path}: the resume state was damaged; the job starts over") from exc
    progress: dict[str, Any] = blob["progress"]
    return progress


def _first_line(exc: BaseException) -> str:
    """The telling line of a load error: torch's weights-only refusal names the blocked global
    (e.g. `posix.system`) in the middle of a long message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if "GLOBAL" in line]
    return (telling or lines or [""])[0][:300]


def save_predictions(out_dir: Path, *, rows: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, rows=rows, labels=labels, probs=probs)

    atomic_write(out_dir / PREDICTIONS_FILE, write)
