"""The ASOF offline store returns what Feast's stock DuckDB store returns, row for row.

Given a small simulated world, its feature tables, and two Feast stores on the same
registry (the project's, configured with ``AsofDuckDBOfflineStore`` in
``feature_repo/feature_store.yaml``, and one with ``offline_store: {type: duckdb}``),
``historical_features`` must give the same rows, columns, dtypes and values (NaN equal to
NaN) for realistic entity rows and for the edge cases of a point-in-time join: duplicated
entity rows, entity rows before any feature row, at the TTL boundary and past it, at
exactly a feature row's time, with unknown keys, and ties on ``event_timestamp``. The
expected values of the edge cases are also checked directly, not only against the stock
store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import feast
import numpy as np
import pandas as pd
import pytest
import yaml

from fraud_detection.config import StatePaths, load_simulate_config
from fraud_detection.data.simulator import write_simulation
from fraud_detection.features import store
from fraud_detection.features.offline_store import AsofDuckDBOfflineStoreConfig

if TYPE_CHECKING:
    from feast import FeatureStore

pytestmark = pytest.mark.integration

UNKNOWN = 10**9  # a card and merchant id with no feature rows
CARD_TTL = pd.Timedelta(days=7)  # feature_repo/definitions.py
MERCHANT_TTL = pd.Timedelta(days=2)
US = pd.Timedelta(microseconds=1)
# Tie-breaking rows written next to the day files: same key and event time as a real row,
# created later (the winner), created in between, and without created time (loses).
TIE_VALUES = {"winner": 111.0, "middle": 222.0, "no_created": 333.0}


@dataclass(frozen=True)
class World:
    paths: StatePaths
    asof: FeatureStore  # the project's store (feature_store.yaml)
    stock: FeatureStore  # Feast's DuckDB store on the same registry
    cards: pd.DataFrame  # card_behaviour rows, ties included
    merchants: pd.DataFrame  # merchant_risk rows, ties included
    card_tie: pd.Series  # the card_behaviour row the ties copy
    merchant_tie: pd.Series  # the merchant_risk row the ties copy


def _stock_store(paths: StatePaths) -> FeatureStore:
    """The project's configuration with Feast's own DuckDB offline store."""
    fp = store.FeaturePaths(paths)
    config = yaml.safe_load((store.feature_repo() / "feature_store.yaml").read_text())
    config["registry"] = str(fp.feast / "registry.db")
    config["online_store"] = {**config["online_store"], "path": str(fp.feast / "online_store.db")}
    config["offline_store"] = {"type": "duckdb"}
    with store._quiet():
        return feast.FeatureStore(
            config=feast.RepoConfig(repo_path=str(store.feature_repo()), **config)
        )


def _add_ties(table: Path, feature: str) -> pd.Series:
    """Write rows tying with the table's latest row of its first key; return that row."""
    rows = pd.read_parquet(table)
    key = rows.columns[0]
    row: pd.Series = rows[rows[key] == rows[key].iloc[0]].sort_values("event_timestamp").iloc[-1]
    created = row["event_timestamp"]
    ties = pd.DataFrame([row] * 3).reset_index(drop=True).astype(rows.dtypes.to_dict())
    ties[feature] = list(TIE_VALUES.values())
    ties["created_timestamp"] = [created + pd.Timedelta(hours=2), created + US, pd.NaT]
    ties["created_timestamp"] = ties["created_timestamp"].astype(rows["created_timestamp"].dtype)
    ties.to_parquet(table / "ties.parquet", index=False)
    return row


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    paths = StatePaths(root=tmp_path_factory.mktemp("offline_store"))
    cfg = load_simulate_config(
        overrides={
            "days": 6,
            "rows_per_day": 1500,
            "cards": 300,
            "merchants": 60,
            "label_delay_days": 2,
        }
    )
    write_simulation(cfg, paths)
    days = sorted(dt.date.fromisoformat(p.name[5:]) for p in paths.raw.glob("date=*"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "_accepted", lambda _p: set(days))
        store.build_profile(paths)
        for day in days:
            store.build_day(paths, day)
    tables = store.FeaturePaths(paths).tables
    card_tie = _add_ties(tables / store.CARD_TABLE, "card_amount_mean_7d")
    merchant_tie = _add_ties(tables / store.MERCHANT_TABLE, "merchant_fraud_rate_30d")
    asof = store.open_store(paths)
    return World(
        paths=paths,
        asof=asof,
        stock=_stock_store(paths),
        cards=pd.read_parquet(tables / store.CARD_TABLE),
        merchants=pd.read_parquet(tables / store.MERCHANT_TABLE),
        card_tie=card_tie,
        merchant_tie=merchant_tie,
    )


def _entities(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Entity rows as ``training_entities`` makes them: keys, times, request columns."""
    frame = pd.DataFrame(rows).assign(
        amount=20.0, channel="online", latitude=40.7, longitude=-74.0, merchant_category="grocery"
    )
    frame["transaction_timestamp"] = frame["event_timestamp"]
    # Nanoseconds, as a pandas frame built from Python datetimes has them.
    return frame.astype(
        {
            "event_timestamp": "datetime64[ns, UTC]",
            "transaction_timestamp": "datetime64[us, UTC]",
            "card_id": "int64",
            "merchant_id": "int64",
        }
    )


def _edge_cases(w: World) -> pd.DataFrame:
    """One entity row per edge case, ``case`` naming it."""
    card = w.cards.sort_values("event_timestamp").iloc[len(w.cards) // 2]
    c, at = int(card["card_id"]), card["event_timestamp"]
    card_last = w.cards[w.cards["card_id"] == c]["event_timestamp"].max()
    m = int(w.merchants["merchant_id"].iloc[0])
    merchant_last = w.merchants[w.merchants["merchant_id"] == m]["event_timestamp"].max()
    first = min(w.cards["event_timestamp"].min(), w.merchants["event_timestamp"].min())
    cases = {
        "exact_time": (c, m, at),
        "just_before": (c, m, at - US),
        "before_any_row": (c, m, first - pd.Timedelta(days=1)),
        "before_profiles": (c, m, pd.Timestamp("1999-06-01", tz="UTC")),
        "card_ttl_boundary": (c, m, card_last + CARD_TTL),
        "card_ttl_expired": (c, m, card_last + CARD_TTL + US),
        "merchant_ttl_boundary": (c, m, merchant_last + MERCHANT_TTL),
        "merchant_ttl_expired": (c, m, merchant_last + MERCHANT_TTL + US),
        "unknown_card": (UNKNOWN, m, at),
        "unknown_merchant": (c, UNKNOWN, at),
        "card_tie": (int(w.card_tie["card_id"]), m, w.card_tie["event_timestamp"]),
        "merchant_tie": (c, int(w.merchant_tie["merchant_id"]), w.merchant_tie["event_timestamp"]),
    }
    return _entities(
        [
            {"case": name, "card_id": k, "merchant_id": mk, "event_timestamp": t}
            for name, (k, mk, t) in cases.items()
        ]
    )


def _expected(
    rows: pd.DataFrame, key: str, value: int, at: pd.Timestamp, ttl: pd.Timedelta, feature: str
) -> float:
    """The point-in-time value by definition: the latest row at or before ``at`` (ties: the
    latest created, a missing one last), null if older than ``at - ttl``."""
    known = rows[(rows[key] == value) & (rows["event_timestamp"] <= at)]
    if known.empty:
        return np.nan
    ordered = known.sort_values(["event_timestamp", "created_timestamp"], na_position="first")
    latest = ordered.iloc[-1]
    return np.nan if latest["event_timestamp"] < at - ttl else float(latest[feature])


def _realistic(w: World) -> pd.DataFrame:
    """Every simulated transaction as a training row (features as of its own time)."""
    days = sorted(dt.date.fromisoformat(p.name[5:]) for p in w.paths.raw.glob("date=*"))
    frame = store.entity_rows(store.read_transactions(w.paths, days))
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
    frame["case"] = "transaction"
    return frame


@pytest.fixture(scope="module")
def entity_rows(world: World) -> pd.DataFrame:
    """Realistic rows and edge cases, shuffled, with some rows exactly duplicated."""
    frame = pd.concat([_realistic(world), _edge_cases(world)], ignore_index=True)
    frame["row"] = np.arange(len(frame))
    duplicated = frame[(frame["row"] % 97 == 0) | (frame["case"] != "transaction")]
    frame = pd.concat([frame, duplicated], ignore_index=True)
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("row", kind="stable").reset_index(drop=True)


def test_the_project_configures_the_asof_store(world: World) -> None:
    assert isinstance(world.asof.config.offline_store, AsofDuckDBOfflineStoreConfig)
    assert world.stock.config.offline_store.type == "duckdb"


def test_training_set_equals_the_stock_duckdb_store(
    world: World, entity_rows: pd.DataFrame
) -> None:
    # When the feature service is joined by both stores
    asof = store.historical_features(world.asof, entity_rows)
    stock = store.historical_features(world.stock, entity_rows)
    # Then every entity row comes back once, in the entity frame's order (the stock store
    # has no order), with the same columns, dtypes and values
    assert len(asof) == len(entity_rows)
    assert asof["row"].tolist() == entity_rows["row"].tolist()
    pd.testing.assert_frame_equal(_sorted(asof), _sorted(stock), check_exact=True)


def test_edge_cases_have_point_in_time_values(world: World, entity_rows: pd.DataFrame) -> None:
    out = store.historical_features(world.asof, entity_rows)
    edge = out[out["case"] != "transaction"]
    assert (edge["case"].value_counts() == 2).all()  # duplicated: both copies came back
    got = edge.drop_duplicates("case").set_index("case")
    card, merchant = got["card_amount_mean_7d"], got["merchant_fraud_rate_30d"]
    # Every case has the value the definition gives (NaN: null)
    cases = zip(got.index, got["card_id"], got["merchant_id"], got["event_timestamp"], strict=True)
    for case, card_id, merchant_id, at in cases:
        want_card = _expected(world.cards, "card_id", card_id, at, CARD_TTL, "card_amount_mean_7d")
        want_merchant = _expected(
            world.merchants, "merchant_id", merchant_id, at, MERCHANT_TTL, "merchant_fraud_rate_30d"
        )
        np.testing.assert_equal(card[case], want_card, err_msg=str(case))
        np.testing.assert_equal(merchant[case], want_merchant, err_msg=str(case))
    # and the cases are what they say: a row stamped at the entity's time counts,
    assert card["exact_time"] != card["just_before"]
    # nothing before the first feature row (card profiles start on 2000-01-01),
    assert np.isnan(card["before_any_row"])
    assert np.isnan(merchant["before_any_row"])
    assert got.loc["before_any_row", "card_type"] is not None
    assert got.loc["before_profiles", "card_type"] is None
    # the TTL boundary is inclusive and one microsecond later the value has expired,
    assert not np.isnan(card["card_ttl_boundary"])
    assert np.isnan(card["card_ttl_expired"])
    assert not np.isnan(merchant["merchant_ttl_boundary"])
    assert np.isnan(merchant["merchant_ttl_expired"])
    # an unknown key has nulls for its own views only,
    assert np.isnan(card["unknown_card"])
    assert got.loc["unknown_card", "card_type"] is None
    assert not np.isnan(merchant["unknown_card"])
    assert np.isnan(merchant["unknown_merchant"])
    assert not np.isnan(card["unknown_merchant"])
    # and of rows stamped at the same time the latest created one wins.
    assert card["card_tie"] == TIE_VALUES["winner"]
    assert merchant["merchant_tie"] == TIE_VALUES["winner"]


def test_an_entity_frame_later_than_the_features_sees_rows_within_the_ttl(
    world: World, entity_rows: pd.DataFrame
) -> None:
    # Given entity rows that all come after the last feature row (the store reads only
    # the feature rows that the entity times can match)
    late = entity_rows[entity_rows["case"].str.contains("ttl")]
    # When joined by both stores
    asof = store.historical_features(world.asof, late)
    stock = store.historical_features(world.stock, late)
    # Then the rows within the TTL are still found
    pd.testing.assert_frame_equal(_sorted(asof), _sorted(stock), check_exact=True)
    assert asof.groupby("case")["card_amount_mean_7d"].count()["card_ttl_boundary"] == 2
    assert asof.groupby("case")["merchant_fraud_rate_30d"].count()["merchant_ttl_boundary"] == 2


def test_feature_refs_and_full_feature_names_equal_the_stock_store(
    world: World, entity_rows: pd.DataFrame
) -> None:
    refs = [
        "card_behaviour:card_txn_count_24h",
        "card_behaviour:card_amount_mean_7d",
        "merchant_risk:merchant_fraud_rate_30d",
        "card_profile:card_type",
    ]
    # An entity row without a time gets no features (the on-demand view cannot take it)
    no_time = entity_rows.head(1).assign(row=-1)
    no_time["event_timestamp"] = pd.NaT
    with_no_time = pd.concat([entity_rows, no_time], ignore_index=True)
    service = world.asof.get_feature_service(store.FEATURE_SERVICE)
    for features, full, frame in (
        (refs, False, with_no_time),
        (refs, True, with_no_time),
        (service, True, entity_rows),
    ):
        out = {}
        for name, feature_store in (("asof", world.asof), ("stock", world.stock)):
            with store._quiet():
                job = feature_store.get_historical_features(
                    entity_df=frame, features=features, full_feature_names=full
                )
                out[name] = _sorted(job.to_df())
        # Only the requested features, named as asked
        prefix = "card_behaviour__" if full else ""
        assert f"{prefix}card_txn_count_24h" in out["asof"].columns
        assert "card_txn_count_1h" not in out["asof"].columns
        assert ("card_behaviour__card_txn_count_1h" in out["asof"].columns) == (features is service)
        pd.testing.assert_frame_equal(out["asof"], out["stock"], check_exact=True)
        timeless = out["asof"][out["asof"]["row"] == -1]
        assert timeless.filter(like="card_txn_count_24h").isna().all().all()
