"""The feature store adapter: feature tables on disk, Feast offline and online.

The pure feature functions live in :mod:`fraud_detection.features.engineering`; this
module only moves data: it reads accepted raw partitions, writes the Parquet feature
tables that ``feature_repo/definitions.py`` declares as sources, builds point-in-time
training sets with ``get_historical_features``, and materializes into the online store.

Layout under the profile's state folder::

    features/card_behaviour/YYYY-MM-DD.parquet   one file per accepted day
    features/merchant_risk/YYYY-MM-DD.parquet    snapshot as of the next midnight
    features/card_recent/YYYY-MM-DD.parquet      each card's last 8 days at the day's end
    features/card_profile/cards.parquet          static card attributes
    feast/registry.db, feast/online_store.db     Feast's registry and SQLite online store

The online store is SQLite under the state folder, or Redis when the profile says so
(``feast.online_store``); :mod:`fraud_detection.features.online` reads and writes it
through Feast's online-store interface.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from fraud_detection.config import FeastSettings, StatePaths, load_profile, project_dir
from fraud_detection.data import ledger
from fraud_detection.errors import FraudError
from fraud_detection.features import engineering as fe

if TYPE_CHECKING:
    from feast import FeatureStore

    from fraud_detection.features.online import CardState, OnlineFeatures

FEATURE_SERVICE = "fraud_model_v1"
CARD_TABLE = "card_behaviour"
MERCHANT_TABLE = "merchant_risk"
PROFILE_TABLE = "card_profile"
STATE_TABLE = "card_recent"  # the card state behind the request-time card features
# Card windows reach back 7 days; new-merchant flags look 6 days further (see
# engineering.card_features), so a day's card features need 7 days of history.
CARD_HISTORY_DAYS = 7
NEW_MERCHANT_LOOKBACK = pd.Timedelta(days=6)
MERCHANT_HISTORY_DAYS = fe.MERCHANT_LABEL_WINDOW_DAYS
# Card profiles are valid from long before any transaction (the view has no TTL).
PROFILE_AS_OF = pd.Timestamp("2000-01-01", tz="UTC")
REQUEST_COLUMNS = ("amount", "channel", "latitude", "longitude", "merchant_category")

log = logging.getLogger(__name__)


class FeatureStoreError(FraudError):
    """The feature store cannot do what was asked (no features built, nothing accepted)."""


# ------------------------------------------------------------------------ paths


@dataclass(frozen=True)
class FeaturePaths:
    """Where the feature tables and Feast's own files live for one state folder."""

    state: StatePaths

    @property
    def tables(self) -> Path:
        return self.state.root / "features"

    def table(self, name: str) -> Path:
        return self.tables / name

    def day_file(self, name: str, day: dt.date) -> Path:
        return self.table(name) / f"{day.isoformat()}.parquet"

    @property
    def feast(self) -> Path:
        return self.state.root / "feast"


def feature_repo() -> Path:
    return project_dir() / "feature_repo"


def built_days(paths: StatePaths) -> list[dt.date]:
    """Days whose card, merchant and card-state feature files all exist."""
    fp = FeaturePaths(paths)
    days = []
    for file in sorted(fp.table(CARD_TABLE).glob("*.parquet")):
        day = dt.date.fromisoformat(file.stem)
        if fp.day_file(MERCHANT_TABLE, day).exists() and fp.day_file(STATE_TABLE, day).exists():
            days.append(day)
    return days


# ----------------------------------------------------------------------- reading


def _accepted(paths: StatePaths) -> set[dt.date]:
    return set(ledger.accepted_days(paths))


def read_transactions(paths: StatePaths, days: Iterable[dt.date]) -> pd.DataFrame:
    """Concatenate the raw partitions of ``days`` (those that exist), in time order."""
    frames = [
        pd.read_parquet(f) for d in sorted(days) if (f := ledger.partition_path(paths, d)).exists()
    ]
    if not frames:
        from fraud_detection.data.schema import TRANSACTION_COLUMNS

        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in TRANSACTION_COLUMNS.items()})
    return pd.concat(frames, ignore_index=True)


def read_labels(paths: StatePaths, known_at: pd.Timestamp) -> pd.DataFrame:
    """Every label whose ``label_timestamp`` is at or before ``known_at``."""
    frames = []
    for folder in sorted(paths.labels.glob("arrival_date=*")):
        arrival = dt.date.fromisoformat(folder.name.split("=", 1)[1])
        if arrival <= known_at.date():
            frames.append(pd.read_parquet(folder / "labels.parquet"))
    if not frames:
        from fraud_detection.data.schema import LABEL_COLUMNS

        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in LABEL_COLUMNS.items()})
    labels = pd.concat(frames, ignore_index=True)
    return labels[labels["label_timestamp"] <= known_at].reset_index(drop=True)


def _days_back(day: dt.date, n: int) -> list[dt.date]:
    return [day - dt.timedelta(days=k) for k in range(n, -1, -1)]


def _midnight(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize("UTC")


# ---------------------------------------------------------------------- building


@dataclass(frozen=True)
class DayFeatures:
    """What building one day's features wrote."""

    day: dt.date
    card_rows: int
    merchant_rows: int
    files: tuple[Path, ...]


def _write(df: pd.DataFrame, path: Path) -> Path:
    # Write then rename, so a killed build never leaves a half-written feature file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: no clashes
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def _us(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    # DuckDB materialization rejects nanosecond timestamps; store microseconds, UTC.
    return df.astype(dict.fromkeys(columns, "datetime64[us, UTC]"))


def build_day(paths: StatePaths, day: dt.date) -> DayFeatures:
    """Compute and write the card and merchant feature files of one accepted day.

    Only partitions accepted by the data gate are read, so a rejected partition never
    reaches the feature tables. Rebuilding a day overwrites its files (idempotent).
    """
    accepted = _accepted(paths)
    if day not in accepted:
        raise FeatureStoreError(
            f"partition {day} has not been accepted by the data gate: "
            f"run `fraud validate raw --date {day}` first"
        )
    fp = FeaturePaths(paths)
    history = read_transactions(
        paths, [d for d in _days_back(day, CARD_HISTORY_DAYS) if d in accepted]
    )
    cards = fe.card_features(
        history, since=_midnight(day), new_merchant_lookback=NEW_MERCHANT_LOOKBACK
    )
    day_end = _midnight(day + dt.timedelta(days=1))
    cards = cards[cards["event_timestamp"] < day_end]
    cards = _us(cards, "event_timestamp", "created_timestamp")
    states = card_state_snapshot(history, day_end)

    window = [d for d in _days_back(day, MERCHANT_HISTORY_DAYS - 1) if d in accepted]
    snapshot = day + dt.timedelta(days=1)
    merchant_ids = None
    merchants_file = paths.reference / "merchants.parquet"
    if merchants_file.exists():
        merchant_ids = pd.read_parquet(merchants_file, columns=["merchant_id"])["merchant_id"]
    merchants = fe.merchant_features(
        read_transactions(paths, window),
        read_labels(paths, _midnight(snapshot)),
        [snapshot],
        merchant_ids=merchant_ids,
    )
    merchants = _us(merchants, "event_timestamp", "created_timestamp")
    files = (
        _write(cards.reset_index(drop=True), fp.day_file(CARD_TABLE, day)),
        _write(merchants, fp.day_file(MERCHANT_TABLE, day)),
        _write(states, fp.day_file(STATE_TABLE, day)),
    )
    return DayFeatures(day, len(cards), len(merchants), files)


def card_state_snapshot(transactions: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """Each card's state at ``end``: its transactions in the state window before ``end``,
    as the arrays of the ``card_recent`` view (one row per card, stamped with its newest
    transaction). The batch side of the state the prediction API keeps up to date."""
    import numpy as np
    import pyarrow as pa

    from fraud_detection.features.online import STATE_FIELDS, STATE_WINDOW, transaction_key

    recent = transactions[
        (transactions["event_timestamp"] < end)
        & (transactions["event_timestamp"] >= end - pd.Timedelta(STATE_WINDOW))
    ].sort_values(["card_id", "event_timestamp"], kind="stable")
    micros = pd.DatetimeIndex(recent["event_timestamp"]).as_unit("us").asi8
    keys = [
        transaction_key(tid, int(c), int(t), int(m), float(a))
        for tid, c, t, m, a in zip(
            recent["transaction_id"].astype(object),
            recent["card_id"],
            micros,
            recent["merchant_id"],
            recent["amount"],
            strict=True,
        )
    ]
    # One row per card, its events as list columns: offsets into the card-sorted arrays
    # (pyarrow builds the lists in one pass; a groupby into Python lists is ~10x slower).
    cards = recent["card_id"].to_numpy(dtype="int64")
    starts = np.flatnonzero(np.r_[True, cards[1:] != cards[:-1]]) if len(cards) else cards
    offsets = pa.array(np.r_[starts, len(cards)].astype(np.int32))
    columns = {
        STATE_FIELDS[0]: micros,
        STATE_FIELDS[1]: recent["amount"].to_numpy(dtype="float64"),
        STATE_FIELDS[2]: recent["merchant_id"].to_numpy(dtype="int64"),
        STATE_FIELDS[3]: np.asarray(keys, dtype="int64"),
    }
    out = pd.DataFrame({"card_id": cards[starts]})
    for name, values in columns.items():
        out[name] = pa.ListArray.from_arrays(offsets, pa.array(values)).to_pandas()
    newest = micros[np.r_[starts[1:] - 1, len(cards) - 1]] if len(cards) else micros
    out["event_timestamp"] = pd.to_datetime(newest, unit="us", utc=True)
    out["created_timestamp"] = out["event_timestamp"]
    return _us(out, "event_timestamp", "created_timestamp")


def read_state_snapshot(paths: StatePaths, day: dt.date) -> dict[int, CardState]:
    """The cards' states at the end of ``day`` (written by :func:`build_day`)."""
    import numpy as np

    from fraud_detection.features.online import STATE_FIELDS, CardState

    file = FeaturePaths(paths).day_file(STATE_TABLE, day)
    if not file.exists():
        raise FeatureStoreError(
            f"no card states for {day} ({file}): run `fraud features build --rebuild`"
        )
    frame = pd.read_parquet(file)
    return {
        int(card): CardState(
            np.asarray(t, dtype=np.int64),
            np.asarray(a, dtype=np.float64),
            np.asarray(m, dtype=np.int64),
            np.asarray(k, dtype=np.int64),
        )
        for card, t, a, m, k in zip(
            frame["card_id"], *(frame[name] for name in STATE_FIELDS), strict=True
        )
    }


def build_profile(paths: StatePaths) -> Path:
    """Write the static card-profile table from the cards dimension table."""
    cards_file = paths.reference / "cards.parquet"
    if not cards_file.exists():
        raise FeatureStoreError(f"no cards table at {cards_file}: run `make simulate` first")
    profile = fe.card_profile(pd.read_parquet(cards_file), PROFILE_AS_OF)
    profile = _us(profile, "event_timestamp", "created_timestamp")
    return _write(profile, FeaturePaths(paths).table(PROFILE_TABLE) / "cards.parquet")


# ------------------------------------------------------------------------- Feast


@contextlib.contextmanager
def feast_lock(paths: StatePaths) -> Iterator[None]:
    """One Feast writer or reader of this state folder's registry at a time.

    Feast rewrites its file registry in place; another process reading it meanwhile sees
    a truncated file (and may write it back), losing entities and services for good.
    """
    import fcntl

    folder = FeaturePaths(paths).feast
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "registry.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Feast prints progress with print() and warns about experimental features."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _definitions_hash(tables: Path, online_store: dict[str, Any], registry: Any = None) -> str:
    source = (feature_repo() / "definitions.py").read_bytes()
    where = f"{tables}|{sorted(online_store.items())}|{registry}".encode()
    return hashlib.sha256(source + where).hexdigest()[:16]


def _load_definitions(tables: Path) -> list[Any]:
    """Import feature_repo/definitions.py with its sources pointed at ``tables``."""
    import feast

    previous = os.environ.get("FRAUD_FEATURE_TABLES")
    os.environ["FRAUD_FEATURE_TABLES"] = str(tables)
    try:
        spec = importlib.util.spec_from_file_location(
            "fraud_feature_definitions", feature_repo() / "definitions.py"
        )
        if spec is None or spec.loader is None:
            raise FeatureStoreError(f"cannot import {feature_repo() / 'definitions.py'}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            os.environ.pop("FRAUD_FEATURE_TABLES", None)
        else:
            os.environ["FRAUD_FEATURE_TABLES"] = previous
    kinds = (
        feast.Entity,
        feast.FeatureView,
        feast.OnDemandFeatureView,
        feast.FeatureService,
        feast.FileSource,
        feast.RequestSource,
    )
    return [obj for obj in vars(module).values() if isinstance(obj, kinds)]


def _online_store_config(fp: FeaturePaths, settings: FeastSettings) -> dict[str, Any]:
    if settings.online_store == "redis":
        return {"type": "redis", "connection_string": settings.redis_connection_string}
    return {"type": "sqlite", "path": str(fp.feast / "online_store.db")}


def online_store_location(paths: StatePaths, settings: FeastSettings | None = None) -> str:
    """Where the profile's online store is, for people: a file or a Redis address."""
    settings = settings or load_profile().feast
    if settings.online_store == "redis":
        return f"Redis at {settings.redis_connection_string.split(',')[0]}"
    return str(FeaturePaths(paths).feast / "online_store.db")


def _use_wal(path: Path) -> None:
    """Put the SQLite online store in WAL mode (kept in the file): the prediction API's
    reads and writes then never wait for a materialization writing, nor it for them."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _repo_config(
    paths: StatePaths, settings: FeastSettings, **online_options: Any
) -> dict[str, Any]:
    """``feature_repo/feature_store.yaml`` with the registry and online store moved to this
    state folder and the profile's online store (plus ``online_options``); with
    ``feast.registry_url``, Feast's SQL registry in that database instead of the file."""
    fp = FeaturePaths(paths)
    config: dict[str, Any] = yaml.safe_load((feature_repo() / "feature_store.yaml").read_text())
    if settings.project:
        config["project"] = settings.project
    if settings.registry_url:
        config["registry"] = {
            "registry_type": "sql",
            "path": settings.registry_url,
            "cache_ttl_seconds": 60,
            # A connection dropped by a database restart is replaced, not reused.
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        }
    else:
        config["registry"] = str(fp.feast / "registry.db")
    config["online_store"] = {**_online_store_config(fp, settings), **online_options}
    return config


def open_store(
    paths: StatePaths, *, apply: bool = True, feast_settings: FeastSettings | None = None
) -> FeatureStore:
    """The Feast store of this state folder, its definitions applied when they changed.

    ``feature_repo/feature_store.yaml`` is the configuration; its registry and online
    store paths are moved under the state folder, so profiles and tests stay separate.
    The online store is the active profile's (``feast.online_store``, or
    ``feast_settings``): SQLite under the state folder, or Redis.
    """
    import feast

    logging.getLogger("feast").setLevel(logging.WARNING)
    settings = feast_settings or load_profile().feast
    fp = FeaturePaths(paths)
    fp.feast.mkdir(parents=True, exist_ok=True)
    config = _repo_config(paths, settings)
    with _quiet(), feast_lock(paths):
        store = feast.FeatureStore(config=feast.RepoConfig(repo_path=str(feature_repo()), **config))
        marker = fp.feast / "applied.sha"
        digest = _definitions_hash(fp.tables, config["online_store"], config["registry"])
        stale = not marker.exists() or marker.read_text() != digest
        # Also re-apply when the registry lost the service (a damaged or deleted file).
        if apply and (stale or FEATURE_SERVICE not in _service_names(store)):
            store.apply(_load_definitions(fp.tables))
            marker.write_text(digest)
        if settings.online_store == "sqlite" and (fp.feast / "online_store.db").exists():
            _use_wal(fp.feast / "online_store.db")
    return store


def open_online(
    paths: StatePaths,
    *,
    apply: bool = True,
    feast_settings: FeastSettings | None = None,
    store: FeatureStore | None = None,
) -> OnlineFeatures:
    """The feature service's online features of this state folder. The prediction API
    opens it with ``apply=False``: it reads the registry as CT left it, never writes it.
    ``store``: a Feast store already open on this folder (not opened again)."""
    import feast

    from fraud_detection.features.online import OnlineFeatures

    settings = feast_settings or load_profile().feast
    if store is None:
        store = open_store(paths, apply=apply, feast_settings=settings)
    write_config = None
    if settings.online_store == "redis":
        # Card-state writes without Feast's read-before-write of the stored timestamp: one
        # Redis round trip instead of two per request. Writers of a state serialize on the
        # lock file and a batch merges instead of overwriting, so the check is redundant
        # there; the batch views' materialization keeps it.
        config = _repo_config(paths, settings, skip_dedup=True)
        write_config = feast.RepoConfig(repo_path=str(feature_repo()), **config)
    return OnlineFeatures(
        store,
        FEATURE_SERVICE,
        lock_file=FeaturePaths(paths).feast / "online_state.lock",
        write_config=write_config,
    )


def _service_names(store: FeatureStore) -> set[str]:
    try:
        return {s.name for s in store.list_feature_services()}
    except Exception:  # an unreadable registry counts as empty: apply again
        return set()


def training_entities(
    paths: StatePaths, as_of: pd.Timestamp, days: int | None = None
) -> pd.DataFrame:
    """The labelled transactions known at ``as_of``: the entity rows of a training set.

    Only labels whose ``label_timestamp`` is at or before ``as_of`` count (the delay of
    chargebacks is respected), and only transactions of accepted partitions. ``days``
    limits the window to the last N days before ``as_of``.
    """
    labels = read_labels(paths, as_of)
    if days is not None:
        labels = labels[labels["event_timestamp"] >= as_of - pd.Timedelta(days=days)]
    accepted = _accepted(paths)
    label_days = {ts.date() for ts in labels["event_timestamp"].dt.floor("D").unique()}
    transactions = read_transactions(paths, label_days & accepted)
    rows = transactions.merge(
        labels[["transaction_id", "is_fraud"]], on="transaction_id", how="inner"
    )
    rows = entity_rows(rows)
    return rows.sort_values("transaction_timestamp", kind="stable").reset_index(drop=True)


def entity_rows(transactions: pd.DataFrame) -> pd.DataFrame:
    """Raw transactions as Feast entity rows: every feature as of the transaction's time.

    The card-feature row stamped at that time is the transaction's own (computed from
    the card's earlier transactions only), so the point-in-time join gives exactly what
    the prediction API computes when the transaction arrives. ``transaction_timestamp``
    keeps the time for the on-demand view; training and batch scoring both use this.
    """
    rows = transactions.rename(columns={"event_timestamp": "transaction_timestamp"})
    rows["event_timestamp"] = rows["transaction_timestamp"]
    return rows


def historical_features(
    store: FeatureStore, entities: pd.DataFrame, *, lock: StatePaths | None = None
) -> pd.DataFrame:
    """Point-in-time join of the feature service onto ``entities`` (Feast, offline store).

    ``entities`` holds ``card_id``, ``merchant_id``, ``event_timestamp`` (features are
    taken as of this time), the request columns and any pass-through columns. ``lock``:
    hold that state folder's :func:`feast_lock` while Feast reads its registry (planning
    the join), not while the join runs on the Parquet files, so that several processes
    (batch scoring on Dask workers) join at the same time.
    """
    with _quiet():
        with feast_lock(lock) if lock is not None else contextlib.nullcontext():
            job = store.get_historical_features(
                entity_df=entities, features=store.get_feature_service(FEATURE_SERVICE)
            )
        return job.to_df()


def training_set(paths: StatePaths, as_of: pd.Timestamp, days: int | None = None) -> pd.DataFrame:
    """A point-in-time correct training set: features as known just before each transaction."""
    entities = training_entities(paths, as_of, days)
    if entities.empty:
        raise FeatureStoreError(
            f"no labelled transactions known at {as_of:%Y-%m-%d %H:%M}: labels arrive "
            "label_delay_days after a transaction; simulate more days or move --as-of later"
        )
    store = open_store(paths)
    with feast_lock(paths):
        frame = historical_features(store, entities)
    frame["event_timestamp"] = frame.pop("transaction_timestamp")
    order = ["transaction_id", "event_timestamp", "card_id", "merchant_id"]
    rest = [c for c in frame.columns if c not in order]
    # Feast returns the feature columns in an order that varies from process to process
    # (string hashing): sorted, the same data gives the same file, byte for byte.
    passed = [c for c in rest if c in entities.columns]
    columns = order + passed + sorted(c for c in rest if c not in entities.columns)
    return frame[columns].sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def materialized_marker(paths: StatePaths, settings: FeastSettings | None = None) -> Path:
    """The file holding how far the profile's online store is materialized: one per
    store (``materialized_until`` for SQLite, ``materialized_until.redis-<digest>`` for a
    Redis), so pointing a state folder at another store backfills that store in full."""
    settings = settings or load_profile().feast
    name = "materialized_until"
    if settings.online_store == "redis":
        where = settings.redis_connection_string.encode()
        name += f".redis-{hashlib.sha256(where).hexdigest()[:12]}"
    return FeaturePaths(paths).feast / name


# Redis keeps the end of its materialization beside the rows (this key, in the Feast
# project's namespace): a Redis that lost its data (a restart without persistence, a
# flush) has lost the key too, and the next materialization backfills it in full.
REDIS_MARKER_KEY = "{project}:fraud_detection:materialized_until"


def _redis_client(online: OnlineFeatures) -> Any | None:
    """The Feast Redis store's own client, or None for another store."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    if isinstance(online.online, RedisOnlineStore):
        return online.online._get_client(online.config.online_store)
    return None


def _materialized_until(paths: StatePaths, online: OnlineFeatures) -> pd.Timestamp | None:
    """How far the online store is loaded: the state folder's marker, and for Redis the
    key beside its rows as well (None, a full backfill, when either is missing)."""
    marker = materialized_marker(paths)
    if not marker.exists():
        return None
    until = pd.Timestamp(marker.read_text())
    client = _redis_client(online)
    if client is None:
        return until
    try:
        held = client.get(REDIS_MARKER_KEY.format(project=online.config.project))
    except Exception as exc:
        raise FeatureStoreError(f"the Redis online store does not answer: {exc}") from exc
    return None if held is None else min(until, pd.Timestamp(held.decode()))


def materialize(
    paths: StatePaths,
    end: pd.Timestamp | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Load the latest feature values up to ``end`` into the online store.

    The batch views go through Feast's materialization: the first call backfills
    everything from the first feature row (so does the first after Redis lost its data:
    :data:`REDIS_MARKER_KEY`); later calls load only what is new since the
    previous end (``materialize_incremental``). The card states of the last built day up
    to ``end`` are then merged into the online ones (:meth:`OnlineFeatures.merge_states`),
    never replacing what the prediction API recorded since. Running it twice with the same
    end changes nothing. Returns the (start, end) window loaded; ``progress`` gets a line
    per step.
    """
    say = progress or (lambda _: None)
    days = built_days(paths)
    if not days:
        raise FeatureStoreError("no features built yet: run `fraud features build` first")
    end = end or _midnight(days[-1] + dt.timedelta(days=1))
    store = open_store(paths)
    online = open_online(paths, store=store)
    batch_views = [
        v.name for v in store.list_feature_views() if v.online and v.name != online.state_view.name
    ]
    previous = _materialized_until(paths, online)
    if (
        previous is None
        and _redis_client(online) is not None
        and materialized_marker(paths).exists()
    ):
        say(
            "the Redis online store lacks its materialization marker (it lost its data?): "
            "backfilling it in full"
        )
    say(f"loading {', '.join(batch_views)} into the {online.config.online_store.type} online store")
    with _quiet(), feast_lock(paths):
        if previous is None:
            start = PROFILE_AS_OF - pd.Timedelta(days=1)
            store.materialize(
                start_date=start.to_pydatetime(),
                end_date=end.to_pydatetime(),
                feature_views=batch_views,
            )
        else:
            start = previous
            store.materialize_incremental(end_date=end.to_pydatetime(), feature_views=batch_views)
    state_days = [d for d in days if _midnight(d + dt.timedelta(days=1)) <= end]
    if state_days:
        snapshot = read_state_snapshot(paths, state_days[-1])
        changed = online.merge_states(snapshot)
        say(
            f"card states as of {state_days[-1] + dt.timedelta(days=1)}: {len(snapshot):,} cards, "
            f"{changed:,} of them gained transactions the online store lacked (merged, never "
            "replaced)"
        )
    client = _redis_client(online)
    if client is not None:
        client.set(REDIS_MARKER_KEY.format(project=online.config.project), end.isoformat())
    materialized_marker(paths).write_text(end.isoformat())
    return start, end


def online_features(online: OnlineFeatures, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The service's online features for request rows (``card_id``, ``merchant_id``,
    ``transaction_timestamp`` and the request columns), as the prediction API computes
    them: looked up through Feast's online store, card windows as of each row's time,
    request-time features by the training code. Reads only; records nothing."""
    import numpy as np

    out = []
    for row in rows:
        stamp = pd.Timestamp(row["transaction_timestamp"])
        at_us = int(stamp.tz_convert("UTC").value // 1_000)  # .value is in ns
        looked_up = online.read(int(row["card_id"]), int(row["merchant_id"]), at_us)
        request = fe.request_feature_arrays(
            amount=np.array([row.get("amount", np.nan)], dtype=np.float64),
            timestamp_us=np.array([at_us], dtype=np.int64),
            channel=np.array([row.get("channel")], dtype=object),
            latitude=np.array([row.get("latitude", np.nan)], dtype=np.float64),
            longitude=np.array([row.get("longitude", np.nan)], dtype=np.float64),
            card_amount_mean_7d=np.array([looked_up.values["card_amount_mean_7d"]]),
            home_latitude=np.array([looked_up.values.get("home_latitude", np.nan)]),
            home_longitude=np.array([looked_up.values.get("home_longitude", np.nan)]),
        )
        values: dict[str, Any] = {"card_id": row["card_id"], "merchant_id": row["merchant_id"]}
        merged = {**looked_up.values, **looked_up.strings, **{k: v[0] for k, v in request.items()}}
        values.update({name: merged.get(name) for name in online.features})
        out.append(values)
    return pd.DataFrame(out)
