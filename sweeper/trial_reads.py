"""Reading part of a sweep's trials, fresh from the storage: those with the given ids and every
one newer than a given id. A worker among a thousand reads what it needs each turn, not every
trial of the sweep (issue 28).

Optuna has no public call for this; its two network storages have one inside, the read its own
caches make: `RDBStorage._get_trials` and the gRPC proxy's `GetTrials` request. Both are used
past the client's cache (Optuna's gRPC client keeps every trial it ever read, which a thousand
workers of one machine cannot afford). Anything else (a journal, memory: replayed in this
process) is read whole and filtered, and its trials are the storage's own objects: read-only.

`skip_attrs`: user attributes a caller never looks at, left out of what it keeps (and, from the
proxy, not even decoded) where the trials are built for this call, and with them the trials'
parameters (a parameter carries its distribution, every choice of it): a lean reading, for a
worker; a saving, not a promise.
"""

from __future__ import annotations

from collections.abc import Collection

import optuna
from optuna.trial import FrozenTrial

from sweeper.reconnect import ReconnectingStorage


def read_trials(storage: optuna.storages.BaseStorage, study_id: int, *, ids: Collection[int], newer_than: int,
                skip_attrs: Collection[str] = ()) -> list[FrozenTrial]:
    """The study's trials whose storage id is in `ids` or greater than `newer_than`, by number."""
    if isinstance(storage, ReconnectingStorage):
        backend = storage.backend
        return storage.run(lambda: read_trials(backend, study_id, ids=ids, newer_than=newer_than,
                                               skip_attrs=skip_attrs))
    if isinstance(storage, optuna.storages._CachedStorage):
        storage = storage._backend
    if isinstance(storage, optuna.storages.RDBStorage):
        trials = storage._get_trials(study_id, states=None, included_trial_ids=set(ids),
                                     trial_id_greater_than=newer_than)
        for trial in trials:  # built for this call: ours to trim
            for key in skip_attrs:
                trial.user_attrs.pop(key, None)
            if skip_attrs:
                trial.params.clear()
                trial.distributions.clear()
    elif type(storage).__name__ == "GrpcStorageProxy":
        trials = _grpc_trials(storage, study_id, ids, newer_than, skip_attrs)
    else:
        wanted = set(ids)
        trials = [t for t in storage.get_all_trials(study_id, deepcopy=False)
                  if t._trial_id > newer_than or t._trial_id in wanted]
    return sorted(trials, key=lambda t: t.number)


def _grpc_trials(proxy: optuna.storages.BaseStorage, study_id: int, ids: Collection[int], newer_than: int,
                 skip_attrs: Collection[str]) -> list[FrozenTrial]:
    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2
    from optuna.storages._grpc.servicer import _from_proto_trial

    request = api_pb2.GetTrialsRequest(study_id=study_id, included_trial_ids=list(ids),
                                       trial_id_greater_than=newer_than)
    try:
        # `sweep storage serve` leaves out what is skipped (LEAN_KEY, sweeper/proxy_service.py);
        # Optuna's own proxy ignores the metadata, and it is left out here.
        metadata = (("sweep-lean", ",".join(skip_attrs)),) if skip_attrs else None
        reply = proxy._stub.GetTrials(request, metadata=metadata)  # type: ignore[attr-defined]
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
