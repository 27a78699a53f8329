"""Feature engineering: one definition of every feature, for training and for serving.

Every function here is pure (DataFrames in, a DataFrame out; no files, no Feast), so the
same code fills the offline feature tables that Feast joins point-in-time and
materializes online, and computes the request-time features inside the serving API.

* :func:`card_window_arrays`: a card's velocity and spend over trailing windows, exactly
  as of a given time, from the card's events; :func:`card_features` applies it to every
  transaction (training), the prediction API to one card's online state (serving).
* :func:`merchant_features`: a daily snapshot per merchant of its volume and of a
  smoothed fraud rate built only from labels already known on the snapshot day.
* :func:`card_profile`: static card attributes from the cards dimension table.
* :func:`request_features`: what is computed when a transaction arrives, from the
  request and the looked-up features.

Point in time: a transaction's card features cover the card's transactions strictly
before it, decayed to its own time. Offline, the row of each transaction is stamped
with its time, and Feast's point-in-time join at that time picks exactly it; online,
the card's recent transactions are the state and the same function aggregates them when
the request arrives, then the transaction is appended for the card's next request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CARD_FEATURES",
    "CARD_WINDOWS",
    "CATEGORICAL_FEATURES",
    "FEATURE_DTYPES",
    "MERCHANT_FEATURES",
    "MODEL_FEATURES",
    "PRIOR_RATE",
    "PRIOR_WEIGHT",
    "PROFILE_FEATURES",
    "REQUEST_FEATURES",
    "REQUEST_FEATURE_DTYPES",
    "REQUEST_INPUT_DTYPES",
    "card_features",
    "card_profile",
    "card_window_arrays",
    "merchant_features",
    "request_feature_arrays",
    "request_features",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

# ------------------------------------------------------------------ feature names

CARD_FEATURES: tuple[str, ...] = (
    "card_txn_count_1h",
    "card_txn_count_24h",
    "card_txn_count_7d",
    "card_amount_sum_1h",
    "card_amount_sum_24h",
    "card_amount_sum_7d",
    "card_amount_mean_7d",
    "card_amount_max_7d",
    "card_new_merchants_24h",
)
MERCHANT_FEATURES: tuple[str, ...] = (
    "merchant_txn_count_7d",
    "merchant_labeled_30d",
    "merchant_fraud_30d",
    "merchant_fraud_rate_30d",
)
PROFILE_FEATURES: tuple[str, ...] = ("home_latitude", "home_longitude", "card_type")
REQUEST_FEATURES: tuple[str, ...] = (
    "amount_log",
    "amount_to_card_mean_7d",
    "hour_of_day",
    "is_night",
    "distance_from_home_km",
    "is_online",
)
# What a model is trained on: numeric columns, then the raw categorical columns.
MODEL_FEATURES: tuple[str, ...] = (*CARD_FEATURES, "merchant_fraud_rate_30d", *REQUEST_FEATURES)
CATEGORICAL_FEATURES: tuple[str, ...] = ("merchant_category", "channel")

# The pandas dtype of every feature, for Feast schemas (Float64 / Int64 / String).
FEATURE_DTYPES: dict[str, str] = {
    **{name: "int64" for name in CARD_FEATURES if "_count_" in name or "_new_" in name},
    **{name: "float64" for name in CARD_FEATURES if "_amount_" in name},
    "merchant_txn_count_7d": "int64",
    "merchant_labeled_30d": "int64",
    "merchant_fraud_30d": "int64",
    "merchant_fraud_rate_30d": "float64",
    "home_latitude": "float64",
    "home_longitude": "float64",
    "card_type": "string",
    "amount_log": "float64",
    "amount_to_card_mean_7d": "float64",
    "hour_of_day": "int64",
    "is_night": "int64",
    "distance_from_home_km": "float64",
    "is_online": "int64",
}
REQUEST_FEATURE_DTYPES: dict[str, str] = {name: FEATURE_DTYPES[name] for name in REQUEST_FEATURES}
# The columns request_features reads: the request itself, then looked-up features.
REQUEST_INPUT_DTYPES: dict[str, str] = {
    "amount": "float64",
    "event_timestamp": "datetime64[us, UTC]",
    "channel": "string",
    "latitude": "float64",
    "longitude": "float64",
    "card_amount_mean_7d": "float64",
    "home_latitude": "float64",
    "home_longitude": "float64",
}

# ------------------------------------------------------------------ definitions

_US_PER_HOUR = 3_600 * 1_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
CARD_WINDOWS: dict[str, pd.Timedelta] = {
    "1h": pd.Timedelta(hours=1),
    "24h": pd.Timedelta(hours=24),
    "7d": pd.Timedelta(days=7),
}
_CARD_WINDOW_US: tuple[int, ...] = tuple(
    w // pd.Timedelta(microseconds=1) for w in CARD_WINDOWS.values()
)
MERCHANT_TXN_WINDOW_DAYS = 7
MERCHANT_LABEL_WINDOW_DAYS = 30
# Smoothing of the merchant fraud rate: a merchant without labels gets PRIOR_RATE, and
# PRIOR_WEIGHT labels are needed before its own history outweighs the prior.
PRIOR_RATE = 0.01
PRIOR_WEIGHT = 50.0
NIGHT_END_HOUR = 6  # hours 0..5 UTC are night
EARTH_RADIUS_KM = 6_371.0
UNKNOWN_DISTANCE_KM = -1.0


# ------------------------------------------------------------------ helpers


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}")


def _utc(values: pd.Series, name: str) -> pd.Series:
    """A timezone-aware datetime column in UTC at microsecond resolution."""
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        raise TypeError(f"{name} must be timezone-aware datetimes, got dtype {values.dtype}")
    out: pd.Series = values.dt.tz_convert("UTC").dt.as_unit("us")
    return out


def _micros(values: pd.Series) -> IntArray:
    """Microseconds since the epoch of a UTC ``datetime64[us, UTC]`` column."""
    out: IntArray = pd.DatetimeIndex(values).asi8
    return out


def _utc_timestamp(value: pd.Timestamp | dt.datetime, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise TypeError(f"{name} must be timezone-aware, got {stamp}")
    return stamp.tz_convert("UTC").as_unit("us")


def _timestamps(micros: IntArray) -> pd.DatetimeIndex:
    """``datetime64[us, UTC]`` timestamps from microseconds since the epoch."""
    return pd.DatetimeIndex(micros.astype("datetime64[us]")).tz_localize("UTC")


def _range_max(values: FloatArray, lo: IntArray, hi: IntArray) -> FloatArray:
    """``max(values[lo[i] : hi[i] + 1])`` for every i: a sparse table, level by level, or
    one ``reduceat`` when the ranges are short (a card's state: ~30x faster there)."""
    out = np.empty(len(lo), dtype=np.float64)
    if len(lo) == 0:
        return out
    if int((hi - lo).sum()) <= 64 * len(values) + 4_096:
        # reduceat also reduces the stretch between one range's end and the next range's
        # start: in start order those stretches do not overlap (linear time), in any
        # other order they can each span most of the array (quadratic: 105 s instead of
        # under 1 s for a 500k-transaction day against 4M rows of history).
        order = np.argsort(lo, kind="stable")
        bounds = np.empty(2 * len(lo), dtype=np.int64)
        bounds[0::2], bounds[1::2] = lo[order], hi[order] + 1
        out[order] = np.maximum.reduceat(np.append(values, 0.0), bounds)[0::2]
        return out
    level = np.frexp((hi - lo + 1).astype(np.float64))[1] - 1  # floor(log2(length))
    table = values
    for k in range(int(level.max()) + 1):
        if k:  # table[i] = max(values[i : i + 2**k])
            half = 1 << (k - 1)
            table = np.maximum(table[:-half], table[half:])
        rows = np.flatnonzero(level == k)
        out[rows] = np.maximum(table[lo[rows]], table[hi[rows] - (1 << k) + 1])
    return out


def _first_visits(
    group: IntArray, merchant: IntArray, t: IntArray, lookback_us: int | None
) -> BoolArray:
    """Whether each row is the card's first visit to that merchant.

    Rows are sorted by ``(group, t)`` with ``group`` the card's dense rank. First in the
    history given, or, with ``lookback_us``, the first after a gap longer than the
    lookback. Of several visits at one instant exactly one is the first.
    """
    if len(merchant) < 1_000:  # np.unique is cheaper than a hash table on a few rows
        codes = np.unique(merchant, return_inverse=True)[1].astype(np.int64)
    else:
        codes = pd.factorize(merchant)[0].astype(np.int64)
    n_codes = int(codes.max()) + 1 if len(codes) else 1
    if (int(group[-1]) + 1 if len(group) else 1) * n_codes < 1 << 62:
        # A stable sort of one (card, merchant) key keeps the time order within a pair.
        order = np.argsort(group * n_codes + codes, kind="stable")
    else:
        order = np.lexsort((t, codes, group))
    g, m, tt = group[order], codes[order], t[order]
    first = np.ones(len(order), dtype=bool)
    repeat = (g[1:] == g[:-1]) & (m[1:] == m[:-1])
    if lookback_us is not None:
        repeat &= tt[1:] - tt[:-1] <= lookback_us
    first[1:] = ~repeat
    out = np.empty_like(first)
    out[order] = first
    return out


# ------------------------------------------------------------------ card velocity


def _card_cumsum(group: IntArray, amount: FloatArray) -> FloatArray:
    """Running sums of ``amount`` that restart with each card (rows sorted by card).

    Per card, so a window sum is a difference of numbers of the card's own magnitude (a
    global cumsum would lose ~1e-7 over a million rows).
    """
    if len(group) == 0 or group[-1] == 0:  # one card: the serving path
        return np.asarray(np.cumsum(amount), dtype=np.float64)
    summed = pd.Series(amount).groupby(group, sort=False).cumsum()
    return np.asarray(summed.to_numpy(dtype=np.float64), dtype=np.float64)


def card_window_arrays(
    event_card: IntArray,
    event_us: IntArray,
    event_amount: FloatArray,
    event_merchant: IntArray,
    query_card: IntArray,
    query_us: IntArray,
    *,
    new_merchant_lookback_us: int | None = None,
) -> dict[str, np.ndarray[Any, Any]]:
    """The :data:`CARD_FEATURES` of each query ``(card, t)``, from the cards' events.

    A feature is computed exactly as of ``t`` over the card's events ``s`` with
    ``t - window < s < t``: decayed to ``t`` (an hour after a burst its 1 h count is 0
    again) and blind to ``t`` itself, so transactions of a card at one instant never see
    each other, whatever order they are scored in. An empty window gives counts and sums
    of 0 and a mean and max of NaN (the model's missing branch).

    ``card_new_merchants_24h`` counts the 24 h window's events that were the card's first
    visit to their merchant among the events given (or, with the lookback, the first in
    that long; of several visits at one instant exactly one is first).

    This one function serves both sides: training computes every transaction's row with
    the transactions themselves as queries (:func:`card_features`), and the prediction
    API calls it on one card's recent events (its online state) and one query. Times are
    microseconds since the epoch; events may come in any order.
    """
    n_q = len(query_us)
    order = np.lexsort((event_us, event_card))
    c, ts = event_card[order], event_us[order]
    a, m = event_amount[order].astype(np.float64), event_merchant[order]
    group = np.zeros(len(c), dtype=np.int64)
    np.cumsum(c[1:] != c[:-1], out=group[1:])
    cards = c[np.concatenate(([0], np.flatnonzero(c[1:] != c[:-1]) + 1))] if len(c) else c

    # Each query's card as the dense group of its events (-1: no events at all).
    q_group = np.searchsorted(cards, query_card)
    known = q_group < len(cards)
    known[known] = cards[q_group[known]] == query_card[known]
    q_group = np.where(known, q_group, -1)

    widths = _CARD_WINDOW_US
    hi = np.zeros(n_q, dtype=np.int64)  # first event at or after t: the window is lo..hi-1
    los = [np.zeros(n_q, dtype=np.int64) for _ in widths]
    if len(c) and known.any():
        pad = max(widths)
        t0 = min(int(ts.min()), int(query_us[known].min()))
        stride = max(int(ts.max()), int(query_us[known].max())) - t0 + pad + 1
        per_chunk = max(1, (1 << 62) // stride)
        q_order = np.argsort(q_group, kind="stable")
        qg_sorted = q_group[q_order]
        for g0 in range(0, int(group[-1]) + 1, per_chunk):
            r0, r1 = (int(r) for r in np.searchsorted(group, [g0, g0 + per_chunk]))
            k0, k1 = (int(k) for k in np.searchsorted(qg_sorted, [g0, g0 + per_chunk]))
            rows = q_order[k0:k1]
            key = (group[r0:r1] - g0) * stride + (ts[r0:r1] - t0 + pad)
            q_key = (q_group[rows] - g0) * stride + (query_us[rows] - t0 + pad)
            hi[rows] = r0 + np.searchsorted(key, q_key, side="left")
            for lo, width in zip(los, widths, strict=True):
                lo[rows] = r0 + np.searchsorted(key, q_key - width, side="right")
    lo_1h, lo_24h, lo_7d = los

    spent = _card_cumsum(group, a)
    lookback = new_merchant_lookback_us
    first = _first_visits(group, m, ts, lookback) if len(c) else np.zeros(0, dtype=bool)
    first_sums = np.concatenate(([0], np.cumsum(first, dtype=np.int64)))

    def window_sum(lo: IntArray) -> FloatArray:
        # spent[lo] - a[lo] is the card's sum before row lo (the cumsum restarts per card).
        out = np.zeros(n_q, dtype=np.float64)
        some = hi > lo
        out[some] = spent[hi[some] - 1] - (spent[lo[some]] - a[lo[some]])
        return out

    count_7d = hi - lo_7d
    sum_7d = window_sum(lo_7d)
    some_7d = count_7d > 0
    mean_7d = np.full(n_q, np.nan)
    np.divide(sum_7d, count_7d, out=mean_7d, where=some_7d)
    max_7d = np.full(n_q, np.nan)
    if some_7d.any():
        max_7d[some_7d] = _range_max(a, lo_7d[some_7d], hi[some_7d] - 1)
    columns: dict[str, np.ndarray[Any, Any]] = {
        "card_txn_count_1h": hi - lo_1h,
        "card_txn_count_24h": hi - lo_24h,
        "card_txn_count_7d": count_7d,
        "card_amount_sum_1h": window_sum(lo_1h),
        "card_amount_sum_24h": window_sum(lo_24h),
        "card_amount_sum_7d": sum_7d,
        "card_amount_mean_7d": mean_7d,
        "card_amount_max_7d": max_7d,
        "card_new_merchants_24h": first_sums[hi] - first_sums[lo_24h],
    }
    return {name: columns[name].astype(FEATURE_DTYPES[name]) for name in CARD_FEATURES}


def card_features(
    transactions: pd.DataFrame,
    since: pd.Timestamp | None = None,
    *,
    new_merchant_lookback: pd.Timedelta | None = None,
) -> pd.DataFrame:
    """Each transaction's card features as of its own time (:func:`card_window_arrays`).

    One row per transaction, with the input's index: ``card_id``, ``event_timestamp``
    (the transaction's time), the :data:`CARD_FEATURES` over the card's other
    transactions in ``(t - window, t)`` and ``created_timestamp``. The feature store joins
    a training row to the row stamped at its own time: what the prediction API computes
    from the card's online state when the same transaction arrives.

    ``card_new_merchants_24h`` depends on how far back ``transactions`` reach; pass
    ``new_merchant_lookback`` to make it independent of that.

    ``since`` keeps only rows at or after it (an incremental update). ``transactions``
    must then reach back 7 days before ``since`` (24 h plus ``new_merchant_lookback`` if
    that is longer) for the windows to be complete.
    """
    _require(transactions, ("card_id", "merchant_id", "event_timestamp", "amount"), "transactions")
    stamps = _utc(transactions["event_timestamp"], "transactions.event_timestamp")
    t = _micros(stamps)
    card = transactions["card_id"].to_numpy(dtype=np.int64)
    keep = np.ones(len(t), dtype=bool)
    if since is not None:
        keep = t >= _utc_timestamp(since, "since").value // 1_000
    lookback = (
        None if new_merchant_lookback is None else new_merchant_lookback // pd.Timedelta(1, "us")
    )
    features = card_window_arrays(
        card,
        t,
        transactions["amount"].to_numpy(dtype=np.float64),
        transactions["merchant_id"].to_numpy(dtype=np.int64),
        card[keep],
        t[keep],
        new_merchant_lookback_us=lookback,
    )
    out = pd.DataFrame(
        {"card_id": card[keep], "event_timestamp": stamps.array[keep]},
        index=transactions.index[keep],
    )
    for name in CARD_FEATURES:
        out[name] = features[name]
    out["created_timestamp"] = out["event_timestamp"]
    return out


# ------------------------------------------------------------------ merchant risk


def _snapshot_days(snapshot_dates: Sequence[dt.date] | pd.DatetimeIndex) -> IntArray:
    """Sorted distinct snapshot days, as days since the epoch (dates are UTC days)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(list(snapshot_dates)))
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    micros = stamps.as_unit("us").asi8
    off_midnight = micros % _US_PER_DAY != 0
    if off_midnight.any():
        raise ValueError(f"snapshot dates must be midnights UTC, got {stamps[off_midnight][0]}")
    days: IntArray = np.unique(micros // _US_PER_DAY)
    return days


def _intervals_covering(
    merchants: IntArray, days: IntArray, member: IntArray, start: IntArray, end: IntArray
) -> IntArray:
    """How many day intervals ``[start, end]`` of each merchant cover each snapshot day.

    Snapshot-major (all merchants of ``days[0]``, then ``days[1]``...). A merchant's
    count at day D is #(start <= D) - #(end < D); folding the merchant's rank into the
    key lets one sorted array answer every merchant at once.
    """
    first, last = int(days[0]), int(days[-1])
    start, end = np.maximum(start, first), np.minimum(end, last)
    live = start <= end
    width = last - first + 1
    rank = np.searchsorted(merchants, member[live])
    start_keys = np.sort(rank * width + (start[live] - first))
    end_keys = np.sort(rank * width + (end[live] - first))
    queries = (
        np.arange(len(merchants), dtype=np.int64)[None, :] * width + (days - first)[:, None]
    ).ravel()
    counts: IntArray = np.searchsorted(start_keys, queries, side="right") - np.searchsorted(
        end_keys, queries, side="left"
    )
    return counts.astype(np.int64)


def merchant_features(
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    snapshot_dates: Sequence[dt.date] | pd.DatetimeIndex,
    merchant_ids: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Daily merchant snapshots: volume and a smoothed, label-delay-aware fraud rate.

    One row per (merchant, snapshot day D), stamped D 00:00 UTC:
    ``merchant_txn_count_7d`` counts transactions in ``[D - 7 d, D)``;
    ``merchant_labeled_30d`` counts labels *known by D* (``label_timestamp <= D``) of
    transactions in ``[D - 30 d, D)``, ``merchant_fraud_30d`` the frauds among them, and
    ``merchant_fraud_rate_30d = (fraud + PRIOR_RATE * PRIOR_WEIGHT) / (labeled +
    PRIOR_WEIGHT)``. A label that arrives after D never counts in snapshot D, so the
    feature cannot leak labels the model would not have had.

    Every merchant seen in ``transactions`` or ``labels`` or listed in ``merchant_ids``
    gets a row for every snapshot (zeros and the prior when it had no activity). Naive
    dates and timestamps are UTC days; a snapshot that is not a midnight is an error.
    """
    _require(transactions, ("merchant_id", "event_timestamp"), "transactions")
    _require(labels, ("merchant_id", "event_timestamp", "label_timestamp", "is_fraud"), "labels")
    days = _snapshot_days(snapshot_dates)
    txn_merchant = transactions["merchant_id"].to_numpy(dtype=np.int64)
    label_merchant = labels["merchant_id"].to_numpy(dtype=np.int64)
    extra = np.asarray([] if merchant_ids is None else list(merchant_ids), dtype=np.int64)
    merchants = np.unique(np.concatenate([txn_merchant, label_merchant, extra]))

    columns: dict[str, Any] = {}
    if len(days) and len(merchants):
        txn_day = _micros(_utc(transactions["event_timestamp"], "transactions.event_timestamp"))
        txn_day //= _US_PER_DAY
        event_day = _micros(_utc(labels["event_timestamp"], "labels.event_timestamp"))
        event_day //= _US_PER_DAY
        label_us = _micros(_utc(labels["label_timestamp"], "labels.label_timestamp"))
        known_day = -(-label_us // _US_PER_DAY)  # the first midnight at or after arrival
        fraud = labels["is_fraud"].to_numpy(dtype=np.int64) == 1

        # A transaction of day d is in the 7-day window of snapshots d+1..d+7; its label
        # is in the 30-day window of snapshots d+1..d+30, from the day it is known.
        txn_count = _intervals_covering(
            merchants, days, txn_merchant, txn_day + 1, txn_day + MERCHANT_TXN_WINDOW_DAYS
        )
        label_start = np.maximum(event_day + 1, known_day)
        label_end = event_day + MERCHANT_LABEL_WINDOW_DAYS
        labeled = _intervals_covering(merchants, days, label_merchant, label_start, label_end)
        frauds = _intervals_covering(
            merchants, days, label_merchant[fraud], label_start[fraud], label_end[fraud]
        )
        columns = {
            "merchant_txn_count_7d": txn_count,
            "merchant_labeled_30d": labeled,
            "merchant_fraud_30d": frauds,
            "merchant_fraud_rate_30d": (frauds + PRIOR_RATE * PRIOR_WEIGHT)
            / (labeled + PRIOR_WEIGHT),
        }
    n_rows = len(days) * len(merchants)
    stamps = _timestamps(np.repeat(days * _US_PER_DAY, len(merchants)))
    out = pd.DataFrame(
        {"merchant_id": np.tile(merchants, len(days)), "event_timestamp": stamps},
        index=pd.RangeIndex(n_rows),
    )
    for name in MERCHANT_FEATURES:
        out[name] = np.asarray(columns.get(name, np.zeros(n_rows)), dtype=FEATURE_DTYPES[name])
    out["created_timestamp"] = out["event_timestamp"]
    return out


# ------------------------------------------------------------------ card profile


def card_profile(cards: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Static card attributes, stamped ``as_of`` (an early time, so every join finds them)."""
    _require(cards, ("card_id", *PROFILE_FEATURES), "cards")
    stamp = _utc_timestamp(as_of, "as_of")
    out = cards[["card_id", *PROFILE_FEATURES]].copy()
    out["event_timestamp"] = _timestamps(np.full(len(out), stamp.value // 1_000, dtype=np.int64))
    out["created_timestamp"] = out["event_timestamp"]
    return out


# ------------------------------------------------------------------ request time


def _floats(df: pd.DataFrame, column: str) -> FloatArray:
    out: FloatArray = df[column].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _haversine_km(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray
) -> FloatArray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dlmb = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    km: FloatArray = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return km


def request_feature_arrays(
    amount: FloatArray,
    timestamp_us: IntArray,
    channel: np.ndarray[Any, Any],
    latitude: FloatArray,
    longitude: FloatArray,
    card_amount_mean_7d: FloatArray,
    home_latitude: FloatArray,
    home_longitude: FloatArray,
) -> dict[str, np.ndarray[Any, Any]]:
    """The array core of :func:`request_features`: numpy in, :data:`REQUEST_FEATURES` out.

    ``timestamp_us`` is microseconds since the epoch (UTC); ``channel`` an object (or
    string) array where anything but ``"online"``, ``None`` included, is not online;
    missing numbers are NaN. Each output has the dtype of :data:`REQUEST_FEATURE_DTYPES`.
    The prediction API calls this on one-element arrays, training through the pandas
    wrapper: one definition of every request-time feature.
    """
    hour = (timestamp_us // _US_PER_HOUR) % 24  # floor division: right before 1970 too
    coords = (latitude, longitude, home_latitude, home_longitude)
    located = ~(
        np.isnan(latitude)
        | np.isnan(longitude)
        | np.isnan(home_latitude)
        | np.isnan(home_longitude)
    )
    has_mean = card_amount_mean_7d > 0  # False for NaN too
    ratio = np.ones_like(amount)
    np.divide(amount, card_amount_mean_7d, out=ratio, where=has_mean)
    distance = np.full_like(amount, UNKNOWN_DISTANCE_KM)
    if located.all():
        distance = _haversine_km(*coords)
    elif located.any():
        distance[located] = _haversine_km(*(c[located] for c in coords))
    online = np.asarray(channel == "online", dtype=bool)
    return {
        "amount_log": np.log1p(amount),
        "amount_to_card_mean_7d": ratio,
        "hour_of_day": hour.astype(np.int64),
        "is_night": (hour < NIGHT_END_HOUR).astype(np.int64),
        "distance_from_home_km": distance,
        "is_online": online.astype(np.int64),
    }


def request_features(df: pd.DataFrame) -> pd.DataFrame:
    """Features computed when a transaction arrives (:data:`REQUEST_FEATURES`), same index.

    Reads :data:`REQUEST_INPUT_DTYPES`. The looked-up ``card_amount_mean_7d``,
    ``home_latitude`` and ``home_longitude`` may be missing (an unknown card): the amount
    ratio is then 1.0 and the distance -1.0. Hours are UTC. The computation itself is
    :func:`request_feature_arrays`, which the prediction API calls directly.
    """
    _require(df, REQUEST_INPUT_DTYPES, "request")
    stamps = _utc(df["event_timestamp"], "event_timestamp")
    channel = df["channel"].astype(object).where(df["channel"].notna(), None).to_numpy()
    features = request_feature_arrays(
        amount=_floats(df, "amount"),
        timestamp_us=_micros(stamps),
        channel=channel,
        latitude=_floats(df, "latitude"),
        longitude=_floats(df, "longitude"),
        card_amount_mean_7d=_floats(df, "card_amount_mean_7d"),
        home_latitude=_floats(df, "home_latitude"),
        home_longitude=_floats(df, "home_longitude"),
    )
    return pd.DataFrame(features, index=df.index)
