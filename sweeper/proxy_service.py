"""What `sweep storage serve` puts between Optuna's gRPC servicer and the database, so that a
thousand workers reading the sweep each turn do not each cost the database a read of the whole
sweep (issue 28).

Optuna's servicer answers each `GetTrials` with the backend's `get_all_trials` (every trial of
the study) turned into protocol buffers, however few the client asked for. `ProxyService`
answers it so:
- a small request (a worker's turn, sweeper/trial_view.py: a sample of trials by id and the
  newest ones) is read as asked, straight from the database;
- a big one (a worker's first reading of the sweep; Optuna's own client cache, which asks for
  every unfinished trial) from `ProxyCache`: Optuna's in-process trial cache (`_CachedStorage`,
  what Optuna's docs advise behind the proxy: a finished trial is read from the database once)
  with its reads shared: a call waits for a read that started after it arrived (so it sees
  every write made before it), and the calls that arrive while one read runs share the next;
- a trial is turned into its protocol buffer once while the cache holds the same trial object,
  not once per client.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import optuna
from optuna.storages._grpc.auto_generated import api_pb2
from optuna.storages._grpc.servicer import OptunaStorageProxyService, _to_proto_trial
from optuna.trial import FrozenTrial

from sweeper.reconnect import ReconnectingStorage
from sweeper.storage import TrialCache
from sweeper.trial_reads import LEAN_KEY, OPEN_KEY, open_ids, read_trials

# A GetTrials asking for about this many trials or fewer is read as asked (see ProxyService).
DIRECT_MAX = 512
# How old a whole-study answer may be (from when its read started): see ProxyService._shared.
WHOLE_FRESH_S = 60.0


class ProxyCache(TrialCache):
    def __init__(self, backend: optuna.storages.RDBStorage) -> None:
        super().__init__(backend)
        self._flights = threading.Condition()
        self._started: dict[int, int] = {}  # reads of a study started, and finished
        self._done: dict[int, int] = {}
        self._read_at: dict[int, float] = {}  # when the last read to finish started (time.monotonic)
        self._running: set[int] = set()

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        with self._flights:
            wanted = self._started.get(study_id, 0) + 1  # the next read to start: it starts after now
            while self._done.get(study_id, 0) < wanted:
                if study_id not in self._running:
                    self._running.add(study_id)
                    self._started[study_id] = started = self._started.get(study_id, 0) + 1
                    started_at = time.monotonic()
                    break
                self._flights.wait()
            else:
                return
        try:
            super()._read_trials_from_remote_storage(study_id)
        except BaseException:
            with self._flights:  # a waiter reads again (through the caller's retries, if any)
                self._running.discard(study_id)
                self._flights.notify_all()
            raise
        with self._flights:
            self._done[study_id], self._read_at[study_id] = started, started_at
            self._running.discard(study_id)
            self._flights.notify_all()

    def whole(self, study_id: int) -> tuple[float, list[FrozenTrial]]:
        """Every trial of the study, as fresh as `get_all_trials` gives it, and when the shared read
        it is at least as new as started (time.monotonic): it holds every write made before then."""
        self._read_trials_from_remote_storage(study_id)
        with self._flights:
            read_at = self._read_at[study_id]
        with self._lock:
            return read_at, sorted(self._studies[study_id].trials.values(), key=lambda t: t.number)


class ProxyService(OptunaStorageProxyService):
    def __init__(self, storage: ReconnectingStorage) -> None:
        if not isinstance(storage.backend, ProxyCache):
            raise TypeError("ProxyService serves a ReconnectingStorage(ProxyCache(database))")
        super().__init__(storage)
        self._storage, self._cache = storage, storage.backend
        self._protos: dict[tuple[int, str], tuple[FrozenTrial, api_pb2.Trial]] = {}
        self._newest: dict[int, int] = {}  # each study's highest trial id seen
        self._wholes: dict[tuple[int, str], tuple[float, api_pb2.GetTrialsReply]] = {}  # the last whole answers
        self._created: dict[int, float] = {}  # when a trial was last created here (time.monotonic)

    def GetTrials(self, request: api_pb2.GetTrialsRequest, context: Any) -> api_pb2.GetTrialsReply:  # noqa: N802
        """A small request (a worker's turn: a sample and the newest trials) is read as asked,
        straight from the database; a big one (a first reading, Optuna's client cache) from the
        shared reads of `ProxyCache`."""
        import grpc

        study_id, newer_than = request.study_id, request.trial_id_greater_than
        included = set(request.included_trial_ids)
        metadata = dict(context.invocation_metadata())
        lean = metadata.get(LEAN_KEY, "")
        start, limit = (int(x) for x in metadata.get(OPEN_KEY, "0,0").split(","))
        sample = (start, limit) if limit > 0 else None
        newest = self._newest.get(study_id, -1)
        try:
            if newest >= 0 and len(included) + max(0, newest - newer_than) <= DIRECT_MAX:
                trials = read_trials(self._backend, study_id, ids=included, newer_than=newer_than, open_sample=sample,
                                     skip_attrs=[key for key in lean.split(",") if key])
            else:
                return self._shared(study_id, included, newer_than, lean, sample)
        except KeyError as exc:
            context.abort(code=grpc.StatusCode.NOT_FOUND, details=str(exc))
        if trials:
            self._newest[study_id] = max(newest, max(t._trial_id for t in trials))
        # Read for this call (lean where asked): no conversion of theirs to keep, nothing to leave out.
        return api_pb2.GetTrialsReply(trials=[_to_proto_trial(t) for t in trials])

    def _shared(self, study_id: int, included: set[int], newer_than: int, lean: str,
                sample: tuple[int, int] | None = None) -> api_pb2.GetTrialsReply:
        """From ProxyCache's shared reads. A whole-study request (a worker's first reading) is
        answered with the last such answer while the read it came from started at most
        WHOLE_FRESH_S before the request (and after the last trial created here): a thousand workers
        starting at once cost a few reads. An older answer is safe to give, where no trial was
        created since: a finished trial never changes, and a worker reads again what it believed
        unfinished before it acts on it (sweeper/trial_view.py); 5 s was too short at 1,000
        workers, whose first readings came over minutes, each few seconds a whole new read."""
        arrived = time.monotonic()
        whole = not included and newer_than < 0
        held = self._wholes.get((study_id, lean))
        if whole and held is not None and arrived - held[0] <= WHOLE_FRESH_S and held[0] > self._created.get(study_id, 0):
            return held[1]
        cache = self._cache
        read_at, trials = self._storage.run(lambda: cache.whole(study_id))
        if trials:
            self._newest[study_id] = max(self._newest.get(study_id, -1), max(t._trial_id for t in trials))
        if whole and held is not None and held[0] == read_at:
            return held[1]
        if sample is not None:
            included = included | open_ids(trials, *sample)
        reply = api_pb2.GetTrialsReply(trials=[self._proto(t, lean) for t in trials
                                               if t._trial_id > newer_than or t._trial_id in included])
        if whole:
            self._wholes[study_id, lean] = (read_at, reply)
        return reply

    def CreateNewTrial(self, request: api_pb2.CreateNewTrialRequest, context: Any) -> api_pb2.CreateNewTrialReply:  # noqa: N802
        """A new trial is in every whole-study answer after it (read-your-writes for a first reading
        right after an enqueue): the answers read before are not given again."""
        reply = super().CreateNewTrial(request, context)
        self._created[request.study_id] = time.monotonic()
        return reply

    def _proto(self, trial: FrozenTrial, lean: str) -> api_pb2.Trial:
        """The trial's protocol buffer; `lean` (a client's LEAN_KEY): without those user attributes
        and without parameters (sweeper/trial_reads.py)."""
        held = self._protos.get((trial._trial_id, lean))
        if held is not None and held[0] is trial:
            return held[1]
        proto = _to_proto_trial(trial)
        if lean:
            for key in lean.split(","):
                if key in proto.user_attributes:
                    del proto.user_attributes[key]
            proto.params.clear()
            proto.distributions.clear()
        self._protos[trial._trial_id, lean] = (trial, proto)
        return proto
