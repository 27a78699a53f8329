"""Online features read straight from Feast's SQLite online store.

``fraud features materialize`` (Feast) writes one table per feature view,
``<project>_<view>``, with a row per (entity key, feature): the value as a serialized
``feast.types.Value`` protobuf and the row's event time in epoch seconds. Going through
the Feast SDK costs ~7 ms per lookup (registry, on-demand view in pandas) and ~9 s of
``import feast`` at start-up; this module does the same lookup as one prepared SQLite
statement per request (~0.06 ms) and decodes the few value types the views use.
``tests/integration/test_serving_online.py`` checks it against the SDK
(``features.store.online_features``) for known and unknown cards and merchants.

One difference is deliberate: a feature row older than its view's TTL *at the
transaction's time* counts as missing, as in the point-in-time join that built the
training sets (the SDK's online read does not expire rows).
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fraud_detection.config import StatePaths, project_dir
from fraud_detection.errors import FraudError
from fraud_detection.features.engineering import CARD_FEATURES

__all__ = [
    "LOOKED_UP",
    "VIEWS",
    "Lookup",
    "OnlineStoreError",
    "OnlineStoreReader",
    "decode_value",
    "entity_key",
]


class OnlineStoreError(FraudError):
    """The online store is missing or not materialized."""


@dataclass(frozen=True)
class View:
    """A feature view as serving reads it (must match ``feature_repo/definitions.py``)."""

    name: str
    join_key: str
    features: tuple[str, ...]
    ttl: dt.timedelta | None


CARD_BEHAVIOUR = View("card_behaviour", "card_id", CARD_FEATURES, dt.timedelta(days=7))
CARD_PROFILE = View("card_profile", "card_id", ("home_latitude", "home_longitude"), None)
MERCHANT_RISK = View(
    "merchant_risk", "merchant_id", ("merchant_fraud_rate_30d",), dt.timedelta(days=2)
)
VIEWS: tuple[View, ...] = (CARD_BEHAVIOUR, CARD_PROFILE, MERCHANT_RISK)
# The looked-up values, in this order, in every Lookup.
LOOKED_UP: tuple[str, ...] = tuple(f for view in VIEWS for f in view.features)
_SLOT = {name: i for i, name in enumerate(LOOKED_UP)}
_TTL_S = tuple(None if v.ttl is None else v.ttl.total_seconds() for v in VIEWS)
_AGED = (0, 2)  # views whose age is reported: card behaviour, merchant risk (not profile)

_INT64 = 4  # feast.types.ValueType.INT64
_STRING = 2


def entity_key(join_key: str, value: int) -> bytes:
    """Feast's serialized entity key (version 3) of one int64 join key.

    Equal to ``feast.infra.key_encoding_utils.serialize_entity_key(EntityKey(...),
    entity_key_serialization_version=3)`` (a test compares them).
    """
    name = join_key.encode()
    return struct.pack("<III", 1, _STRING, len(name)) + name + struct.pack("<IIq", _INT64, 8, value)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7


def decode_value(data: bytes) -> float | str | None:
    """A serialized ``feast.types.Value`` of a scalar feature: int, double, float, bool,
    string, or ``None`` (no value or ``null_val``). Other types raise ``ValueError``."""
    if not data:
        return None
    tag, pos = _varint(data, 0)
    field, wire = tag >> 3, tag & 7
    if wire == 0 and field in (3, 4, 7, 8):  # int32, int64, bool, unix timestamp
        number, _ = _varint(data, pos)
        return float(number - (1 << 64) if number >= 1 << 63 else number)
    if field == 5 and wire == 1:  # double
        value: float = struct.unpack_from("<d", data, pos)[0]
        return value
    if field == 6 and wire == 5:  # float
        single: float = struct.unpack_from("<f", data, pos)[0]
        return single
    if field == 2 and wire == 2:  # string
        length, pos = _varint(data, pos)
        return data[pos : pos + length].decode()
    if field == 19:  # null_val
        return None
    raise ValueError(f"unsupported feast Value (field {field}, wire type {wire})")


@dataclass(frozen=True)
class Lookup:
    """The online features of one transaction."""

    values: list[float]  # LOOKED_UP order; NaN when missing or expired
    unknown_card: bool  # no row of the card in any card view
    unknown_merchant: bool  # no row of the merchant
    feature_age_s: float | None  # transaction time - oldest event time used (behaviour, risk)

    def get(self, name: str) -> float:
        return self.values[_SLOT[name]]


def _project() -> str:
    config = yaml.safe_load((project_dir() / "feature_repo" / "feature_store.yaml").read_text())
    online = config.get("online_store") or {}
    if online.get("type", "sqlite") != "sqlite":
        raise OnlineStoreError(
            f"the online store is {online.get('type')!r}: serving reads SQLite stores only"
        )
    if int(config.get("entity_key_serialization_version", 3)) != 3:
        raise OnlineStoreError("serving reads entity keys serialized with version 3 only")
    return str(config["project"])


def online_store_path(paths: StatePaths) -> Path:
    """Where ``features.store`` puts the SQLite online store of a state folder."""
    return paths.root / "feast" / "online_store.db"


class OnlineStoreReader:
    """Reads the three views of a transaction with one SQL statement.

    One read-only connection per thread (SQLite connections must stay in their thread);
    the statement is prepared once per connection (sqlite3's statement cache).
    """

    def __init__(self, path: Path, project: str | None = None) -> None:
        self.path = path
        self.project = project or _project()
        tables = [f'"{self.project}_{view.name}"' for view in VIEWS]
        parts = []
        for i, (view, table) in enumerate(zip(VIEWS, tables, strict=True)):
            key = "?2" if view.join_key == "merchant_id" else "?1"
            names = ", ".join(f"'{f}'" for f in view.features)
            parts.append(
                f"SELECT {i}, feature_name, value, event_ts FROM {table} "
                f"WHERE entity_key = {key} AND feature_name IN ({names})"
            )
        self._sql = " UNION ALL ".join(parts)
        self._tables = [t.strip('"') for t in tables]
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                raise OnlineStoreError(
                    f"no online store at {self.path}: run `fraud features materialize`"
                )
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self._local.conn = conn
        return conn

    def check(self) -> None:
        """Raise :class:`OnlineStoreError` unless every view's table is there."""
        rows = (
            self._connection()
            .execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetchall()
        )
        missing = sorted(set(self._tables) - {name for (name,) in rows})
        if missing:
            raise OnlineStoreError(
                f"the online store {self.path} lacks {', '.join(missing)}: "
                "run `fraud features materialize`"
            )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _rows(self, card_id: int, merchant_id: int) -> list[Any]:
        card = entity_key("card_id", card_id)
        merchant = entity_key("merchant_id", merchant_id)
        try:
            return self._connection().execute(self._sql, (card, merchant)).fetchall()
        except sqlite3.DatabaseError:
            # The file was replaced (a fresh materialization): reconnect once.
            self.close()
            return self._connection().execute(self._sql, (card, merchant)).fetchall()

    def lookup(self, card_id: int, merchant_id: int, at_s: float) -> Lookup:
        """Features of ``card_id`` and ``merchant_id`` for a transaction at ``at_s``
        (epoch seconds)."""
        values = [math.nan] * len(LOOKED_UP)
        found = [False, False, False]
        event = [0.0, 0.0, 0.0]
        decoded: list[tuple[int, str, float | str | None]] = []
        for view, name, blob, ts in self._rows(card_id, merchant_id):
            found[view] = True
            stamp = float(ts) if not isinstance(ts, str) else _epoch(ts)
            event[view] = max(event[view], stamp)
            decoded.append((view, name, decode_value(blob)))
        live = [
            found[i] and (_TTL_S[i] is None or at_s - event[i] <= _TTL_S[i])  # type: ignore[operator]
            for i in range(len(VIEWS))
        ]
        for view, name, value in decoded:
            if live[view] and value is not None and not isinstance(value, str):
                values[_SLOT[name]] = value
        ages = [at_s - event[i] for i in _AGED if live[i]]
        return Lookup(
            values=values,
            unknown_card=not (found[0] or found[1]),
            unknown_merchant=not found[2],
            feature_age_s=max(ages) if ages else None,
        )


def _epoch(text: str) -> float:
    stamp = dt.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()
