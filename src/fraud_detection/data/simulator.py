"""The seeded card-transaction simulator behind ``fraud simulate``.

A *world* (cards, merchants and their hidden traits) is drawn once from ``config.seed``;
each day is then drawn from its own random stream seeded from ``(seed, day)``, so any
day can be regenerated alone and comes out identical to the same day inside a full run.

The generative process, in short:

* **Cards** live around a few city centres, have a card type, a usual spend (lognormal
  ``mu``/``sigma`` per card), a heavy-tailed activity weight and 5-10 favourite merchants,
  mostly near home.
* **Merchants** have a category (realistic frequencies), a location, ``online_only`` for
  digital categories, a popularity and a hidden risk score (higher for electronics,
  jewelry, gambling, digital goods, online retail and travel). Risk is not written out.
* **Legitimate transactions**: cards drawn in proportion to activity, mostly at their
  favourite merchants, amount from the card's spend times a category multiplier, hours
  from a daytime-heavy mixture, some short shopping sessions (several purchases within
  minutes) so that velocity alone is not a giveaway.
* **Fraud** is hidden and behavioural: mostly compromised-card bursts (1-6 transactions
  within minutes, at risky non-favourite merchants, often far from home, night-biased,
  amounts several times the usual spend, mostly online) plus a smaller share of ordinary
  transactions turned fraudulent with a logistic probability of amount ratio, merchant
  risk, night hour, distance from home and merchant novelty. Overall about 1 %.
* **Drift** from ``scenario.drift.start_day``: ``fraud_pattern`` switches most fraud to
  card testing (many small daytime amounts at digital-goods merchants and contactless
  in nearby shops); ``spending`` scales amounts up ~1.4x and sends more purchases online.
* **Broken feed**: :func:`corrupt` damages one day's partition in a named way.

Labels (chargebacks) arrive ``label_delay_days`` after the transaction and are written
under their arrival date.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraud_detection.config import CORRUPTIONS, VALUE_CORRUPTIONS, SimulateConfig, StatePaths
from fraud_detection.data.schema import (
    CARD_TYPES,
    CHANNELS,
    MERCHANT_CATEGORIES,
)

__all__ = [
    "SimulationSummary",
    "World",
    "build_world",
    "corrupt",
    "simulate_day",
    "write_simulation",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

# ------------------------------------------------------------------ world constants

# City centres (lat, lon) and their share of cards and shops.
_CITIES = np.array(
    [
        (40.71, -74.01),  # New York
        (34.05, -118.24),  # Los Angeles
        (41.88, -87.63),  # Chicago
        (29.76, -95.37),  # Houston
        (33.45, -112.07),  # Phoenix
        (39.95, -75.17),  # Philadelphia
        (47.61, -122.33),  # Seattle
        (25.76, -80.19),  # Miami
    ]
)
_CITY_WEIGHTS = np.array([0.26, 0.18, 0.13, 0.11, 0.08, 0.08, 0.08, 0.08])
_HOME_SPREAD_DEG = 0.12  # ~13 km
_IP_SPREAD_DEG = 0.04  # an online purchase geolocates near where the buyer is

# Per category, in MERCHANT_CATEGORIES order: share of merchants, probability that a
# merchant sells online only, amount multiplier, and whether its risk is elevated.
_CATEGORY_TABLE: dict[str, tuple[float, float, float, bool]] = {
    "grocery": (0.19, 0.02, 1.0, False),
    "restaurant": (0.16, 0.0, 0.8, False),
    "fuel": (0.09, 0.0, 1.1, False),
    "pharmacy": (0.06, 0.05, 0.6, False),
    "clothing": (0.09, 0.15, 1.6, False),
    "electronics": (0.05, 0.25, 3.0, True),
    "travel": (0.04, 0.5, 4.5, True),
    "entertainment": (0.07, 0.3, 0.9, False),
    "online_retail": (0.12, 1.0, 1.3, True),
    "digital_goods": (0.08, 1.0, 0.35, True),
    "jewelry": (0.02, 0.1, 4.0, True),
    "gambling": (0.03, 0.6, 1.5, True),
}
if tuple(_CATEGORY_TABLE) != MERCHANT_CATEGORIES:
    raise RuntimeError("_CATEGORY_TABLE must list MERCHANT_CATEGORIES, in order")
_CAT_SHARE = np.array([v[0] for v in _CATEGORY_TABLE.values()])
_CAT_ONLINE = np.array([v[1] for v in _CATEGORY_TABLE.values()])
_CAT_AMOUNT = np.array([v[2] for v in _CATEGORY_TABLE.values()])
_CAT_RISKY = np.array([v[3] for v in _CATEGORY_TABLE.values()])
_DIGITAL_GOODS = MERCHANT_CATEGORIES.index("digital_goods")

_CARD_TYPE_SHARE = np.array([0.55, 0.40, 0.05])  # debit, credit, prepaid
_CARD_TYPE_MU_SHIFT = np.array([0.0, 0.25, -0.4])
_MAX_FAVOURITES = 10

_IN_STORE, _ONLINE, _CONTACTLESS = (
    CHANNELS.index(c) for c in ("in_store", "online", "contactless")
)
_CATEGORY_NAMES = np.array(MERCHANT_CATEGORIES, dtype=object)
_CHANNEL_NAMES = np.array(CHANNELS, dtype=object)

# --------------------------------------------------------------------- day constants

# Monday..Sunday; the mean is 1 so rows_per_day stays the mean.
_WEEKDAY_FACTOR = (0.94, 0.93, 0.94, 0.96, 1.03, 1.10, 1.10)
_P_FAVOURITE = 0.75  # share of legitimate purchases at a favourite merchant
_P_LOCAL = 0.15  # ... at another shop in the home city; the rest anywhere
_P_SESSION = 0.06  # share of purchases that follow another of the same card within minutes
_P_CONTACTLESS = 0.6  # in-person purchases paid contactless
_SPENDING_DRIFT = 1.4  # amount multiplier of the "spending" drift
_P_DRIFT_ONLINE = 0.12  # extra purchases sent online by the "spending" drift

_BURST_ROW_SHARE = 0.0072  # expected fraud-burst rows per row
_FLIP_INTERCEPT = -8.3  # logistic intercept of the "ordinary purchase was fraud" process
# After a fraud_pattern drift: more burst rows, most of them card testing, and fewer
# ordinary-looking purchases turned fraudulent (the old pattern fades).
_DRIFT_BURST_ROW_SHARE = 0.0095
_TESTING_SHARE = 0.8
_DRIFT_FLIP_SHIFT = -1.2

_DAY_US = 86_400 * 1_000_000

# Random streams: the world, each day, and each day's corruption are independent.
_WORLD_STREAM, _DAY_STREAM, _CORRUPT_STREAM = 0, 1, 2


# ------------------------------------------------------------------------- the world


@dataclass(frozen=True, eq=False)
class World:
    """Cards and merchants, with the hidden traits that drive spending and fraud.

    ``cards`` and ``merchants`` are the public reference tables (schema.CARD_COLUMNS and
    MERCHANT_COLUMNS); everything else is hidden and indexed by position (id - 1).
    """

    cards: pd.DataFrame
    merchants: pd.DataFrame
    card_lat: FloatArray
    card_lon: FloatArray
    card_city: IntArray
    spend_mu: FloatArray  # log of the usual amount
    spend_sigma: FloatArray
    card_cdf: FloatArray  # cumulative activity weights: who buys
    favourites: IntArray  # (cards, _MAX_FAVOURITES) merchant positions
    n_favourites: IntArray
    merchant_lat: FloatArray
    merchant_lon: FloatArray
    merchant_category: IntArray  # index into MERCHANT_CATEGORIES
    merchant_online: BoolArray
    merchant_risk: FloatArray  # hidden
    merchant_cdf: FloatArray  # cumulative popularity
    city_merchants: IntArray  # in-person merchant positions sorted by city
    city_start: IntArray
    city_count: IntArray
    online_merchants: IntArray
    online_cdf: FloatArray
    fraud_cdf: FloatArray  # where fraudsters shop
    testing_merchants: IntArray  # digital-goods merchants (card testing)

    @property
    def n_cards(self) -> int:
        return len(self.card_lat)

    @property
    def n_merchants(self) -> int:
        return len(self.merchant_lat)


def _cdf(weights: FloatArray) -> FloatArray:
    cdf: FloatArray = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    return cdf


def _draw(cdf: FloatArray, rng: np.random.Generator, size: int) -> IntArray:
    """Positions drawn with probabilities given by a cumulative weight array."""
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(idx, len(cdf) - 1).astype(np.int64)


def _pick_in_city(
    world_like: tuple[IntArray, IntArray, IntArray],
    city: IntArray,
    fallback: IntArray,
    rng: np.random.Generator,
) -> IntArray:
    """A uniformly random in-person merchant in each given city (``fallback`` if none)."""
    members, start, count = world_like
    u = rng.random(len(city))
    n = count[city]
    pos = start[city] + np.minimum((u * n).astype(np.int64), np.maximum(n - 1, 0))
    has = n > 0
    out = fallback.copy()
    if len(members):
        out[has] = members[pos[has]]
    return out


def build_world(config: SimulateConfig) -> World:
    """Draw cards and merchants; deterministic from ``config.seed``."""
    rng = np.random.default_rng([config.seed, _WORLD_STREAM])
    n_m, n_c = config.merchants, config.cards

    # Merchants.
    m_city = rng.choice(len(_CITIES), size=n_m, p=_CITY_WEIGHTS).astype(np.int64)
    m_cat = rng.choice(len(MERCHANT_CATEGORIES), size=n_m, p=_CAT_SHARE).astype(np.int64)
    m_online = rng.random(n_m) < _CAT_ONLINE[m_cat]
    m_lat = _CITIES[m_city, 0] + rng.normal(0, _HOME_SPREAD_DEG, n_m)
    m_lon = _CITIES[m_city, 1] + rng.normal(0, _HOME_SPREAD_DEG, n_m)
    risky = _CAT_RISKY[m_cat]
    m_risk = np.where(risky, rng.beta(3.0, 9.0, n_m), rng.beta(1.5, 18.0, n_m))
    popularity = rng.lognormal(0.0, 1.0, n_m)
    merchant_cdf = _cdf(popularity)

    physical = np.flatnonzero(~m_online)
    order = np.argsort(m_city[physical], kind="stable")
    city_merchants = physical[order].astype(np.int64)
    city_count = np.bincount(m_city[physical], minlength=len(_CITIES)).astype(np.int64)
    city_start = (np.cumsum(city_count) - city_count).astype(np.int64)

    online = np.flatnonzero(m_online).astype(np.int64)
    if len(online) == 0:  # tiny worlds: fall back to every merchant
        online = np.arange(n_m, dtype=np.int64)
    online_cdf = _cdf(popularity[online])
    fraud_cdf = _cdf(m_risk**2 * np.sqrt(popularity) * np.where(m_online, 2.5, 1.0))
    testing = np.flatnonzero(m_cat == _DIGITAL_GOODS).astype(np.int64)
    if len(testing) == 0:
        testing = online

    # Cards.
    c_city = rng.choice(len(_CITIES), size=n_c, p=_CITY_WEIGHTS).astype(np.int64)
    c_lat = _CITIES[c_city, 0] + rng.normal(0, _HOME_SPREAD_DEG, n_c)
    c_lon = _CITIES[c_city, 1] + rng.normal(0, _HOME_SPREAD_DEG, n_c)
    c_type = rng.choice(len(CARD_TYPES), size=n_c, p=_CARD_TYPE_SHARE)
    spend_mu = rng.normal(np.log(28.0), 0.45, n_c) + _CARD_TYPE_MU_SHIFT[c_type]
    spend_sigma = rng.uniform(0.35, 0.75, n_c)
    activity = rng.lognormal(0.0, 1.0, n_c)
    card_cdf = _cdf(activity)

    # Favourites: mostly shops in the home city, some online merchants.
    n_fav = rng.integers(5, _MAX_FAVOURITES + 1, n_c).astype(np.int64)
    slots_city = np.repeat(c_city, _MAX_FAVOURITES)
    global_pick = _draw(merchant_cdf, rng, n_c * _MAX_FAVOURITES)
    local_pick = _pick_in_city(
        (city_merchants, city_start, city_count), slots_city, global_pick, rng
    )
    online_pick = online[_draw(online_cdf, rng, n_c * _MAX_FAVOURITES)]
    favourites = np.where(rng.random(n_c * _MAX_FAVOURITES) < 0.8, local_pick, online_pick)
    favourites = favourites.reshape(n_c, _MAX_FAVOURITES).astype(np.int64)

    cards = pd.DataFrame(
        {
            "card_id": np.arange(1, n_c + 1, dtype=np.int64),
            "home_latitude": c_lat,
            "home_longitude": c_lon,
            "card_type": _strings(np.array(CARD_TYPES, dtype=object)[c_type]),
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": np.arange(1, n_m + 1, dtype=np.int64),
            "merchant_category": _strings(_CATEGORY_NAMES[m_cat]),
            "latitude": m_lat,
            "longitude": m_lon,
            "online_only": m_online.astype(bool),
        }
    )
    return World(
        cards=cards,
        merchants=merchants,
        card_lat=c_lat,
        card_lon=c_lon,
        card_city=c_city,
        spend_mu=spend_mu,
        spend_sigma=spend_sigma,
        card_cdf=card_cdf,
        favourites=favourites,
        n_favourites=n_fav,
        merchant_lat=m_lat,
        merchant_lon=m_lon,
        merchant_category=m_cat,
        merchant_online=m_online,
        merchant_risk=m_risk,
        merchant_cdf=merchant_cdf,
        city_merchants=city_merchants,
        city_start=city_start,
        city_count=city_count,
        online_merchants=online,
        online_cdf=online_cdf,
        fraud_cdf=fraud_cdf,
        testing_merchants=testing,
    )


# --------------------------------------------------------------------------- one day


# The ``string`` dtype of every text column, as pandas also reads it back from Parquet.
_STRING = pd.StringDtype("python")


def _strings(values: Any) -> pd.arrays.StringArray:
    """A pandas ``string`` array (stored as a Parquet string column)."""
    out: pd.arrays.StringArray = pd.array(values, dtype=_STRING)
    return out


def _haversine_km(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray
) -> FloatArray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dlmb = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    km: FloatArray = 12_742.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return km


def _daytime_hours(rng: np.random.Generator, size: int) -> FloatArray:
    """Hours of the day: a midday peak, an evening peak and a flat background."""
    comp = rng.random(size)
    hours = np.where(
        comp < 0.50,
        rng.normal(12.5, 2.8, size),
        np.where(comp < 0.88, rng.normal(19.0, 2.2, size), rng.uniform(0.0, 24.0, size)),
    )
    return np.mod(hours, 24.0)


def _night_hours(rng: np.random.Generator, size: int) -> FloatArray:
    return np.where(rng.random(size) < 0.55, rng.uniform(0.0, 5.5, size), _daytime_hours(rng, size))


def _in_person_channel(rng: np.random.Generator, size: int, p_contactless: float) -> IntArray:
    return np.where(rng.random(size) < p_contactless, _CONTACTLESS, _IN_STORE).astype(np.int64)


@dataclass
class _Rows:
    card: IntArray
    merchant: IntArray
    micros: IntArray  # microseconds since the start of the day
    amount: FloatArray
    channel: IntArray
    lat: FloatArray
    lon: FloatArray
    fraud: BoolArray

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        return _Rows(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _Rows.__dataclass_fields__)
        )

    def take(self, idx: IntArray) -> _Rows:
        return _Rows(*(getattr(self, f)[idx] for f in _Rows.__dataclass_fields__))


def _locate(
    world: World, rng: np.random.Generator, card: IntArray, merchant: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Merchant location for in-person purchases, the buyer's (IP) location online."""
    online = world.merchant_online[merchant]
    n = len(card)
    lat = np.where(
        online,
        world.card_lat[card] + rng.normal(0, _IP_SPREAD_DEG, n),
        world.merchant_lat[merchant],
    )
    lon = np.where(
        online,
        world.card_lon[card] + rng.normal(0, _IP_SPREAD_DEG, n),
        world.merchant_lon[merchant],
    )
    return lat, lon


def _legit(
    world: World, rng: np.random.Generator, n: int, spending: bool
) -> tuple[_Rows, FloatArray]:
    """Ordinary purchases, and the log-odds that each one is in fact fraud."""
    card = _draw(world.card_cdf, rng, n)
    micros = (_daytime_hours(rng, n) * 3600e6).astype(np.int64)

    # Shopping sessions: some purchases follow another one of the same card within minutes.
    n_follow = int(n * _P_SESSION) if n >= 4 else 0
    if n_follow:
        perm = rng.permutation(n)
        follower = perm[:n_follow]
        anchor = perm[n_follow + rng.integers(0, n - n_follow, n_follow)]
        card[follower] = card[anchor]
        gap = (rng.exponential(6 * 60, n_follow) * 1e6).astype(np.int64)
        micros[follower] = micros[anchor] + gap

    # Where: a favourite, another shop in town, or anywhere.
    u = rng.random(n)
    slot = (rng.random(n) * world.n_favourites[card]).astype(np.int64)
    favourite = world.favourites[card, slot]
    anywhere = _draw(world.merchant_cdf, rng, n)
    local = _pick_in_city(
        (world.city_merchants, world.city_start, world.city_count),
        world.card_city[card],
        anywhere,
        rng,
    )
    is_favourite = u < _P_FAVOURITE
    merchant = np.where(
        is_favourite, favourite, np.where(u < _P_FAVOURITE + _P_LOCAL, local, anywhere)
    )
    if spending:  # more shopping moves online
        moved = rng.random(n) < _P_DRIFT_ONLINE
        merchant = np.where(
            moved, world.online_merchants[_draw(world.online_cdf, rng, n)], merchant
        )
        is_favourite &= ~moved

    cat = world.merchant_category[merchant]
    usual = np.exp(world.spend_mu[card]) * _CAT_AMOUNT[cat] * (_SPENDING_DRIFT if spending else 1.0)
    log_ratio = world.spend_sigma[card] * rng.standard_normal(n)
    amount = np.maximum(np.round(usual * np.exp(log_ratio), 2), 0.5)

    online = world.merchant_online[merchant]
    channel = np.where(online, _ONLINE, _in_person_channel(rng, n, _P_CONTACTLESS))
    lat, lon = _locate(world, rng, card, merchant)

    # The hidden "this ordinary-looking purchase was fraud" process.
    hour = micros / 3600e6
    night = (np.mod(hour, 24.0) < 5.5).astype(np.float64)
    distance = _haversine_km(world.card_lat[card], world.card_lon[card], lat, lon)
    logit = (
        _FLIP_INTERCEPT
        + 1.6 * log_ratio
        + 6.0 * world.merchant_risk[merchant]
        + 1.2 * night
        + 0.55 * np.log1p(distance / 20.0)
        + 0.9 * (~is_favourite)
    )
    rows = _Rows(
        card, merchant, micros, amount, channel.astype(np.int64), lat, lon, np.zeros(n, dtype=bool)
    )
    return rows, logit


def _burst_layout(
    rng: np.random.Generator,
    n_bursts: int,
    low: int,
    high: int,
    start_hours: FloatArray,
    mean_gap_s: float,
) -> tuple[IntArray, IntArray]:
    """Per-row burst index and microsecond times for bursts of ``low..high`` rows."""
    sizes = rng.integers(low, high + 1, n_bursts)
    burst = np.repeat(np.arange(n_bursts), sizes)
    gaps = (rng.exponential(mean_gap_s, len(burst)) * 1e6).astype(np.int64)
    first = np.cumsum(sizes) - sizes
    gaps[first] = 0
    csum = np.cumsum(gaps)
    offset = csum - np.repeat(csum[first], sizes)
    span = offset[np.cumsum(sizes) - 1] if n_bursts else np.zeros(0, dtype=np.int64)
    start = (start_hours * 3600e6).astype(np.int64)
    start = np.clip(start, 0, np.maximum(_DAY_US - 1 - span, 0))
    micros = np.minimum(np.repeat(start, sizes) + offset, _DAY_US - 1)
    return burst.astype(np.int64), micros.astype(np.int64)


def _compromised(world: World, rng: np.random.Generator, n_bursts: int) -> _Rows:
    """Classic fraud: a stolen card used quickly, far away, at risky shops, for a lot."""
    cards = rng.integers(0, world.n_cards, n_bursts)
    burst, micros = _burst_layout(rng, n_bursts, 1, 6, _night_hours(rng, n_bursts), 150.0)
    n = len(burst)
    card = cards[burst]
    merchant = _draw(world.fraud_cdf, rng, n)
    cat = world.merchant_category[merchant]
    usual = np.exp(world.spend_mu[card]) * _CAT_AMOUNT[cat]
    amount = np.round(usual * np.exp(rng.normal(np.log(3.0), 0.6, n)), 2)
    online = world.merchant_online[merchant]
    channel = np.where(online, _ONLINE, _in_person_channel(rng, n, 0.2))
    # The fraudster is usually elsewhere: an IP in another city (per burst).
    away_city = rng.integers(0, len(_CITIES), n_bursts)[burst]
    away = (rng.random(n_bursts) < 0.7)[burst]
    ip_lat = np.where(away, _CITIES[away_city, 0], world.card_lat[card]) + rng.normal(0, 0.1, n)
    ip_lon = np.where(away, _CITIES[away_city, 1], world.card_lon[card]) + rng.normal(0, 0.1, n)
    lat = np.where(online, ip_lat, world.merchant_lat[merchant])
    lon = np.where(online, ip_lon, world.merchant_lon[merchant])
    return _Rows(
        card, merchant, micros, amount, channel.astype(np.int64), lat, lon, np.ones(n, dtype=bool)
    )


def _card_testing(world: World, rng: np.random.Generator, n_bursts: int) -> _Rows:
    """The drifted pattern (card testing): many small daytime charges.

    At digital-goods merchants online, or contactless in shops near the card's home.
    """
    cards = rng.integers(0, world.n_cards, n_bursts)
    burst, micros = _burst_layout(rng, n_bursts, 3, 10, _daytime_hours(rng, n_bursts), 90.0)
    n = len(burst)
    card = cards[burst]
    in_shop = (rng.random(n_bursts) < 0.4)[burst]
    digital = world.testing_merchants[rng.integers(0, len(world.testing_merchants), n)]
    anywhere = _draw(world.merchant_cdf, rng, n)
    nearby = _pick_in_city(
        (world.city_merchants, world.city_start, world.city_count),
        world.card_city[card],
        anywhere,
        rng,
    )
    merchant = np.where(in_shop, nearby, digital)
    amount = np.round(rng.uniform(0.5, 5.0, n), 2)
    online = world.merchant_online[merchant]
    channel = np.where(online, _ONLINE, _CONTACTLESS)
    lat, lon = _locate(world, rng, card, merchant)
    return _Rows(
        card, merchant, micros, amount, channel.astype(np.int64), lat, lon, np.ones(n, dtype=bool)
    )


def _transaction_ids(date: dt.date, n: int) -> pd.arrays.StringArray:
    """``T<YYYYMMDD>-<7-digit counter>``: unique across a run, built without a Python loop."""
    numbers = pc.utf8_lpad(
        pa.array(np.arange(n, dtype=np.int64)).cast(pa.string()), width=7, padding="0"
    )
    ids = pc.binary_join_element_wise(f"T{date:%Y%m%d}-", numbers, "")
    return _strings(ids.to_numpy(zero_copy_only=False))


def _day_date(config: SimulateConfig, day: int) -> dt.date:
    return config.start_date + dt.timedelta(days=day)


def simulate_day(
    world: World, config: SimulateConfig, day: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Transactions and their labels for the 0-based ``day``; the same for the same inputs.

    The day has its own random stream, seeded from ``(seed, day)``, so day 5 alone
    equals day 5 in a full run. Drift applies from ``scenario.drift.start_day``; the
    broken-feed corruption damages the transactions (never the labels) on
    ``scenario.broken_feed.day``.
    """
    if day < 0:
        raise ValueError(f"day must be >= 0, got {day}")
    rng = np.random.default_rng([config.seed, _DAY_STREAM, day])
    date = _day_date(config, day)
    drift = config.scenario.drift
    drifted = drift.enabled and day >= drift.start_day
    spending = drifted and drift.kind in ("spending", "both")
    new_pattern = drifted and drift.kind in ("fraud_pattern", "both")

    n_total = max(1, round(config.rows_per_day * _WEEKDAY_FACTOR[date.weekday()]))
    fraud_rows = (_DRIFT_BURST_ROW_SHARE if new_pattern else _BURST_ROW_SHARE) * n_total
    if new_pattern:
        parts = [
            _compromised(world, rng, int(rng.poisson(fraud_rows * (1 - _TESTING_SHARE) / 3.5))),
            _card_testing(world, rng, int(rng.poisson(fraud_rows * _TESTING_SHARE / 6.5))),
        ]
    else:
        parts = [_compromised(world, rng, int(rng.poisson(fraud_rows / 3.5)))]
    fraud = _Rows.concat(parts)
    n_fraud = min(len(fraud.card), n_total)
    fraud = fraud.take(np.arange(n_fraud))

    legit, logit = _legit(world, rng, n_total - n_fraud, spending)
    if new_pattern:
        logit += _DRIFT_FLIP_SHIFT
    legit.fraud = rng.random(len(logit)) < 1.0 / (1.0 + np.exp(-logit))

    rows = _Rows.concat([legit, fraud])
    rows.micros = np.clip(rows.micros, 0, _DAY_US - 1)
    rows = rows.take(np.argsort(rows.micros, kind="stable"))

    day_start = np.datetime64(date, "us").astype(np.int64)
    timestamps = pd.DatetimeIndex((day_start + rows.micros).astype("datetime64[us]")).tz_localize(
        "UTC"
    )
    ids = _transaction_ids(date, len(rows.card))
    card_id = rows.card + 1
    merchant_id = rows.merchant + 1
    transactions = pd.DataFrame(
        {
            "transaction_id": ids,
            "event_timestamp": timestamps,
            "card_id": card_id,
            "merchant_id": merchant_id,
            "merchant_category": _strings(_CATEGORY_NAMES[world.merchant_category[rows.merchant]]),
            "amount": rows.amount.astype(np.float64),
            "channel": _strings(_CHANNEL_NAMES[rows.channel]),
            "latitude": rows.lat.astype(np.float64),
            "longitude": rows.lon.astype(np.float64),
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": ids,
            "card_id": card_id,
            "merchant_id": merchant_id,
            "event_timestamp": timestamps,
            "label_timestamp": timestamps + np.timedelta64(config.label_delay_days, "D"),
            "is_fraud": rows.fraud.astype(np.int8),
        }
    )
    broken = config.scenario.broken_feed
    if broken.enabled and day == broken.day:
        previous = None
        if broken.corruption == "replayed_day":  # the day before, as it was delivered
            clean = config.scenario.model_copy(
                update={"broken_feed": broken.model_copy(update={"enabled": False})}
            )
            previous = simulate_day(world, config.model_copy(update={"scenario": clean}), day - 1)[
                0
            ]
        transactions = corrupt(
            transactions,
            broken.corruption,
            np.random.default_rng([config.seed, _CORRUPT_STREAM, day]),
            previous,
        )
    return transactions, labels


# ----------------------------------------------------------------------- corruption


def _some(rng: np.random.Generator, n: int, share: float) -> BoolArray:
    """A random mask with about ``share`` of ``n`` set, and at least one when ``n > 0``."""
    mask = rng.random(n) < share
    if n and not mask.any():
        mask[rng.integers(0, n)] = True
    return mask


# Where an IP-geolocation database puts an address it cannot place (the centre of the US).
_DEFAULT_IP_LOCATION = (37.751, -97.822)
_LOCAL_UTC_OFFSET_H = 5  # timezone_shift: US Eastern time written as if it were UTC
_UNKNOWN_ID_OFFSET = 10_000_000  # ids from a range the reference tables do not hold
SENTINEL_AMOUNT = 9999.99


def corrupt(
    transactions: pd.DataFrame,
    corruption: str,
    rng: np.random.Generator,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A copy of a transaction partition damaged the way ``corruption`` names.

    Schema-level (:data:`~fraud_detection.config.SCHEMA_CORRUPTIONS`): nulls: ~3 % nulls
    in amount, card_id and merchant_category; wrong_types: amount as strings;
    negative_amounts: ~5 % amounts negated; duplicate_ids: ~2 % of rows reuse another
    row's id; missing_column: ``amount`` or ``merchant_category`` dropped; renamed_column:
    ``amount`` renamed ``amt``; future_timestamps: ~3 % of timestamps moved 1-30 days ahead.

    Value-level (:data:`~fraud_detection.config.VALUE_CORRUPTIONS`; the schema still
    holds, feed failures seen in practice): amount_in_cents: every amount x100 (the feed
    switched to minor units); amount_sentinel: ~20 % of amounts are 9999.99 (a placeholder
    for "unknown"); stuck_card: ~30 % of rows carry one card_id (a writer reusing a
    buffer); zeroed_coordinates: ~25 % of rows at (0, 0) (a failed geocoder);
    flipped_longitude: longitudes' sign flipped (west written as east); timezone_shift:
    local time (UTC-5) labelled UTC, times moved 5 h back inside the day;
    channel_missing: contactless reported as in_store (an enum mapping lost a value);
    category_default: ~50 % of categories replaced by "grocery" (a failed lookup's
    default); unknown_cards / unknown_merchants: ~5 % of ids from a range the reference
    tables do not hold; replayed_day: ~30 % of rows are ``previous`` (the day before)
    delivered again with their ids, re-stamped into this day; default_ip_location:
    online purchases geolocated to the IP database's default point.
    """
    df = transactions.copy()
    n = len(df)
    if corruption == "nulls":
        for col in ("amount", "card_id", "merchant_category"):
            if col in df.columns:
                if col == "card_id":
                    df[col] = df[col].astype("Int64")
                df.loc[_some(rng, n, 0.03), col] = pd.NA
    elif corruption == "wrong_types":
        df["amount"] = pd.Series(
            np.char.mod("%.2f", df["amount"].to_numpy()), index=df.index, dtype=object
        )
    elif corruption == "negative_amounts":
        mask = _some(rng, n, 0.05)
        df.loc[mask, "amount"] = -df.loc[mask, "amount"]
    elif corruption == "duplicate_ids":
        if n < 2:
            df = pd.concat([df, df], ignore_index=True)
        else:
            k = max(1, int(0.02 * n))
            perm = rng.permutation(n)
            ids = df["transaction_id"].to_numpy(dtype=object).copy()
            ids[perm[:k]] = ids[perm[k : 2 * k]]
            df["transaction_id"] = _strings(ids)
    elif corruption == "missing_column":
        df = df.drop(columns=str(rng.choice(["amount", "merchant_category"])))
    elif corruption == "renamed_column":
        df = df.rename(columns={"amount": "amt"})
    elif corruption == "future_timestamps":
        mask = _some(rng, n, 0.03)
        shift = pd.to_timedelta(rng.integers(1, 31, int(mask.sum())), unit="D")
        df.loc[mask, "event_timestamp"] = df.loc[mask, "event_timestamp"] + shift
    elif corruption in _VALUE_DAMAGE:
        df = _VALUE_DAMAGE[corruption](df, rng, previous)
    else:
        raise ValueError(f"unknown corruption {corruption!r}: choose from {', '.join(CORRUPTIONS)}")
    return df


def _amount_in_cents(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    return df.assign(amount=df["amount"] * 100.0)


def _amount_sentinel(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    df.loc[_some(rng, len(df), 0.2), "amount"] = SENTINEL_AMOUNT
    return df


def _stuck_card(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    if len(df):
        df.loc[_some(rng, len(df), 0.3), "card_id"] = int(df["card_id"].iloc[0])
    return df


def _zeroed_coordinates(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    df.loc[_some(rng, len(df), 0.25), ["latitude", "longitude"]] = 0.0
    return df


def _flipped_longitude(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    return df.assign(longitude=-df["longitude"])


def _timezone_shift(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    ts = df["event_timestamp"]
    if len(df):
        start = ts.min().floor("D")
        day = pd.Timedelta(days=1)
        shifted = start + (ts - start - pd.Timedelta(hours=_LOCAL_UTC_OFFSET_H)) % day
        df["event_timestamp"] = shifted.dt.as_unit("us")
    return df


def _channel_missing(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    df.loc[df["channel"] == "contactless", "channel"] = "in_store"
    return df


def _category_default(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    df.loc[_some(rng, len(df), 0.5), "merchant_category"] = "grocery"
    return df


def _unknown(column: str) -> Callable[[pd.DataFrame, np.random.Generator, Any], pd.DataFrame]:
    def damage(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
        mask = _some(rng, len(df), 0.05)
        df.loc[mask, column] = df.loc[mask, column] + _UNKNOWN_ID_OFFSET
        return df

    return damage


def _replayed_day(
    df: pd.DataFrame, rng: np.random.Generator, previous: pd.DataFrame | None
) -> pd.DataFrame:
    if previous is None or not len(previous):
        raise ValueError("replayed_day needs the day before (previous=...)")
    k = min(int(0.3 * len(df)), len(previous))
    again = previous.iloc[np.sort(rng.choice(len(previous), k, replace=False))].copy()
    shift = df["event_timestamp"].min().floor("D") - again["event_timestamp"].min().floor("D")
    again["event_timestamp"] = again["event_timestamp"] + shift
    kept = df.iloc[np.sort(rng.choice(len(df), len(df) - k, replace=False))]
    out = pd.concat([kept, again], ignore_index=True)
    return out.sort_values("event_timestamp", kind="stable", ignore_index=True)


def _default_ip_location(df: pd.DataFrame, rng: np.random.Generator, _: Any) -> pd.DataFrame:
    online = df["channel"] == "online"
    df.loc[online, "latitude"], df.loc[online, "longitude"] = _DEFAULT_IP_LOCATION
    return df


_VALUE_DAMAGE: dict[str, Callable[[pd.DataFrame, np.random.Generator, Any], pd.DataFrame]] = {
    "amount_in_cents": _amount_in_cents,
    "amount_sentinel": _amount_sentinel,
    "stuck_card": _stuck_card,
    "zeroed_coordinates": _zeroed_coordinates,
    "flipped_longitude": _flipped_longitude,
    "timezone_shift": _timezone_shift,
    "channel_missing": _channel_missing,
    "category_default": _category_default,
    "unknown_cards": _unknown("card_id"),
    "unknown_merchants": _unknown("merchant_id"),
    "replayed_day": _replayed_day,
    "default_ip_location": _default_ip_location,
}
if set(_VALUE_DAMAGE) != set(VALUE_CORRUPTIONS):
    raise RuntimeError("_VALUE_DAMAGE must cover VALUE_CORRUPTIONS")


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SimulationSummary:
    """What a run wrote: row and fraud counts, the date range and every file."""

    rows: int
    days: int
    fraud_rate: float
    files: list[Path]
    fraud: int = 0
    first_date: dt.date | None = None
    last_date: dt.date | None = None


def _write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write without the index, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    os.replace(tmp, path)
    return path


def _clear_previous_run(paths: StatePaths) -> None:
    """Remove the partitions and reference tables of an earlier run (only those)."""
    for folder, prefix in ((paths.raw, "date="), (paths.labels, "arrival_date=")):
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and child.name.startswith(prefix):
                    shutil.rmtree(child)
    for name in ("cards.parquet", "merchants.parquet"):
        (paths.reference / name).unlink(missing_ok=True)


def _scenario_note(config: SimulateConfig, day: int) -> str:
    """What a scenario does on ``day`` (an index from 0), for the progress line, which
    counts days from 1: the note names the index the flag or config key was given."""
    notes = []
    drift, broken = config.scenario.drift, config.scenario.broken_feed
    if drift.enabled and day == drift.start_day:
        notes.append(f"drift ({drift.kind}) starts: --drift-day {day}")
    if broken.enabled and day == broken.day:
        notes.append(f"broken feed ({broken.corruption}): --broken-day {day}")
    return f"  <- {'; '.join(notes)}" if notes else ""


def write_simulation(
    config: SimulateConfig,
    paths: StatePaths,
    progress: Callable[[str], None] | None = None,
) -> SimulationSummary:
    """Simulate ``config.days`` days and write reference tables, partitions and labels.

    Partitions of an earlier run are removed first, so a shorter rerun leaves nothing
    stale behind. Labels go under their arrival date, ``label_delay_days`` later.
    """
    world = build_world(config)
    _clear_previous_run(paths)
    files = [
        _write_parquet(world.cards, paths.reference / "cards.parquet"),
        _write_parquet(world.merchants, paths.reference / "merchants.parquet"),
    ]
    total_rows = total_fraud = 0
    for day in range(config.days):
        date = _day_date(config, day)
        transactions, labels = simulate_day(world, config, day)
        arrival = date + dt.timedelta(days=config.label_delay_days)
        files.append(
            _write_parquet(transactions, paths.raw / f"date={date}" / "transactions.parquet")
        )
        files.append(
            _write_parquet(labels, paths.labels / f"arrival_date={arrival}" / "labels.parquet")
        )
        rows, fraud = len(transactions), int(labels["is_fraud"].sum())
        total_rows += rows
        total_fraud += fraud
        if progress is not None:
            progress(
                f"day {day + 1}/{config.days} {date}: {rows} rows, {fraud} fraud"
                + _scenario_note(config, day)
            )
    return SimulationSummary(
        rows=total_rows,
        days=config.days,
        fraud_rate=total_fraud / total_rows if total_rows else 0.0,
        files=files,
        fraud=total_fraud,
        first_date=config.start_date,
        last_date=_day_date(config, config.days - 1),
    )
