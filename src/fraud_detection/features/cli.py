"""``fraud features ...``: build feature tables, training sets, materialize, look up online."""

from __future__ import annotations

import datetime as dt
import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fraud_detection.config import StatePaths

app = typer.Typer(
    help="Feature store (Feast): build feature tables, training sets, online features.",
    no_args_is_help=True,
)

MAX_ID = 2**63 - 1  # ids are int64, the entity key type of the feature store

StateDir = Annotated[
    Path | None, typer.Option(help="Use this state folder instead of the profile's.")
]


def _paths(state_dir: Path | None) -> StatePaths:
    from fraud_detection.config import StatePaths, load_profile, state_paths

    return StatePaths(root=state_dir.resolve()) if state_dir else state_paths(load_profile())


def _date(value: str | None, flag: str) -> dt.date | None:
    from fraud_detection.errors import FraudError

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FraudError(f"{flag} {value!r} is not a date: use YYYY-MM-DD") from None


@app.command()
def build(
    date: Annotated[str | None, typer.Option(help="Build (or rebuild) this day only.")] = None,
    rebuild: Annotated[bool, typer.Option(help="Rebuild every accepted day.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Compute feature tables for accepted partitions that have none yet."""
    from fraud_detection.data.ledger import accepted_days, partition_status
    from fraud_detection.features import store

    paths = _paths(state_dir)
    started = time.perf_counter()
    profile = store.build_profile(paths)
    day = _date(date, "--date")
    if day is not None:
        if partition_status(paths, day) is not True:
            typer.echo(f"partition {day} is not accepted by the data gate: nothing built")
            typer.echo(f"  run `fraud validate raw --date {day}` first")
            raise typer.Exit(1)
        todo = [day]
    else:
        done = set() if rebuild else set(store.built_days(paths))
        todo = [d for d in accepted_days(paths) if d not in done]
    raw_days = sorted(
        dt.date.fromisoformat(p.name.split("=", 1)[1]) for p in paths.raw.glob("date=*")
    )
    skipped = [d for d in raw_days if partition_status(paths, d) is not True]
    if todo:
        from fraud_detection.config import load_profile
        from fraud_detection.scaleout import partition_map

        with partition_map(load_profile().dask, len(todo), progress=typer.echo) as run:
            typer.echo(f"building the feature tables of {len(todo)} day(s) {run.where}")
            # Each day reads its own history (earlier accepted partitions) and writes only
            # its own files: the days are independent, the files the sequential run's.
            built = run.map(
                functools.partial(store.build_day, paths), todo, done="featurized", noun="days"
            )
        for result in built:
            typer.echo(
                f"{result.day}: {result.card_rows:,} card rows, "
                f"{result.merchant_rows:,} merchant snapshots"
            )
    if not todo:
        typer.echo("feature tables are up to date: no new accepted partition")
    if skipped:
        shown = ", ".join(str(d) for d in skipped)
        typer.echo(f"not used (not accepted by the data gate): {shown}")
    tables = store.FeaturePaths(paths).tables
    typer.echo(f"built {len(todo)} day(s) in {time.perf_counter() - started:.1f} s")
    typer.echo(f"  feature tables: {tables}/{{card_behaviour,merchant_risk}}/")
    typer.echo(f"  card profiles:  {profile}")


@app.command("training-set")
def training_set(
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Labels known at this day's midnight (default: after the last built day)."
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(help="Only the last N days before --as-of (default: train.yaml window_days)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Parquet file to write.")] = None,
    state_dir: StateDir = None,
) -> None:
    """Build a point-in-time correct training set through Feast (offline store)."""
    import pandas as pd

    from fraud_detection.errors import FraudError
    from fraud_detection.features import store

    paths = _paths(state_dir)
    day = _date(as_of, "--as-of")
    if day is None:
        built = store.built_days(paths)
        if not built:
            raise FraudError("no features built yet: run `fraud features build` first")
        day = built[-1] + dt.timedelta(days=1)
    if days is None:
        from fraud_detection.training.settings import load_train_config

        days = load_train_config().window_days
    if days is not None and days <= 0:
        raise FraudError(f"--days must be positive, got {days}")
    started = time.perf_counter()
    frame = store.training_set(paths, pd.Timestamp(day).tz_localize("UTC"), days)
    target = out or paths.root / "training" / f"training_set_{day.isoformat()}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    typer.echo(
        f"training set as of {day}: {len(frame):,} rows, "
        f"fraud rate {frame['is_fraud'].mean():.2%}, "
        f"{frame['event_timestamp'].min():%Y-%m-%d} to {frame['event_timestamp'].max():%Y-%m-%d} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    typer.echo(f"  written to {target}")


@app.command()
def materialize(
    end: Annotated[
        str | None, typer.Option(help="Load values up to this day's midnight (default: all built).")
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Load the latest feature values into the online store (incremental, idempotent)."""
    import pandas as pd

    from fraud_detection.features import store

    paths = _paths(state_dir)
    day = _date(end, "--end")
    started = time.perf_counter()
    start, until = store.materialize(
        paths, pd.Timestamp(day).tz_localize("UTC") if day else None, progress=typer.echo
    )
    what = "all feature rows" if start <= store.PROFILE_AS_OF else f"rows after {start:%Y-%m-%d}"
    typer.echo(
        f"materialized {what} up to {until:%Y-%m-%d %H:%M} UTC into the online store "
        f"in {time.perf_counter() - started:.1f} s"
    )
    typer.echo(f"  online store: {store.online_store_location(paths)}")


@app.command()
def online(
    card_id: Annotated[int, typer.Option(help="The card to look up.", min=0, max=MAX_ID)],
    merchant_id: Annotated[
        int, typer.Option(help="The merchant of the transaction.", min=0, max=MAX_ID)
    ] = 0,
    amount: Annotated[float, typer.Option(help="Transaction amount.")] = 50.0,
    channel: Annotated[str, typer.Option(help="in_store, online or contactless.")] = "online",
    latitude: Annotated[
        float, typer.Option(help="Where the transaction happens.", min=-90, max=90)
    ] = 40.71,
    longitude: Annotated[
        float, typer.Option(help="Where the transaction happens.", min=-180, max=180)
    ] = -74.01,
    at: Annotated[
        str | None,
        typer.Option(
            help="When the transaction happens (ISO time, UTC if no zone). Default: the end "
            "of the materialized data (the simulated now), else the current time."
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Show the online features of a card (and merchant) for a transaction, as serving
    computes them: read through Feast's online store, card windows as of that time."""
    import pandas as pd

    from fraud_detection.features import store

    paths = _paths(state_dir)
    online_features = store.open_online(paths)
    when = _when(at, paths)
    row = {
        "card_id": card_id,
        "merchant_id": merchant_id,
        "amount": amount,
        "transaction_timestamp": when,
        "channel": channel,
        "latitude": latitude,
        "longitude": longitude,
    }
    frame = store.online_features(online_features, [row])
    state = online_features.read_state(card_id)
    typer.echo(
        f"online features for card {card_id}, merchant {merchant_id} at {when:%Y-%m-%d %H:%M} "
        f"UTC ({store.FEATURE_SERVICE}; the card's state holds {len(state)} recent transactions):"
    )
    for name in frame.columns:
        value = frame[name].iloc[0]
        shown = "missing" if pd.isna(value) else f"{value:.6g}"
        typer.echo(f"  {name:<26} {shown}")


def _when(at: str | None, paths: Any) -> Any:
    """``--at`` as a UTC timestamp; by default the simulated now (end of materialization)."""
    import pandas as pd

    from fraud_detection.features import store

    if at is not None:
        try:
            stamp = pd.Timestamp(at)
        except ValueError as exc:
            raise typer.BadParameter(f"not a time: {at!r} (e.g. 2026-01-14T09:30)") from exc
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    marker = store.materialized_marker(paths)
    if marker.exists():
        return pd.Timestamp(marker.read_text())
    return pd.Timestamp.now(tz="UTC")
