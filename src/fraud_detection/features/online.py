"""Online features through Feast's online-store interface, with real-time card state.

What the prediction API looks up, and how the card's state moves with every request:

* **Which features.** The FeatureService (``fraud_model_v1`` in ``feature_repo/``) lists
  them. A regular feature view in it (``merchant_risk``) is read as Feast stores it; an
  on-demand view (``transaction_features``) is computed from the request and its source
  views (``card_profile``); a view tagged ``online_state: <view>`` (``card_behaviour``) is
  computed at request time from that state view (``card_recent``).
* **How it is read and written.** Through the ``OnlineStore`` that Feast's own
  ``get_online_features`` and ``write_to_online_store`` use (``online_read``,
  ``online_write_batch``), configured from the repo's ``feature_store.yaml`` and the
  profile: SQLite locally, Redis in production. Nothing here knows a storage format.
* **Card state.** ``card_recent`` holds, per card, its transactions of the last
  :data:`STATE_WINDOW` as arrays (times, amounts, merchants, keys). The card window
  features are ``engineering.card_window_arrays`` of that state at the request's time:
  the function that built the training rows. After scoring, the API appends the
  transaction (:meth:`CardState.with_events`, :meth:`OnlineFeatures.write_states`), so
  the card's next request sees it. A transaction already in the state (a retried
  request, the same ``transaction_id``) is not added twice.
* **Batch writes.** :meth:`OnlineFeatures.merge_states` adds the events of a batch
  snapshot (``fraud features materialize``) to what is online: a union, so a batch never
  moves a card's state back in time or drops what the API recorded.

Writers of one state folder serialize on a lock file beside Feast's registry, so the API
and a CT run re-materializing never interleave a read-modify-write of the same card. The
API's threads serialize on a lock of this object too, which also keeps a SQLite store's
one connection to one thread at a time. A request waits for these locks, and a SQLite
statement for the file's own write lock (its busy timeout), at most :data:`LOCK_WAIT_S`
each; then :class:`OnlineStoreBusy` (the API answers 503), never an unbounded wait.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fraud_detection.errors import ServiceUnavailableError
from fraud_detection.features import engineering as fe

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.infra.online_stores.online_store import OnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

__all__ = [
    "LOCK_WAIT_S",
    "STATE_FIELDS",
    "STATE_TAG",
    "STATE_WINDOW",
    "CardState",
    "OnlineFeatures",
    "OnlineRow",
    "OnlineStoreBusy",
    "OnlineStoreError",
    "StoreWouldBlock",
    "transaction_key",
]

# A feature view with this tag is computed at request time from the named state view.
STATE_TAG = "online_state"
# The state view's arrays, in this order.
STATE_FIELDS = ("recent_timestamps_us", "recent_amounts", "recent_merchants", "recent_keys")
# How much history a card's state keeps: the 7-day windows (and the new-merchant lookback,
# which ends inside them) plus a day of slack for requests that arrive out of order.
STATE_WINDOW = dt.timedelta(days=8)
NEW_MERCHANT_LOOKBACK = dt.timedelta(days=6)
_STATE_WINDOW_US = int(STATE_WINDOW / dt.timedelta(microseconds=1))
_LOOKBACK_US = int(NEW_MERCHANT_LOOKBACK / dt.timedelta(microseconds=1))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
_MERGE_CHUNK = 500  # cards per locked read-merge-write of a batch
# The longest a request waits for the card-state lock (this process's threads, then the
# lock file), and a SQLite statement for the file's write lock, before giving up. Well
# above a normal wait (one 1,000-row batch holds the lock well under a second), well
# below a hang.
LOCK_WAIT_S = 2.0


class OnlineStoreError(ServiceUnavailableError):
    """The online store cannot be read or written; the message says why and what to do."""


class OnlineStoreBusy(OnlineStoreError):
    """A lock on the online store stayed held longer than the wait: try again."""


class StoreWouldBlock(Exception):
    """A ``nowait`` call found a lock held (a request of another thread, CT's merge,
    another SQLite connection's write): nothing was written; call again where waiting
    blocks no one (a worker thread)."""


def transaction_key(
    transaction_id: str | None, card_id: int, t_us: int, merchant_id: int, amount: float
) -> int:
    """A transaction's int64 identity in a card's state: its id's hash, or, without an
    id, the hash of what it is (card, time, merchant, amount)."""
    text = (
        transaction_id
        if transaction_id is not None
        else f"{card_id}|{t_us}|{merchant_id}|{float(amount)!r}"
    )
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


# ----------------------------------------------------------------------- card state


@dataclass(frozen=True)
class CardState:
    """One card's recent transactions (sorted by time) and the stamp of its last write."""

    timestamps_us: np.ndarray[Any, np.dtype[np.int64]]
    amounts: np.ndarray[Any, np.dtype[np.float64]]
    merchants: np.ndarray[Any, np.dtype[np.int64]]
    keys: np.ndarray[Any, np.dtype[np.int64]]
    written_at: dt.datetime | None = None  # the stored row's event time (None: no row)

    @classmethod
    def empty(cls) -> CardState:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, np.zeros(0, dtype=np.float64), none, none)

    def __len__(self) -> int:
        return len(self.timestamps_us)

    def window_features(self, card_id: int, at_us: int) -> dict[str, float]:
        """The card window features as of ``at_us`` (one call of the training code)."""
        out = fe.card_window_arrays(
            np.full(len(self), card_id, dtype=np.int64),
            self.timestamps_us,
            self.amounts,
            self.merchants,
            np.array([card_id], dtype=np.int64),
            np.array([at_us], dtype=np.int64),
            new_merchant_lookback_us=_LOOKBACK_US,
        )
        return {name: float(values[0]) for name, values in out.items()}

    def with_events(
        self,
        timestamps_us: Sequence[int] | np.ndarray[Any, Any],
        amounts: Sequence[float] | np.ndarray[Any, Any],
        merchants: Sequence[int] | np.ndarray[Any, Any],
        keys: Sequence[int] | np.ndarray[Any, Any],
    ) -> CardState | None:
        """This state with the given events added (those whose key it lacks), trimmed to
        :data:`STATE_WINDOW` before its newest event; ``None`` when nothing is new."""
        new_keys = np.asarray(keys, dtype=np.int64)
        if len(new_keys) == 1:  # the API's case: one transaction, a scan beats a set
            fresh = np.array([not (self.keys == new_keys[0]).any()])
        else:
            fresh = ~np.isin(new_keys, self.keys)
            _, first = np.unique(new_keys, return_index=True)  # once per key in the batch
            once = np.zeros(len(new_keys), dtype=bool)
            once[first] = True
            fresh &= once
        if not fresh.any():
            return None
        t = np.concatenate([self.timestamps_us, np.asarray(timestamps_us, np.int64)[fresh]])
        a = np.concatenate([self.amounts, np.asarray(amounts, np.float64)[fresh]])
        m = np.concatenate([self.merchants, np.asarray(merchants, np.int64)[fresh]])
        k = np.concatenate([self.keys, new_keys[fresh]])
        order = np.argsort(t, kind="stable")
        keep = order[t[order] > int(t.max()) - _STATE_WINDOW_US]
        return CardState(t[keep], a[keep], m[keep], k[keep], self.written_at)

    @property
    def newest(self) -> dt.datetime:
        return _EPOCH + int(self.timestamps_us.max()) * _ONE_US


# ----------------------------------------------------------------------- values


def _scalar(value: Value | None) -> float | str | None:
    """A scalar feature's Python value (numbers as float), or None when unset."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    got = getattr(value, kind)
    if isinstance(got, str):
        return got
    return float(got)


def _array(value: Value | None, kind: str, dtype: type) -> np.ndarray[Any, Any]:
    if value is None or value.WhichOneof("val") != kind:
        return np.zeros(0, dtype=dtype)
    return np.fromiter(getattr(value, kind).val, dtype=dtype)


def _state_from(stamp: dt.datetime | None, values: dict[str, Value] | None) -> CardState:
    if not values:
        return CardState.empty()
    return CardState(
        timestamps_us=_array(values.get(STATE_FIELDS[0]), "int64_list_val", np.int64),
        amounts=_array(values.get(STATE_FIELDS[1]), "double_list_val", np.float64),
        merchants=_array(values.get(STATE_FIELDS[2]), "int64_list_val", np.int64),
        keys=_array(values.get(STATE_FIELDS[3]), "int64_list_val", np.int64),
        written_at=stamp,
    )


def _state_values(state: CardState) -> dict[str, Value]:
    from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    return {
        STATE_FIELDS[0]: ValueProto(int64_list_val=Int64List(val=state.timestamps_us.tolist())),
        STATE_FIELDS[1]: ValueProto(double_list_val=DoubleList(val=state.amounts.tolist())),
        STATE_FIELDS[2]: ValueProto(int64_list_val=Int64List(val=state.merchants.tolist())),
        STATE_FIELDS[3]: ValueProto(int64_list_val=Int64List(val=state.keys.tolist())),
    }


def _stamp(state: CardState) -> dt.datetime:
    """The event time a state is written with: its newest event, and always later than
    the row it replaces (stores that keep the newest write, like Redis, then take it)."""
    stamp = state.newest
    if state.written_at is not None and stamp <= state.written_at:
        stamp = state.written_at + _ONE_US
    return stamp


# ----------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Read:
    """One feature view read online for one entity."""

    view: FeatureView
    join_key: str
    features: tuple[str, ...]
    ttl_s: float | None  # a row older than this at the transaction's time is missing


@dataclass
class OnlineRow:
    """What the online store gave for one transaction, by feature name."""

    values: dict[str, float]  # every feature of the service known before request time
    state: CardState  # the card's state the window features were computed from
    unknown_card: bool  # nothing at all about the card: no state, no profile
    unknown_merchant: bool  # no merchant row
    feature_age_s: float | None  # transaction time - event time of the batch rows used
    strings: dict[str, str | None] = field(default_factory=dict)  # string features


def _entity(join_key: str, value: int) -> EntityKey:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    return EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=value)])


def _ttl_s(view: FeatureView) -> float | None:
    ttl = view.ttl
    return None if ttl is None or ttl == dt.timedelta(0) else ttl.total_seconds()


class OnlineFeatures:
    """The feature service's online features and the card state, through Feast.

    Built once from an open :class:`feast.FeatureStore`; :meth:`read` and :meth:`write_states`
    are the per-request calls. ``lock_file`` serializes state writers across processes
    (the API and a re-materializing CT run); without it, only threads of this process.
    ``write_config`` is the repo config the state writes use (default: the store's).
    ``lock_wait_s`` bounds each wait for a lock (:meth:`writing`, SQLite's busy timeout).
    """

    def __init__(
        self,
        store: FeatureStore,
        service_name: str,
        *,
        lock_file: Path | None = None,
        write_config: Any = None,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config

        self.config = store.config
        self.service_name = service_name
        self.online: OnlineStore = get_online_store_from_config(store.config.online_store)
        # Card-state writes may use their own repo config (Redis: ``skip_dedup``, see
        # ``features.store.open_online``); the same store, another write option.
        self._write_config = write_config or store.config
        self._lock_fd: int | None = None
        if lock_file is not None:
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        self._thread_lock = threading.RLock()
        self._nowait = False  # inside writing(nowait=True): a SQLite write must not wait
        self.lock_wait_s = lock_wait_s
        _tune_sqlite(self.online, store.config, lock_wait_s)
        _tune_redis(self.online, store.config)
        self._file = _sqlite_file(self.online, store.config)
        self._file_identity = _identity(self._file)
        self._batched_redis = _batches_redis_reads(self.online)
        self._redis_plans: dict[tuple[str, tuple[str, ...]], tuple[str, list[str], list[Any]]] = {}
        service = store.get_feature_service(service_name, allow_cache=True)
        views = {v.name: v for v in store.list_feature_views(allow_cache=True)}
        odfvs = {v.name: v for v in store.list_on_demand_feature_views(allow_cache=True)}

        wanted: dict[str, list[str]] = {}  # view -> features, in the service's order
        self.features: list[str] = []  # every feature the service serves, in order
        self.window_features: tuple[str, ...] = ()
        state_view: FeatureView | None = None
        for projection in service.feature_view_projections:
            names = [f.name for f in projection.features]
            self.features += names
            if projection.name in odfvs:
                for source in odfvs[projection.name].source_feature_view_projections.values():
                    wanted.setdefault(source.name, [])
                    wanted[source.name] += [f.name for f in source.features]
                continue
            view = views.get(projection.name)
            if view is None:
                raise OnlineStoreError(
                    f"feature service {service_name!r} names view {projection.name!r}, "
                    "which the registry lacks: run `fraud features materialize`"
                )
            wanted.setdefault(view.name, [])
            wanted[view.name] += names
        reads: list[_Read] = []
        for name, names in wanted.items():
            view = views[name]
            if STATE_TAG in view.tags:
                state_name = view.tags[STATE_TAG]
                if state_name not in views:
                    raise OnlineStoreError(f"view {name!r} names a missing state view {state_name}")
                unknown = sorted(set(names) - set(fe.CARD_FEATURES))
                if unknown:
                    raise OnlineStoreError(
                        f"view {name!r} asks for {', '.join(unknown)}, which "
                        "engineering.card_window_arrays does not compute"
                    )
                state_view = views[state_name]
                self.window_features = tuple(dict.fromkeys(names))
                continue
            reads.append(_Read(view, view.join_keys[0], tuple(dict.fromkeys(names)), _ttl_s(view)))
        if state_view is None:
            raise OnlineStoreError(
                f"no view of service {service_name!r} is computed from a card state "
                f"(tag {STATE_TAG!r}): check feature_repo/definitions.py"
            )
        self.state_view: FeatureView = state_view
        self.state_key = state_view.join_keys[0]
        self.reads: tuple[_Read, ...] = tuple(reads)
        self.features = list(dict.fromkeys(self.features))

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def writing(
        self, deadline: float | None = None, *, bounded: bool = True, nowait: bool = False
    ) -> Iterator[None]:
        """Hold the state writers' lock (this process's threads and, with a lock file,
        every process of the state folder). Raises :class:`OnlineStoreBusy` when it is not
        free by ``deadline`` (``time.monotonic()``; default: :attr:`lock_wait_s` from
        now). ``bounded=False`` waits as long as it takes (a CT run's merge: no client
        waits for an answer). ``nowait``: raise :class:`StoreWouldBlock` instead of waiting
        at all, for the locks and, inside, for a SQLite write (the event loop's path)."""
        if nowait:
            with self._without_waiting():
                yield
            return
        if bounded and deadline is None:
            deadline = time.monotonic() + self.lock_wait_s
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._thread_lock.acquire(timeout=wait):
            raise OnlineStoreBusy(
                "online store busy: the card-state lock stayed held by other requests of "
                f"this service for more than {self.lock_wait_s:g} s; try again"
            )
        try:
            fd = self._lock_fd
            if fd is None:
                yield
                return
            _flock(fd, deadline, self.lock_wait_s)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def _without_waiting(self) -> Iterator[None]:
        if not self._thread_lock.acquire(blocking=False):
            raise StoreWouldBlock
        try:
            fd = self._lock_fd
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreWouldBlock from None
            self._nowait = True
            try:
                yield
            finally:
                self._nowait = False
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def replaced(self) -> bool:
        """Whether the store's file was replaced (or removed) since it was opened: a SQLite
        connection keeps reading the old file for ever. Redis: never."""
        return self._file is not None and _identity(self._file) != self._file_identity

    def close(self) -> None:
        """Release the lock file and a SQLite store's connection (Redis connections close
        with the process), once the thread of this process using them, if any, is done."""
        with self._thread_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            conn = getattr(self.online, "_conn", None) if self._file is not None else None
            if conn is not None:
                conn.close()
                self.online._conn = None  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ reading

    def _read_one(self, view: FeatureView, key: EntityKey, features: Sequence[str]) -> Any:
        try:
            return self.online.online_read(self.config, view, [key], list(features))[0]
        except Exception as exc:
            raise self._error(exc) from exc

    def _read_views(
        self, items: Sequence[tuple[FeatureView, EntityKey, Sequence[str]]]
    ) -> list[Any]:
        """One ``(stamp, values)`` row per ``(view, entity, features)``, in order.

        On Redis in one round trip: the pipeline of HMGETs that Feast's own
        ``get_online_features`` sends for several views (``RedisOnlineStore.
        _read_features_per_fv``), built and decoded by the store's own methods. Elsewhere
        (or if a Feast upgrade drops those methods), ``online_read`` view by view."""
        try:
            if self._batched_redis:
                online: Any = self.online
                commands, plans = [], []
                for view, key, features in items:
                    name, wanted, fields = self._redis_fields(view, tuple(features))
                    [redis_key] = online._generate_redis_keys_for_entities(self.config, [key])
                    commands.append((redis_key, fields))
                    plans.append((name, wanted))
                replies = online._read_hash_fields(self.config, commands)
                return [
                    online._convert_redis_values_to_protobuf([reply], name, wanted)[0]
                    for reply, (name, wanted) in zip(replies, plans, strict=True)
                ]
            return [
                self.online.online_read(self.config, view, [key], list(features))[0]
                for view, key, features in items
            ]
        except Exception as exc:
            raise self._error(exc) from exc

    def _redis_fields(
        self, view: FeatureView, features: tuple[str, ...]
    ) -> tuple[str, list[str], list[Any]]:
        """A view's stored name, its features and their hash fields in Redis: the same
        for every request, so built by the store's own methods once per view."""
        plan = self._redis_plans.get((view.name, features))
        if plan is None:
            from feast.infra.online_stores.redis import _versioned_fv_name

            name = _versioned_fv_name(view, self.config)
            online: Any = self.online
            wanted, fields = online._generate_hset_keys_for_features(
                view, list(features), fv_name_override=name
            )
            plan = self._redis_plans[(view.name, features)] = (name, wanted, fields)
        return plan

    def read_state(self, card_id: int) -> CardState:
        """The card's stored state (empty when the store has none)."""
        stamp, values = self._read_one(
            self.state_view, _entity(self.state_key, card_id), STATE_FIELDS
        )
        return _state_from(stamp, values)

    def read_states(self, card_ids: Sequence[int]) -> list[CardState]:
        """The stored states of several cards, one store call."""
        keys = [_entity(self.state_key, int(c)) for c in card_ids]
        try:
            rows = self.online.online_read(self.config, self.state_view, keys, list(STATE_FIELDS))
        except Exception as exc:
            raise self._error(exc) from exc
        return [_state_from(stamp, values) for stamp, values in rows]

    def read(
        self,
        card_id: int,
        merchant_id: int,
        at_us: int,
        state: CardState | None = None,
    ) -> OnlineRow:
        """Every looked-up feature of a transaction of ``card_id`` at ``merchant_id`` at
        ``at_us``: the batch views as stored (missing past their TTL at ``at_us``), and
        the card window features computed from the card's state as of ``at_us``.
        ``state`` replaces the stored one (a batch of requests carries it along)."""
        items = [
            (
                read.view,
                _entity(read.join_key, card_id if read.join_key == self.state_key else merchant_id),
                read.features,
            )
            for read in self.reads
        ]
        if state is None:
            items.append((self.state_view, _entity(self.state_key, card_id), STATE_FIELDS))
        rows = self._read_views(items)
        if state is None:
            state = _state_from(*rows.pop())
        values: dict[str, float] = dict.fromkeys(
            (f for r in self.reads for f in r.features), math.nan
        )
        strings: dict[str, str | None] = {}
        ages: list[float] = []
        card_rows = bool(len(state)) or state.written_at is not None
        merchant_found = False
        at_s = at_us / 1e6
        for read, (stamp, row) in zip(self.reads, rows, strict=True):
            if row is None:
                continue
            if read.join_key == self.state_key:
                card_rows = True
            else:
                merchant_found = True
            age = None if stamp is None else at_s - stamp.timestamp()
            if read.ttl_s is not None:
                if age is not None and age > read.ttl_s:
                    continue
                if age is not None:
                    ages.append(age)
            for name in read.features:
                value = _scalar(row.get(name))
                if isinstance(value, str):
                    strings[name] = value
                elif value is not None:
                    values[name] = value
        values.update(state.window_features(card_id, at_us))
        return OnlineRow(
            values=values,
            state=state,
            unknown_card=not card_rows,
            unknown_merchant=not merchant_found,
            feature_age_s=max(ages) if ages else None,
            strings=strings,
        )

    def check(self) -> None:
        """Raise :class:`OnlineStoreError` unless every view can be read and a state
        could be written now (:class:`OnlineStoreBusy` while a lock stays held)."""
        with self.writing():
            self.read_state(-1)
            for read in self.reads:
                self._read_one(read.view, _entity(read.join_key, -1), read.features)
            if self._file is not None:
                # SQLite: take the file's write lock and let go, writing nothing: another
                # connection holding it is what would make the next state write wait.
                conn: Any = self.online._get_conn(self.config)  # type: ignore[attr-defined]
                try:
                    if not conn.in_transaction:
                        conn.execute("BEGIN IMMEDIATE")
                        conn.rollback()
                except Exception as exc:
                    raise self._error(exc) from exc

    def _error(self, exc: Exception) -> OnlineStoreError:
        """What a failed store call means for the caller: busy (SQLite's ``database is
        locked``: another connection held the write lock longer than the wait) or an
        error saying why."""
        if self._file is not None and "database is locked" in str(exc):
            return OnlineStoreBusy(
                f"online store busy: its SQLite file {self._file} stayed locked by another "
                f"connection for more than {self.lock_wait_s:g} s ({_why(exc)}); try again"
            )
        return OnlineStoreError(_why(exc))

    # ------------------------------------------------------------------ writing

    def write_states(self, states: Sequence[tuple[int, CardState]]) -> int:
        """Write each card's state (one store call); returns how many were written.
        Callers hold :meth:`writing` around the read that the states came from."""
        now: dt.datetime | None = dt.datetime.now(dt.UTC)
        rows: list[tuple[EntityKey, dict[str, Value], dt.datetime, dt.datetime | None]] = [
            (_entity(self.state_key, card), _state_values(state), _stamp(state), now)
            for card, state in states
        ]
        if rows:
            if self._nowait and self._file is not None:
                self._write_sqlite_nowait(rows)
                return len(rows)
            try:
                self.online.online_write_batch(self._write_config, self.state_view, rows, None)
            except Exception as exc:
                raise self._error(exc) from exc
        return len(rows)

    def _write_sqlite_nowait(self, rows: list[Any]) -> None:
        """The state write with SQLite's busy timeout at 0: another connection's write
        lock makes it :class:`StoreWouldBlock` at once (nothing written), not a wait."""
        conn: Any = self.online._get_conn(self.config)  # type: ignore[attr-defined]
        conn.execute("PRAGMA busy_timeout=0")
        try:
            self.online.online_write_batch(self._write_config, self.state_view, rows, None)
        except Exception as exc:
            if "database is locked" in str(exc):
                raise StoreWouldBlock from exc
            raise self._error(exc) from exc
        finally:
            conn.execute(f"PRAGMA busy_timeout={round(self.lock_wait_s * 1000)}")

    def merge_states(self, snapshot: dict[int, CardState]) -> int:
        """Add each card's batch ``snapshot`` events to its online state (a union, never
        a step back in time); returns how many cards changed."""
        cards = sorted(snapshot)
        changed = 0
        for start in range(0, len(cards), _MERGE_CHUNK):
            chunk = cards[start : start + _MERGE_CHUNK]
            with self.writing(bounded=False):
                current = self.read_states(chunk)
                updates = []
                for card, online in zip(chunk, current, strict=True):
                    batch = snapshot[card]
                    merged = online.with_events(
                        batch.timestamps_us, batch.amounts, batch.merchants, batch.keys
                    )
                    if merged is not None:
                        updates.append((card, merged))
                changed += self.write_states(updates)
        return changed


def _tune_sqlite(online: OnlineStore, config: Any, lock_wait_s: float) -> None:
    """SQLite: no fsync per committed state write (WAL with synchronous=NORMAL, durable
    across a process crash; the store is rebuilt from the batch tables after a power
    loss). Each write is then ~0.1 ms instead of ~0.4 ms (make bench). A statement waits
    ``lock_wait_s`` for a lock another connection holds (Python's default: 5 s)."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    if isinstance(online, SqliteOnlineStore):
        conn = online._get_conn(config)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={round(lock_wait_s * 1000)}")


def _flock(fd: int, deadline: float | None, wait_s: float) -> None:
    """Take the lock file's exclusive lock; give up at ``deadline`` (monotonic; None: wait
    as long as it takes) with :class:`OnlineStoreBusy`."""
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OnlineStoreBusy(
                    "online store busy: the card-state lock file stayed held by another "
                    f"process (`fraud features materialize`?) for more than {wait_s:g} s; "
                    "try again"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


def _sqlite_file(online: OnlineStore, config: Any) -> Path | None:
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    if isinstance(online, SqliteOnlineStore):
        return Path(online._get_db_path(config))
    return None


def _identity(path: Path | None) -> tuple[int, int] | None:
    """The file's device and inode: another file after a replace (None: no file)."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _tune_redis(online: OnlineStore, config: Any) -> None:
    """Redis: fail fast when the server is gone. redis-py retries a failed command three
    times with backoff up to 10 s; the prediction API runs on one event loop, so while
    Redis is down every request (``/health`` included) would wait ~8 s and then succeed
    or not. One immediate retry (a pooled connection a restart closed), then an error:
    ``/predict`` answers 503 at once and the next request tries again. Connecting and each
    reply are bounded too (1 s and 2 s)."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    if isinstance(online, RedisOnlineStore):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = online._get_client(config.online_store)
        client.set_retry(Retry(NoBackoff(), 1))
        pool_kwargs = client.connection_pool.connection_kwargs
        pool_kwargs.setdefault("socket_connect_timeout", 1.0)
        if pool_kwargs.get("socket_connect_timeout") is None:
            pool_kwargs["socket_connect_timeout"] = 1.0
        if pool_kwargs.get("socket_timeout") is None:
            pool_kwargs["socket_timeout"] = 2.0


_REDIS_READ_METHODS = (
    "_generate_hset_keys_for_features",
    "_generate_redis_keys_for_entities",
    "_read_hash_fields",
    "_convert_redis_values_to_protobuf",
)


def _batches_redis_reads(online: OnlineStore) -> bool:
    """Whether several views' reads can go in one Redis pipeline through the store's own
    methods (Feast's Redis store has them; without them, a read per view)."""
    from feast.infra.online_stores import redis as feast_redis

    return (
        isinstance(online, feast_redis.RedisOnlineStore)
        and all(hasattr(online, name) for name in _REDIS_READ_METHODS)
        and hasattr(feast_redis, "_versioned_fv_name")
    )


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "no such table" in text:
        return f"{text}: the online store is not materialized; run `fraud features materialize`"
    return f"{type(exc).__name__}: {text}"
