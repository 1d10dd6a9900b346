"""A space's Optuna sampler and its study: seeded samplers draw per trial (`PerTrialSeeded`), so
two workers of one study never draw the same values and a study is reproducible whatever the
number of workers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from sweeper.search import SAMPLERS, Space
from sweeper.store import SweepStore
from trainer.jobdir import METRICS


class PerTrialSeeded(BaseSampler):
    """A seeded sampler made afresh for every trial, with a seed derived from (seed, trial number).

    Optuna's samplers keep one random stream per process: two workers seeded alike draw the same
    values (issue #17). This one gives every trial its own stream, whoever asks for it."""

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int) -> None:
        self._factory = factory
        self.seed = seed
        self._samplers: dict[int, BaseSampler] = {}

    def trial_seed(self, number: int) -> int:
        return int.from_bytes(hashlib.sha256(f"{self.seed}:{number}".encode()).digest()[:4], "big")

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self._samplers:
            self._samplers[trial.number] = self._factory(self.trial_seed(trial.number))
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._samplers.pop(trial.number, self._factory(0)).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # the streams are derived, never reseeded at random
        pass


def make_sampler(space: Space) -> BaseSampler:
    """The space's sampler; a seeded one becomes `PerTrialSeeded`."""
    name, kwargs = space.sampler
    cls = getattr(optuna.samplers, SAMPLERS[name])
    seed = kwargs.get("seed")
    if seed is None:
        return cls(**kwargs)
    return PerTrialSeeded(lambda s: cls(**{**kwargs, "seed": s}), int(seed))


def open_study(space: Space, storage: optuna.storages.BaseStorage, name: str) -> SweepStore:
    """The study's store, with the space's sampler, pruner and direction."""
    return SweepStore(storage, name, sampler=make_sampler(space), pruner=space.make_pruner(),
                      direction=METRICS.get(space.metric, "maximize"))
