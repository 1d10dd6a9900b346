"""Reading part of a sweep's trials, fresh from the storage: those with the given ids and every
one newer than a given id. A worker among a thousand reads what it needs each turn, not every
trial of the sweep (issue 28).

Optuna has no public call for this; its two network storages have one inside, the read its own
caches make: `RDBStorage._get_trials` and the gRPC proxy's `GetTrials` request. Both are used
past the client's cache (Optuna's gRPC client keeps every trial it ever read, which a thousand
workers of one machine cannot afford). Anything else (a journal, memory: replayed in this
process) is read whole and filtered, and its trials are the storage's own objects: read-only.

`open_sample=(start, limit)`: also up to `limit` WAITING and up to `limit` RUNNING trials, the
first of each state by id from `start` on (then from the lowest id on): what a worker among a
thousand may claim or take over now, asked of the storage instead of believed from its own
stale reading (sweeper/trial_view.py). Fewer than `limit` of a state: those are all of them.

`skip_attrs`: user attributes a caller never looks at, left out of what it keeps (and, from the
proxy, not even decoded) where the trials are built for this call, and with them the trials'
parameters (a parameter carries its distribution, every choice of it), system attributes and
intermediate values: a lean reading, for a worker; a saving, not a promise.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.reconnect import ReconnectingStorage

OPEN = (TrialState.WAITING, TrialState.RUNNING)
# The gRPC metadata keys of a worker's read through `sweep storage serve` (sweeper/proxy_service.py):
# the user attributes to leave out (a lean read), and "start,limit" of an open sample.
LEAN_KEY = "sweep-lean"
OPEN_KEY = "sweep-open"


def read_trials(storage: optuna.storages.BaseStorage, study_id: int, *, ids: Collection[int], newer_than: int,
                skip_attrs: Collection[str] = (), open_sample: tuple[int, int] | None = None) -> list[FrozenTrial]:
    """The study's trials whose storage id is in `ids` or greater than `newer_than`, and the
    `open_sample` (see above), by number."""
    if isinstance(storage, ReconnectingStorage):
        backend = storage.backend
        return storage.run(lambda: read_trials(backend, study_id, ids=ids, newer_than=newer_than,
                                               skip_attrs=skip_attrs, open_sample=open_sample))
    if isinstance(storage, optuna.storages._CachedStorage):
        storage = storage._backend
    if isinstance(storage, optuna.storages.RDBStorage):
        wanted = set(ids) | (_rdb_open_ids(storage, study_id, *open_sample) if open_sample else set())
        if skip_attrs:
            trials = _rdb_lean(storage, study_id, wanted, newer_than, skip_attrs)
        else:
            trials = storage._get_trials(study_id, states=None, included_trial_ids=wanted,
                                         trial_id_greater_than=newer_than)
    elif type(storage).__name__ == "GrpcStorageProxy":
        trials = _grpc_trials(storage, study_id, ids, newer_than, skip_attrs, open_sample)
    else:
        every = storage.get_all_trials(study_id, deepcopy=False)
        wanted = set(ids) | (open_ids(every, *open_sample) if open_sample else set())
        trials = [t for t in every if t._trial_id > newer_than or t._trial_id in wanted]
    return sorted(trials, key=lambda t: t.number)


def open_ids(trials: Sequence[FrozenTrial], start: int, limit: int) -> set[int]:
    """The ids of an open sample (see above) among these trials."""
    picked: set[int] = set()
    for state in OPEN:
        ids = sorted(t._trial_id for t in trials if t.state == state)
        at = bisect_left(ids, start)
        picked.update((ids[at:] + ids[:at])[:limit])
    return picked


def _rdb_lean(storage: optuna.storages.RDBStorage, study_id: int, wanted: set[int], newer_than: int,
              skip_attrs: Collection[str]) -> list[FrozenTrial]:
    """A lean reading in three plain queries (the trials, their user attributes but the skipped,
    their values) where Optuna's ORM reading makes six and builds every parameter: a turn of a
    thousand workers' each is the proxy's main work (issue 28)."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trial, attr, value = models.TrialModel, models.TrialUserAttributeModel, models.TrialValueModel
    picked = trial.trial_id > newer_than
    if wanted:
        picked = sqlalchemy.or_(picked, trial.trial_id.in_(wanted))
    with _create_scoped_session(storage.scoped_session) as session:
        rows = (session.query(trial.trial_id, trial.number, trial.state, trial._datetime_start_utc,
                              trial._datetime_complete_utc)
                .filter(trial.study_id == study_id, picked).all())
        attrs: dict[int, dict[str, Any]] = {row[0]: {} for row in rows}
        for trial_id, key, text in (session.query(attr.trial_id, attr.key, attr.value_json)
                                    .join(trial, trial.trial_id == attr.trial_id)
                                    .filter(trial.study_id == study_id, picked, attr.key.notin_(list(skip_attrs)))):
            if trial_id in attrs:  # not one created since the first query (no snapshot spans the three)
                attrs[trial_id][key] = json.loads(text)
        values: dict[int, dict[int, float]] = {}
        for trial_id, objective, number, kind in (session.query(value.trial_id, value.objective, value.value,
                                                                value.value_type)
                                                  .join(trial, trial.trial_id == value.trial_id)
                                                  .filter(trial.study_id == study_id, picked)):
            values.setdefault(trial_id, {})[objective] = models.TrialValueModel.stored_repr_to_value(number, kind)
    return [FrozenTrial(number=number, state=state, value=None, values=_listed(values.get(trial_id)),
                        datetime_start=_local(start), datetime_complete=_local(complete), params={}, distributions={},
                        user_attrs=attrs[trial_id], system_attrs={}, intermediate_values={}, trial_id=trial_id)
            for trial_id, number, state, start, complete in rows]


def _listed(by_objective: dict[int, float] | None) -> list[float] | None:
    return [by_objective[k] for k in sorted(by_objective)] if by_objective else None


def _local(utc: datetime | None) -> datetime | None:
    """A stored (naive UTC) time as Optuna's RDB storage gives it: naive local time."""
    return None if utc is None else utc.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def _rdb_open_ids(storage: optuna.storages.RDBStorage, study_id: int, start: int, limit: int) -> set[int]:
    """An open sample's ids in one query per state (ids from `start` first, then the rest)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trial = models.TrialModel
    picked: set[int] = set()
    with _create_scoped_session(storage.scoped_session) as session:
        for state in OPEN:
            rows = (session.query(trial.trial_id).filter(trial.study_id == study_id, trial.state == state)
                    .order_by(trial.trial_id < start, trial.trial_id).limit(limit))
            picked.update(row[0] for row in rows)
    return picked


def _grpc_trials(proxy: optuna.storages.BaseStorage, study_id: int, ids: Collection[int], newer_than: int,
                 skip_attrs: Collection[str], open_sample: tuple[int, int] | None) -> list[FrozenTrial]:
    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2
    from optuna.storages._grpc.servicer import _from_proto_trial

    request = api_pb2.GetTrialsRequest(study_id=study_id, included_trial_ids=list(ids),
                                       trial_id_greater_than=newer_than)
    try:
        # `sweep storage serve` leaves out what is skipped and adds the open sample; Optuna's own
        # proxy ignores the metadata (no open sample, then: a worker reads the whole sweep once it
        # finds none), and the skipped is left out here.
        metadata = []
        if skip_attrs:
            metadata.append((LEAN_KEY, ",".join(skip_attrs)))
        if open_sample:
            metadata.append((OPEN_KEY, f"{open_sample[0]},{open_sample[1]}"))
        reply = proxy._stub.GetTrials(request, metadata=metadata or None)  # type: ignore[attr-defined]
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise KeyError(f"no study with id {study_id}") from exc
        raise
    trials = []
    for proto in reply.trials:
        for key in skip_attrs:
            if key in proto.user_attributes:
                del proto.user_attributes[key]
        if skip_attrs:  # a lean reading: no parameters either (each carries its distribution's every choice)
            proto.params.clear()
            proto.distributions.clear()
        trials.append(_from_proto_trial(proto))
    return trials
