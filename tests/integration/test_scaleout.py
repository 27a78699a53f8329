"""Partition-parallel work on a real Dask cluster gives the sequential run's results.

One ``distributed.LocalCluster`` of two worker processes for the module, reached by its
address (as the production profile reaches its scheduler). On small simulated worlds:

1. the data gate over eight days with a broken one: the outcomes, ledger records and Data
   Docs pages of the parallel run are the sequential run's, byte for byte, although the
   broken day changes the row-count bounds of the days after it;
2. ``fraud features build`` on the cluster writes the feature files the sequential build
   writes, byte for byte;
3. batch scoring of several days on the cluster writes the sequential run's scores, and
   ``fraud score --days`` says where it ran;
4. ``partition_map`` keeps the items' order, raises a worker's error, starts a local
   cluster whose workers have one OpenMP thread, and an unreachable scheduler is one line
   on stderr with exit code 2.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud_detection import cli, scaleout
from fraud_detection.cli import app
from fraud_detection.config import DaskSettings, StatePaths
from fraud_detection.data.ledger import accepted_days, raw_partition_days
from fraud_detection.errors import FraudError
from fraud_detection.features import store
from fraud_detection.serving import batch
from fraud_detection.training import ct
from fraud_detection.validation.gate import (
    data_docs_index,
    validate_raw_partition,
    validate_raw_partitions,
)
from tests import worlds
from tests.conftest import free_port, mlflow_isolated

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

ROOT = Path(__file__).resolve().parents[2]
BROKEN_DAY = 4  # day index of the partition with nulls: rejected, bounds after it change
NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)  # one validation time for both runs
LOGGED_AT = pd.Timestamp("2026-03-01 12:00", tz="UTC")
SCORED_DAYS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskSettings]:
    """A running two-worker cluster; the settings that send work to it by address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.CRITICAL,
        env=scaleout.WORKER_ENV,
    ) as local:
        yield DaskSettings(scheduler_address=local.scheduler_address, min_partitions=2)


def _world(root: Path) -> StatePaths:
    """Eight days of 2,000 transactions; day 4's partition has nulls."""
    broken = {"enabled": True, "day": BROKEN_DAY, "corruption": "nulls"}
    return worlds.simulate(root, scenario={"broken_feed": broken})


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.*"))}


def _data_docs_pages(paths: StatePaths) -> set[str]:
    folder = paths.root / "gx" / "data_docs" / "validations"
    return {str(p.relative_to(folder)) for p in folder.rglob("*.html")}


# ---------------------------------------------------------------- 1. data gate


@pytest.mark.slow
def test_data_gate_on_the_cluster_records_what_the_sequential_run_records(
    cluster: DaskSettings, tmp_path: Path
) -> None:
    # Given: eight new partitions, day 4 broken, validated one after another (the CT way)
    paths = _world(tmp_path)
    days = raw_partition_days(paths)
    sequential = [validate_raw_partition(paths, day, now=NOW) for day in days]
    records = _files(paths.root / "validation")
    pages = _data_docs_pages(paths)
    ledger = accepted_days(paths)
    shutil.rmtree(paths.root / "validation")
    shutil.rmtree(paths.root / "gx")

    # When: the same partitions are validated on the cluster
    lines: list[str] = []
    with scaleout.partition_map(cluster, len(days), progress=lines.append) as run:
        parallel = validate_raw_partitions(paths, days, run=run, now=NOW)

    # Then: same verdicts, same records byte for byte, same ledger and Data Docs
    assert run.where == f"on the Dask cluster at {cluster.scheduler_address} (2 workers)"
    assert [o.success for o in parallel].count(False) == 1
    assert not parallel[BROKEN_DAY].success
    assert parallel == sequential
    assert _files(paths.root / "validation") == records
    assert accepted_days(paths) == ledger == [d for i, d in enumerate(days) if i != BROKEN_DAY]
    assert _data_docs_pages(paths) == pages
    index = data_docs_index(paths).read_text()
    assert all(day.isoformat() in index for day in days)
    # the broken day changed the row-count bounds of later days: they were checked again
    assert any("checking" in line and "again" in line for line in lines), lines


# ---------------------------------------------------------------- 2. features


def test_features_build_on_the_cluster_writes_the_sequential_files(
    cluster: DaskSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: accepted days whose feature tables were built one after another
    paths = _world(tmp_path)
    validate_raw_partitions(paths, raw_partition_days(paths), now=NOW)
    ct.update_features(paths, [])
    tables = store.FeaturePaths(paths).tables
    sequential = _files(tables)
    assert len(sequential) == 3 * 7 + 1  # three tables a day, seven accepted days, profiles

    # When: `fraud features build --rebuild` runs with the cluster's address in the profile
    monkeypatch.setenv(scaleout.ADDRESS_ENV, str(cluster.scheduler_address))
    monkeypatch.setenv("FRAUD_PROFILE__DASK__MIN_PARTITIONS", "2")
    shutil.rmtree(tables)
    out = CliRunner().invoke(app, ["features", "build", "--rebuild", "--state-dir", str(tmp_path)])

    # Then: it said where it ran, and every file is the sequential one
    assert out.exit_code == 0, out.output
    assert f"7 day(s) on the Dask cluster at {cluster.scheduler_address}" in out.output
    assert "... featurized 7/7 days" in out.output
    assert _files(tables) == sequential


# ---------------------------------------------------------------- 3. batch scoring


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatePaths]:
    """The broken world validated, featurized and a champion trained (MLflow restored)."""
    root = tmp_path_factory.mktemp("scaleout-served")
    with mlflow_isolated():
        paths = _world(root)
        worlds.train_version(paths, promote=True)
        yield paths


@pytest.mark.slow
def test_batch_scoring_on_the_cluster_writes_the_sequential_scores(
    cluster: DaskSettings, served: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: the last four accepted days scored one after another
    profile = ct.context(str(served.root)).profile
    days = batch.recent_days(served, SCORED_DAYS)
    assert len(days) == SCORED_DAYS
    in_process = DaskSettings(min_partitions=100)
    sequential = batch.score_days(
        days, profile=profile.model_copy(update={"dask": in_process}), logged_at=LOGGED_AT
    )
    expected = {day: pd.read_parquet(batch.scores_path(served, day)) for day in days}
    for day in days:
        batch.scores_path(served, day).unlink()

    # When: the same days are scored on the cluster
    parallel = batch.score_days(
        days, profile=profile.model_copy(update={"dask": cluster}), logged_at=LOGGED_AT
    )

    # Then: every day's scores are the sequential ones, exactly
    assert sequential.where.startswith("in this process")
    assert parallel.where == f"on the Dask cluster at {cluster.scheduler_address} (2 workers)"
    assert [r.rows for r in parallel.days] == [r.rows for r in sequential.days]
    for day in days:
        pd.testing.assert_frame_equal(
            pd.read_parquet(batch.scores_path(served, day)), expected[day], check_exact=True
        )

    # And: `fraud score --days 4` says where it ran and writes the same scores
    monkeypatch.setenv(scaleout.ADDRESS_ENV, str(cluster.scheduler_address))
    monkeypatch.setenv("FRAUD_PROFILE__DASK__MIN_PARTITIONS", "2")
    out = CliRunner().invoke(
        app, ["score", "--no-flow", "--days", str(SCORED_DAYS), "--state-dir", str(served.root)]
    )
    assert out.exit_code == 0, out.output
    assert f"on the Dask cluster at {cluster.scheduler_address}" in out.output
    assert f"scored {parallel.rows:,} transactions of {SCORED_DAYS} day(s)" in out.output
    for day in days:
        again = pd.read_parquet(batch.scores_path(served, day)).drop(columns="logged_at")
        pd.testing.assert_frame_equal(again, expected[day].drop(columns="logged_at"))


# ---------------------------------------------------------------- 4. the map itself


def _slow_square(n: int) -> int:
    time.sleep(0.3 if n == 0 else 0.0)  # the first item finishes last
    return n * n


def _fail_on_three(n: int) -> int:
    if n == 3:
        raise FraudError("partition 3 is bad")
    return n


def _omp_threads(_: int) -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


def test_map_keeps_order_and_raises_a_workers_error(cluster: DaskSettings) -> None:
    lines: list[str] = []
    with scaleout.partition_map(cluster, 4, progress=lines.append) as run:
        assert run.parallel
        assert run.map(_slow_square, [0, 1, 2, 3], done="squared") == [0, 1, 4, 9]
        assert lines[-1] == "... squared 4/4 partitions"
        with pytest.raises(FraudError, match="partition 3 is bad"):
            run.map(_fail_on_three, [1, 2, 3, 4])

    with scaleout.partition_map(cluster, 1) as run:  # below min_partitions: in process
        assert not run.parallel
        assert run.where == "in this process"
        assert run.map(_slow_square, [2]) == [4]


def test_local_cluster_for_the_job_has_one_openmp_thread_per_worker() -> None:
    settings = DaskSettings(workers=2, threads_per_worker=1, min_partitions=2)
    with scaleout.partition_map(settings, 2) as run:
        assert run.where == "on a local Dask cluster of 2 workers"
        assert run.map(_omp_threads, [1, 2]) == ["1", "1"]


def test_unreachable_scheduler_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given: eight partitions and a scheduler address nobody listens on
    _world(tmp_path)
    address = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("FRAUD_PROJECT_DIR", str(ROOT))
    monkeypatch.setenv(scaleout.ADDRESS_ENV, address)
    monkeypatch.setattr(scaleout, "CONNECT_TIMEOUT_S", 2)
    monkeypatch.setattr(
        sys, "argv", ["fraud", "validate", "raw", "--new", "--state-dir", str(tmp_path)]
    )

    # When: the data gate runs
    with pytest.raises(SystemExit) as exit_info:
        cli.main()

    # Then: one line says what to do, and nothing was judged
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(
        f"error: cannot reach the Dask scheduler at {address}: start it (make prod-up) "
        f"or unset {scaleout.ADDRESS_ENV}"
    )
    assert not (tmp_path / "validation").exists()
