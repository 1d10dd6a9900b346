"""What a job carries from epoch to epoch, and what survives a kill (`last.pt`'s progress)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopState:
    """What survives a kill: saved with the weights in `last.pt` after every epoch, as plain data."""

    epoch: int = 0  # the last finished epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    best_epoch: int = 0  # 0: none yet
    best_metric: float | None = None  # the job's `metric` at best_epoch
    since_best: int = 0  # finished epochs since best_epoch: what `patience` counts
    stopped_early: dict[str, int] | None = None  # {"epoch", "patience"} once patience ran out
    global_step: int = 0  # optimizer steps
    train_seconds: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0  # real tokens, padding excluded
    sessions_seconds: float = 0.0  # wall time of every session, up to its last checkpoint
    peak_memory_mb: float = 0.0  # the highest peak of every session so far (see devices.peak_memory_mb)

    @classmethod
    def from_dict(cls, progress: dict[str, Any]) -> LoopState:
        """The state stored in `last.pt`; ValueError when it is not one this code wrote (a state
        written before a field was ADDED_LATER lacks it: it keeps its default)."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        if set(progress) - names or names - set(progress) - ADDED_LATER:
            raise ValueError(f"holds {sorted(progress)}; expected {sorted(f.name for f in fields)}")
        for f in fields:
            allowed = {t.strip().split("[")[0] for t in str(f.type).split("|")}  # e.g. "float | None"
            if f.name not in progress:
                continue
            value = progress[f.name]
            if ("None" if value is None else type(value).__name__) not in allowed:
                raise ValueError(f"{f.name}: {value!r} is not {f.type}")
        return cls(**progress)


ADDED_LATER = frozenset({"peak_memory_mb"})  # LoopState fields that older last.pt files lack


class Stopwatch:
    """Wall time since the session started, in laps (a session's time is added at each checkpoint)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        return seconds
