"""The versioned suites equal the code that builds them; settings and messages behave."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fraud_detection.config import ConfigError
from fraud_detection.data.schema import TRANSACTION_COLUMNS
from fraud_detection.validation.gate import (
    DataValidationError,
    Failure,
    ValidationOutcome,
)
from fraud_detection.validation.settings import (
    RawGateSettings,
    ValidationConfig,
    load_validation_config,
)
from fraud_detection.validation.suites import (
    RAW_SUITE,
    SUITES_DIR,
    TRAINING_COLUMNS,
    TRAINING_SUITE,
    build_suites,
    load_suite,
    raw_parameters,
    suite_json,
)

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("name", [RAW_SUITE, TRAINING_SUITE])
def test_committed_suite_equals_code(name: str) -> None:
    committed = (SUITES_DIR / f"{name}.json").read_text()
    assert committed == suite_json(build_suites()[name]), (
        f"{name}.json is out of date: run `fraud validate write-suites`"
    )


def test_no_stray_suite_files() -> None:
    assert {p.stem for p in SUITES_DIR.glob("*.json")} == set(build_suites())


@pytest.mark.parametrize("name", [RAW_SUITE, TRAINING_SUITE])
def test_great_expectations_loads_suite_unchanged(name: str) -> None:
    # GX silently drops unknown kwargs and expectation types it does not know, so a
    # typo would weaken the gate without an error: its own serialization must match.
    from great_expectations.core import ExpectationSuite

    from fraud_detection.validation import expectations  # noqa: F401  (our own types)

    definition = load_suite(name)
    serialized = ExpectationSuite(**copy.deepcopy(definition)).to_json_dict()  # GX edits meta
    loaded: dict[str, Any] = json.loads(json.dumps(serialized))
    loaded.pop("id", None)
    for expectation in loaded["expectations"]:
        expectation.pop("id", None)
    loaded["meta"].pop("great_expectations_version", None)
    assert loaded == definition


def test_raw_suite_types_and_requires_every_schema_column() -> None:
    expectations = load_suite(RAW_SUITE)["expectations"]
    typed = {
        e["kwargs"]["column"]: e["kwargs"]["type_"]
        for e in expectations
        if e["type"] == "expect_column_type_to_be"
    }
    not_null = {
        e["kwargs"]["column"]
        for e in expectations
        if e["type"] == "expect_column_values_to_not_be_null"
    }
    assert typed == TRANSACTION_COLUMNS
    assert not_null == set(TRANSACTION_COLUMNS)


def test_suite_parameters_are_documented() -> None:
    for name, suite in build_suites().items():
        used = {
            value["$PARAMETER"]
            for e in suite["expectations"]
            for value in e["kwargs"].values()
            if isinstance(value, dict) and "$PARAMETER" in value
        }
        assert used == set(suite["meta"]["parameters"]), name


def test_training_columns_cover_the_model() -> None:
    assert {"is_fraud", "card_id", "merchant_fraud_rate_30d", "channel"} <= set(TRAINING_COLUMNS)


# ------------------------------------------------------------------ parameters


def test_raw_parameters_without_history_require_one_row_and_no_maximum() -> None:
    params = raw_parameters(
        dt.date(2026, 1, 4), now=NOW, history_rows=[], settings=RawGateSettings()
    )
    assert params["min_rows"] == 1
    assert params["max_rows"] is None
    assert params["day_start"] == "2026-01-04T00:00:00.000000+00:00"
    assert params["day_end"] == "2026-01-04T23:59:59.999999+00:00"
    assert params["now"] == "2026-03-01T12:00:00.000000+00:00"


def test_raw_parameters_use_median_of_recent_history() -> None:
    settings = RawGateSettings(history_partitions=3, min_volume_ratio=0.5, max_volume_ratio=1.5)
    # Only the last three count: median of 1000, 1200, 1100 is 1100.
    params = raw_parameters(
        dt.date(2026, 1, 9), now=NOW, history_rows=[10, 1000, 1200, 1100], settings=settings
    )
    assert (params["min_rows"], params["max_rows"]) == (550, 1650)


def test_raw_parameters_reject_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        raw_parameters(
            dt.date(2026, 1, 4),
            now=dt.datetime(2026, 1, 5),
            history_rows=[],
            settings=RawGateSettings(),
        )


# ------------------------------------------------------------------ settings


def test_committed_validation_config_loads() -> None:
    cfg = load_validation_config()
    assert cfg.training.label_rate_min < cfg.training.label_rate_max
    assert cfg.raw.min_volume_ratio <= 1 <= cfg.raw.max_volume_ratio


def test_misspelt_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "validation.yaml"
    path.write_text("training:\n  label_rate_mx: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_validation_config(path)
    assert "label_rate_mx" in str(err.value)
    assert "validation.yaml" in str(err.value)


def test_inverted_bounds_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "validation.yaml"
    path.write_text("training:\n  label_rate_min: 0.5\n  label_rate_max: 0.1\n")
    with pytest.raises(ConfigError, match="label_rate_min"):
        load_validation_config(path)


# ------------------------------------------------------------------ messages


def _outcome(tmp_path: Path, *failures: Failure) -> ValidationOutcome:
    return ValidationOutcome(
        batch="partition 2026-01-04",
        suite=RAW_SUITE,
        success=not failures,
        rows=100,
        evaluated=28,
        failures=failures,
        parameters={},
        record=tmp_path / "2026-01-04.json",
        data_docs=tmp_path / "page.html",
        result_id=None,
        validated_at=NOW,
    )


def test_error_names_batch_each_failure_and_data_docs(tmp_path: Path) -> None:
    outcome = _outcome(
        tmp_path,
        Failure(
            "expect_table_columns_to_match_set",
            None,
            "exactly the contract's columns",
            "missing amount; unexpected amt",
        ),
        Failure(
            "expect_column_values_to_be_between",
            "amount",
            "values between 0 (exclusive) and 50000",
            "312 unexpected",
            unexpected_count=312,
            sample=(-17.2, -3.1, -1.0, -2.0),
        ),
        Failure(
            "expect_column_values_to_not_be_null", "merchant_category", "no nulls", "column missing"
        ),
        Failure("expect_column_type_to_be", "merchant_category", "dtype string", "column missing"),
    )
    with pytest.raises(DataValidationError) as err:
        outcome.raise_for_failure()
    message = str(err.value)
    assert message.startswith("partition 2026-01-04 rejected")
    assert "columns: exactly the contract's columns — missing amount; unexpected amt" in message
    assert (
        "amount: values between 0 (exclusive) and 50000 — 312 unexpected, e.g. [-17.2, -3.1, -1]"
        in (message)
    )
    assert "merchant_category: not checked, column missing (no nulls; dtype string)" in message
    assert message.endswith(str(tmp_path / "page.html"))
    assert err.value.batch == "partition 2026-01-04"
    assert len(err.value.failures) == 4
    assert err.value.data_docs == tmp_path / "page.html"


def test_accepted_outcome_does_not_raise(tmp_path: Path) -> None:
    _outcome(tmp_path).raise_for_failure()


def test_importing_the_gate_does_not_import_great_expectations() -> None:
    code = (
        "import sys\n"
        "import fraud_detection.validation.gate, fraud_detection.validation.cli\n"
        "print('great_expectations' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_config_is_valid() -> None:
    assert ValidationConfig().sample_size >= 0
