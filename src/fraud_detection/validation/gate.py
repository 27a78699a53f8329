"""The data gates: run a versioned suite on a batch, keep a record, build Data Docs.

* :func:`validate_raw_partition` checks one daily partition against ``raw_transactions``;
  :func:`validate_raw_partitions` checks many in date order, their checks optionally on a
  Dask cluster, with the same verdicts and records.
* Value skew (docs/data_validation.md): a schema-valid partition's statistics
  (:func:`.values.partition_profile`) go into its record; the next days' suite runs get
  bands learnt from the last accepted days' statistics as suite parameters (the suite's
  ``meta.stage: values`` expectations, ``critical`` = reject, ``warning`` = warn; left out
  with fewer than ``raw.values.min_history`` days), and three checks the suite cannot
  express run beside it (:func:`.values.reference_findings`, far from home and replayed
  ids in :func:`.values.value_findings`). Warnings let the partition through and are
  recorded and shown; every skipped check says why.
* :func:`validate_training_set` checks a training frame against ``training_set``.
* The records are the partition ledger (:mod:`fraud_detection.data.ledger`): feature
  building, training, batch scoring and monitoring ask it which days were accepted, so a
  rejected (or never validated) day stops there.

Each validation is one Great Expectations checkpoint run (all expectations in one pass;
per-expectation runs would re-hash the frame each time), in the configured result format
(BASIC by default, see ``configs/validation.yaml``), with an ``UpdateDataDocsAction``. The
context is ephemeral (suites come from the versioned JSON files) except for two folders
under the state directory::

    gx/validations/       GX validation results, so the Data Docs index keeps history
    gx/data_docs/         the Data Docs site: index.html + one page per validation
    validation/raw/YYYY-MM-DD.json, validation/training/<name>.json   our records

A gate does not raise when data is bad: it returns a :class:`ValidationOutcome` whose
:meth:`~ValidationOutcome.raise_for_failure` raises :class:`DataValidationError`, naming
the batch, each failed expectation with its column and what was observed
(:mod:`.failures` puts a GX result into those words), and the Data Docs page.
``great_expectations`` (about 6 s to import) is imported only inside the functions that
run it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import json
import logging
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from fraud_detection.config import StatePaths
from fraud_detection.data import ledger
from fraud_detection.errors import FraudError
from fraud_detection.validation.failures import (
    COLUMN_MISSING,
    READABLE,
    Failure,
    describe,
    exception_message,
    jsonable,
)
from fraud_detection.validation.settings import ValidationConfig, load_validation_config
from fraud_detection.validation.suites import (
    RAW_SUITE,
    TRAINING_SUITE,
    TRAINING_VALUE_COLUMNS,
    VALUE_STAGE,
    load_suite,
    raw_parameters,
    training_parameters,
)
from fraud_detection.validation.values import (
    PROFILE_VERSION,
    TRAINING_PROFILE_VERSION,
    Finding,
    gx_parameters,
    history_source,
    id_hashes,
    partition_profile,
    reference_findings,
    training_gx_parameters,
    training_profile,
    value_findings,
)

if TYPE_CHECKING:
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )

    from fraud_detection.scaleout import PartitionMap

__all__ = [
    "DataValidationError",
    "Failure",
    "GateSetupError",
    "PartitionNotFoundError",
    "ValidationOutcome",
    "data_docs_index",
    "validate_raw_partition",
    "validate_raw_partitions",
    "validate_training_set",
]

_SITE = "fraud_docs"
_DATASOURCE = "fraud_detection"
# present when the value stage has a reference: the raw gate's bands from the history,
# the training gate's champion training set
VALUE_PARAMETERS = ("amount_quantiles_reject", "kl_max_reject")
VALUE_CHECK = "value_"  # the prefix of the value-skew stage's checks (not GX expectations)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DataValidationError(FraudError):
    """A batch was rejected by its gate; the message lists every failed expectation."""

    def __init__(
        self, message: str, *, batch: str, failures: tuple[Failure, ...], data_docs: Path | None
    ) -> None:
        super().__init__(message)
        self.batch = batch
        self.failures = failures
        self.data_docs = data_docs


class PartitionNotFoundError(FraudError):
    """There is no partition file for the day asked for."""


class GateSetupError(FraudError):
    """The suites or Great Expectations could not be set up (a repository problem)."""


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class ValidationOutcome:
    """What a gate decided about one batch, and where the evidence is."""

    batch: str  # "partition 2026-01-04" or "training set 'name'"
    suite: str
    success: bool
    rows: int
    evaluated: int  # expectations evaluated
    failures: tuple[Failure, ...]
    parameters: Mapping[str, Any]
    record: Path
    data_docs: Path | None  # the Data Docs page of this validation
    result_id: str | None  # the GX validation result key (suite/run name/run time/batch)
    validated_at: dt.datetime
    sample_size: int = 3
    # the value-skew stage: findings at the warn level (the batch still passes), and what
    # the stage compared against or why it skipped checks (None: not a raw partition)
    warnings: tuple[Failure, ...] = ()
    values: Mapping[str, Any] | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    def verdict(self) -> str:
        """``3 of 30 expectations failed`` (plus ``, 2 value checks failed`` if any)."""
        values = sum(f.expectation.startswith(VALUE_CHECK) for f in self.failures)
        schema = self.failed - values
        if self.success:
            text = f"{self.evaluated} expectations"
        elif schema:
            text = f"{schema} of {self.evaluated} expectations failed"
        else:
            text = f"{self.evaluated} expectations passed"
        return text + (f", {values} value checks failed" if values else "")

    def failure_lines(self) -> list[str]:
        """One line per failed expectation; checks of a missing column share a line."""
        lines: list[str] = []
        skipped: dict[str, list[str]] = {}
        for failure in self.failures:
            if failure.problem == COLUMN_MISSING and failure.column:
                skipped.setdefault(failure.column, []).append(failure.expected)
            else:
                lines.append(failure.line(self.sample_size))
        for column, checks in skipped.items():
            lines.append(f"{column}: not checked, column missing ({'; '.join(checks)})")
        return lines

    def warning_lines(self) -> list[str]:
        """One line per warning of the value-skew stage, then each check it skipped."""
        lines = [f"warning: {w.line(self.sample_size)}" for w in self.warnings]
        for reason in (self.values or {}).get("skipped", []):
            lines.append(f"value checks skipped: {reason}")
        return lines

    def message(self) -> str:
        """A multi-line account: verdict, each failure, then the Data Docs page."""
        if self.success:
            head = f"{self.batch} accepted by suite {self.suite} ({self.verdict()})"
        else:
            head = f"{self.batch} rejected by suite {self.suite}: {self.verdict()}"
        where = f"Data Docs: {self.data_docs}" if self.data_docs else f"record: {self.record}"
        lines = [*self.failure_lines(), *self.warning_lines()]
        return "\n".join([head, *(f"  - {line}" for line in lines), where])

    def raise_for_failure(self) -> None:
        """Raise :class:`DataValidationError` if the batch was rejected."""
        if not self.success:
            raise DataValidationError(
                self.message(), batch=self.batch, failures=self.failures, data_docs=self.data_docs
            )


# ------------------------------------------------------------------ Great Expectations


@dataclass(frozen=True)
class _RunResult:
    success: bool
    evaluated: int
    failures: tuple[Failure, ...]
    data_docs: Path | None
    result_id: str | None
    # the value-skew stage's failed expectations (meta.stage "values"): critical, warning
    value_failures: tuple[Failure, ...] = ()
    warnings: tuple[Failure, ...] = ()


def data_docs_index(paths: StatePaths) -> Path:
    """The Data Docs site's index page (it exists after the first validation)."""
    return paths.root / "gx" / "data_docs" / "index.html"


def _context(paths: StatePaths) -> AbstractDataContext:
    """An ephemeral GX context: no bars, our Data Docs site only, results kept on disk."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # GX logs rendering details and store chatter at INFO/WARNING; failures reach us as
    # results, so only its errors are worth showing.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),  # TQDM_DISABLE is ignored by GX
        analytics_enabled=False,
    )
    # Persisting the results (only) lets each run's index.html list earlier runs too.
    config.stores["validation_results_store"] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(paths.root / "gx" / "validations"),
        },
    }
    # Replaces the ephemeral default site, which lands in a random temporary folder.
    config.data_docs_sites = {
        _SITE: {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(data_docs_index(paths).parent),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    }
    return gx.get_context(project_config=config, mode="ephemeral")


_FINGERPRINT_LOCK = threading.Lock()
_FINGERPRINT_OFF = 0  # checkpoint runs under way with GX's frame fingerprint turned off
_GX_HASH_THRESHOLD: float = 1e9  # GX's own value, kept while it is turned off


@contextlib.contextmanager
def _gx_frame_fingerprint(enabled: bool) -> Iterator[None]:
    """GX hashes every cell of a pandas batch smaller than its ``HASH_THRESHOLD`` bytes
    (1 GB) for the batch's ``pandas_data_fingerprint``: ~1 s of a 1M-row partition. Off,
    the threshold is 0 while the checkpoint runs (restored when the last run ends)."""
    global _FINGERPRINT_OFF, _GX_HASH_THRESHOLD
    from great_expectations.execution_engine import pandas_execution_engine as engine

    if enabled or not hasattr(engine, "HASH_THRESHOLD"):
        yield
        return
    with _FINGERPRINT_LOCK:
        if _FINGERPRINT_OFF == 0:
            _GX_HASH_THRESHOLD = engine.HASH_THRESHOLD
            engine.HASH_THRESHOLD = 0
        _FINGERPRINT_OFF += 1
    try:
        yield
    finally:
        with _FINGERPRINT_LOCK:
            _FINGERPRINT_OFF -= 1
            if _FINGERPRINT_OFF == 0:
                engine.HASH_THRESHOLD = _GX_HASH_THRESHOLD


def read_partition(file: Path) -> pd.DataFrame:
    """A raw partition as the gate validates it: text columns as Arrow-backed ``string``
    (the schema's dtype, like the writer's ``string[python]``). Null checks, value counts
    and set lookups on them are several times faster than on Python strings: about 1.3 s
    of the gate's time on a 1M-row partition (benchmarks/bench_value_skew.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_text = {
        pa.string(): pd.StringDtype("pyarrow"),
        pa.large_string(): pd.StringDtype("pyarrow"),
    }
    frame: pd.DataFrame = pq.read_table(file).to_pandas(types_mapper=arrow_text.get)
    return frame


def _url_path(url: str) -> Path:
    return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))


def _run_suite(
    paths: StatePaths,
    suite_name: str,
    df: pd.DataFrame,
    parameters: Mapping[str, Any],
    run_name: str,
    run_time: dt.datetime,
    result_format: Literal["BASIC", "SUMMARY"],
    with_index: bool = True,
    value_source: str | None = None,
    frame_fingerprint: bool = False,
) -> _RunResult:
    """Validate ``df`` against the versioned suite in one checkpoint run, with Data Docs.

    ``with_index=False``: the run's own Data Docs page only, not the site's index (a batch of
    validations builds the index once, at its end: :func:`_build_index`).
    """
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.run_identifier import RunIdentifier

    from fraud_detection.validation import expectations  # noqa: F401  (registers ours)

    definition = load_suite(suite_name)
    # The value stage runs with its reference (enough history, a champion's training set),
    # each expectation only when the reference has its parameters (a column it lacks).
    staged = any(name in parameters for name in VALUE_PARAMETERS)
    definition = {
        **definition,
        "expectations": [
            e
            for e in definition["expectations"]
            if e["meta"].get("stage") != VALUE_STAGE
            or (staged and _parameters_of(e["kwargs"]) <= set(parameters))
        ],
    }
    context = _context(paths)
    suite = ExpectationSuite(**copy.deepcopy(definition))  # GX adds to the dicts it gets
    # GX logs and drops an expectation whose type it does not know: fail loudly instead.
    if len(suite.expectations) != len(definition["expectations"]):
        raise GateSetupError(
            f"suite {suite_name}: Great Expectations loaded {len(suite.expectations)} of "
            f"{len(definition['expectations'])} expectations; run `fraud validate write-suites` "
            "and check the Great Expectations version"
        )
    suite = context.suites.add(suite)
    batch = (
        context.data_sources.add_pandas(_DATASOURCE)
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    validation_definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite_name}_gate",
            validation_definitions=[validation_definition],
            result_format=result_format,  # not BOOLEAN_ONLY: it breaks Data Docs rendering
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[_SITE])]
            if with_index
            else [],
        )
    )
    with _gx_frame_fingerprint(frame_fingerprint):
        result = checkpoint.run(
            batch_parameters={"dataframe": df},
            expectation_parameters={k: v for k, v in parameters.items() if k != "value_history"},
            run_id=RunIdentifier(run_name=run_name, run_time=run_time),
        )
    columns = {str(c) for c in df.columns}
    source = value_source or _history_source(parameters.get("value_history") or [])
    failures: list[Failure] = []
    value_failures: list[Failure] = []
    warnings: list[Failure] = []
    evaluated = 0
    data_docs: Path | None = None
    result_id: str | None = None
    for key, validation in result.run_results.items():
        evaluated += int(validation.statistics.get("evaluated_expectations", 0))
        for item in validation.results:
            if item.success:
                continue
            config = item.expectation_config
            if config is None:  # GX gives every result its expectation
                raise RuntimeError("a validation result without its expectation")
            failure = describe(
                config.type,
                config.kwargs,
                item.result or {},
                exception_message(item.exception_info),
                columns,
            )
            meta = config.meta or {}
            if meta.get("stage") != VALUE_STAGE:
                failures.append(failure)
                continue
            band = f" ({meta.get('level')} band from {source})"
            failure = dataclasses.replace(failure, expected=failure.expected + band)
            if str(getattr(config.severity, "value", config.severity)) == "warning":
                warnings.append(failure)
            else:
                value_failures.append(failure)
        result_id = "/".join(str(part) for part in key.to_tuple())
        if not with_index:  # what the action does, but the index
            context.build_data_docs(
                site_names=[_SITE], resource_identifiers=[key], build_index=False
            )
        urls = context.get_docs_sites_urls(resource_identifier=key, site_name=_SITE)
        if urls and urls[0].get("site_url"):
            data_docs = _url_path(str(urls[0]["site_url"]))
    # GX returns results in metric order; report them in the suite's order instead.
    position: dict[tuple[str, str | None], int] = {}
    for index, expectation in enumerate(definition["expectations"]):
        position.setdefault((expectation["type"], expectation["kwargs"].get("column")), index)
    failures.sort(key=lambda f: position.get((f.expectation, f.column), len(position)))
    # a statistic outside its reject band is outside its warn band too: say it once
    rejected = {(f.expectation, f.column) for f in value_failures}
    warnings = [w for w in warnings if (w.expectation, w.column) not in rejected]
    return _RunResult(
        not failures and not value_failures,
        evaluated,
        tuple(failures),
        data_docs,
        result_id,
        tuple(value_failures),
        tuple(warnings),
    )


def _parameters_of(kwargs: Mapping[str, Any]) -> set[str]:
    """The suite parameters (``{"$PARAMETER": name}``) an expectation's kwargs refer to."""
    return {
        str(value["$PARAMETER"])
        for value in kwargs.values()
        if isinstance(value, Mapping) and "$PARAMETER" in value
    }


def _history_source(days: Sequence[str]) -> str:
    """``accepted days 2026-01-01..2026-01-07 (7)``: where a value band was learnt."""
    return history_source([dt.date.fromisoformat(d) for d in days])


# ------------------------------------------------------------------ records


def _outcome_record(
    outcome: ValidationOutcome, extra: Mapping[str, Any], source: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        **extra,
        "batch": outcome.batch,
        "suite": outcome.suite,
        "success": outcome.success,
        "rows": outcome.rows,
        "evaluated": outcome.evaluated,
        "failed": outcome.failed,
        "failures": [f.to_record() for f in outcome.failures],
        "warnings": [w.to_record() for w in outcome.warnings],
        "values": jsonable(dict(outcome.values)) if outcome.values is not None else None,
        "parameters": jsonable(dict(outcome.parameters)),
        "result_id": outcome.result_id,
        "data_docs": str(outcome.data_docs) if outcome.data_docs else None,
        "validated_at": outcome.validated_at.isoformat(),
        "source": dict(source) if source else None,
    }


# ------------------------------------------------------------------ the gates


def _utc_now(now: dt.datetime | None) -> dt.datetime:
    stamp = now or dt.datetime.now(dt.UTC)
    if stamp.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {stamp}")
    return stamp.astimezone(dt.UTC)


def _finish(
    outcome: ValidationOutcome, extra: Mapping[str, Any], source: Mapping[str, Any] | None
) -> ValidationOutcome:
    ledger.write_json(outcome.record, _outcome_record(outcome, extra, source))
    return outcome


def validate_raw_partition(
    paths: StatePaths,
    day: dt.date,
    df: pd.DataFrame | None = None,
    *,
    now: dt.datetime | None = None,
    config: ValidationConfig | None = None,
) -> ValidationOutcome:
    """Check the partition of ``day`` against ``raw_transactions``; record the verdict.

    Reads ``raw/date=YYYY-MM-DD/transactions.parquet`` unless ``df`` is given (the record
    then vouches for that frame, not for the file). A missing partition raises
    :class:`PartitionNotFoundError`; a file that is not readable Parquet is rejected. The
    row-count bounds and the value-skew bands come from the accepted partitions before
    ``day`` (validate days in date order). Validating a day again replaces its record.
    Never raises for bad data: call :meth:`ValidationOutcome.raise_for_failure`.
    """
    cfg = config or load_validation_config()
    validated_at = _utc_now(now)
    job = _Batch(paths, validated_at, cfg).job(day)
    return _record(_check_raw_partition(job, paths, validated_at, cfg, df))


# (day, suite parameters, the (day, profile) of the accepted partitions the value checks
# compare with); the parameters name those days, so equal parameters mean an equal job.
_Job = tuple[dt.date, dict[str, Any], tuple[tuple[dt.date, Mapping[str, Any]], ...]]


@dataclass(frozen=True)
class _Seen:
    """What the ledger knows of a judged day."""

    accepted: bool
    rows: int
    profile: Mapping[str, Any] | None  # the value-skew statistics (schema-valid days)


@dataclass(frozen=True)
class _Checked:
    """A partition's outcome before it is recorded, and the file it vouches for."""

    day: dt.date
    outcome: ValidationOutcome
    source: dict[str, Any] | None
    profile: dict[str, Any] | None = None


def _record(checked: _Checked) -> ValidationOutcome:
    extra = {"partition": checked.day.isoformat(), "profile": checked.profile}
    return _finish(checked.outcome, extra, checked.source)


def _missing_partition(paths: StatePaths, day: dt.date) -> PartitionNotFoundError:
    on_disk = ledger.raw_partition_days(paths)
    known = f"{on_disk[0]} .. {on_disk[-1]}" if on_disk else "none"
    return PartitionNotFoundError(
        f"no partition for {day}: {ledger.partition_path(paths, day)} does not exist "
        f"(partitions on disk: {known})"
    )


def _check_raw_partition(
    job: _Job,
    paths: StatePaths,
    validated_at: dt.datetime,
    cfg: ValidationConfig,
    df: pd.DataFrame | None = None,
    with_index: bool = True,
) -> _Checked:
    """The gate's check of one partition with the given suite parameters, recording
    nothing (GX still keeps its result and Data Docs page; the site's index too unless
    ``with_index`` is false). Runs on a Dask worker too."""
    day, parameters, history = job
    batch = f"partition {day.isoformat()}"
    record = ledger.raw_records_folder(paths) / f"{day.isoformat()}.json"
    source: dict[str, Any] | None = None
    if df is None:
        file = ledger.partition_path(paths, day)
        if not file.is_file():
            raise _missing_partition(paths, day)
        source = ledger.fingerprint(file)
        try:
            df = read_partition(file)
        except Exception as exc:  # any reader error means the feed delivered a bad file
            unreadable = Failure(
                expectation=READABLE,
                column=None,
                expected="a readable Parquet file",
                problem=f"{type(exc).__name__}: {exc}".splitlines()[0],
            )
            outcome = ValidationOutcome(
                batch=batch,
                suite=RAW_SUITE,
                success=False,
                rows=0,
                evaluated=0,
                failures=(unreadable,),
                parameters=parameters,
                record=record,
                data_docs=None,
                result_id=None,
                validated_at=validated_at,
                sample_size=cfg.sample_size,
            )
            return _Checked(day, outcome, source)
    run = _run_suite(
        paths,
        RAW_SUITE,
        df,
        parameters,
        day.isoformat(),
        validated_at,
        cfg.result_format,
        with_index,
        frame_fingerprint=cfg.gx_frame_fingerprint,
    )
    schema_valid = not run.failures
    stage = _value_stage(paths, day, df, history, cfg, schema_valid=schema_valid)
    if not schema_valid:  # the suite's value expectations mean nothing on data of the wrong shape
        run = dataclasses.replace(run, value_failures=(), warnings=())
    value_failures = (*run.value_failures, *stage.rejects)
    outcome = ValidationOutcome(
        batch=batch,
        suite=RAW_SUITE,
        success=schema_valid and not value_failures,
        rows=len(df),
        evaluated=run.evaluated,
        failures=(*run.failures, *value_failures),
        parameters=parameters,
        record=record,
        data_docs=run.data_docs,
        result_id=run.result_id,
        validated_at=validated_at,
        sample_size=cfg.sample_size,
        warnings=(*run.warnings, *stage.warnings),
        values=stage.summary,
    )
    return _Checked(day, outcome, source, stage.profile)


@dataclass(frozen=True)
class _ValueStage:
    summary: dict[str, Any]
    rejects: tuple[Failure, ...]
    warnings: tuple[Failure, ...]
    profile: dict[str, Any] | None


def _reference_table(paths: StatePaths, name: str) -> pd.DataFrame | None:
    file = paths.reference / f"{name}.parquet"
    try:
        return pd.read_parquet(file) if file.is_file() else None
    except Exception:  # an unreadable table cannot vouch for anything: reported as absent
        return None


def _profile(
    paths: StatePaths, df: pd.DataFrame, cfg: ValidationConfig
) -> tuple[dict[str, Any], Any]:
    """The partition's value-skew statistics and its sorted id hashes."""
    hashes = id_hashes(df["transaction_id"])
    cards = _reference_table(paths, "cards")
    far = cfg.raw.values.far_from_home_km
    return partition_profile(df, cards, far_km=far, hashes=hashes), hashes


def _as_failure(finding: Finding) -> Failure:
    return Failure(
        expectation=f"value_{finding.check}",
        column=finding.column,
        expected=finding.expected(),
        problem=finding.problem(),
        observed=jsonable(finding.observed),
    )


def _value_stage(
    paths: StatePaths,
    day: dt.date,
    df: pd.DataFrame,
    history: Sequence[tuple[dt.date, Mapping[str, Any]]],
    cfg: ValidationConfig,
    *,
    schema_valid: bool,
) -> _ValueStage:
    """The value-skew checks of a partition (:mod:`.values`): reference tables always,
    the history-based ones with at least ``raw.values.min_history`` accepted days."""
    settings = cfg.raw.values
    summary: dict[str, Any] = {"history": [d.isoformat() for d, _ in history], "skipped": []}
    skipped: list[str] = summary["skipped"]
    if not schema_valid:
        skipped.append("the schema checks failed (values are compared on valid data only)")
        return _ValueStage(summary, (), (), None)
    profile, hashes = _profile(paths, df, cfg)
    references: dict[str, tuple[str, pd.Index]] = {}
    for name, column in (("cards", "card_id"), ("merchants", "merchant_id")):
        table = _reference_table(paths, name)
        if table is None:
            skipped.append(f"{column}: no reference table {paths.reference / name}.parquet")
        else:
            references[column] = (f"reference/{name}.parquet", pd.Index(table[column]))
    findings = reference_findings(df, references, settings)
    if len(history) >= settings.min_history:
        findings += value_findings(profile, history, settings, hashes, in_gx=True)
    else:
        skipped.append(
            f"history checks: {len(history)} accepted partition(s) with statistics before "
            f"{day}, raw.values.min_history is {settings.min_history}"
        )
    summary["findings"] = [dataclasses.asdict(f) for f in findings]
    rejects = tuple(_as_failure(f) for f in findings if f.level == "reject")
    warnings = tuple(_as_failure(f) for f in findings if f.level == "warn")
    return _ValueStage(summary, rejects, warnings, profile)


def validate_raw_partitions(
    paths: StatePaths,
    days: Sequence[dt.date],
    *,
    run: PartitionMap | None = None,
    now: dt.datetime | None = None,
    config: ValidationConfig | None = None,
) -> list[ValidationOutcome]:
    """Validate ``days`` in date order, with the verdicts, records and ledger that
    :func:`validate_raw_partition` day after day gives; the Great Expectations checks run
    on ``run`` (a Dask cluster from :func:`fraud_detection.scaleout.partition_map`; by
    default in this process). Returns the outcomes in date order.

    One ``now`` for the whole batch (its start, unless given), and one build of the Data
    Docs index at its end (each check renders only its own page). Only the row-count
    bounds of a day depend on the days before it (the accepted ones). In this process the
    days are checked one after another. On a cluster every day is checked at once, with
    the bounds it gets if the pending days before it are all accepted with the row counts
    their files hold; then, in date order, a day whose bounds turn out to be right is
    decided, and the rest (after a rejected day, say) are checked again with their right
    bounds. The records are written in date order at the end.
    """
    from fraud_detection.scaleout import PartitionMap

    cfg = config or load_validation_config()
    run = run or PartitionMap("in this process", None, None)
    batch = _Batch(paths, _utc_now(now), cfg)
    days = sorted(set(days))
    missing = next((day for day in days if not ledger.partition_path(paths, day).is_file()), None)
    todo = days if missing is None else days[: days.index(missing)]
    decided = batch.in_parallel(todo, run) if run.parallel else batch.in_order(todo, run)
    recorded = [_record(checked) for checked in _with_index(paths, decided, run)]
    if missing is not None:  # the sequential run stops here too, with this error
        raise _missing_partition(paths, missing)
    return recorded


class _Batch:
    """The ledger as validating a batch day by day sees it, and the checks of its days."""

    def __init__(self, paths: StatePaths, validated_at: dt.datetime, cfg: ValidationConfig):
        self.paths, self.validated_at, self.cfg = paths, validated_at, cfg
        # the current records, then each day decided in order
        self.ledger: dict[dt.date, _Seen] = {
            day: _Seen(
                record.get("success") is True, int(record.get("rows") or 0), record.get("profile")
            )
            for day, record in ledger.current_raw_records(paths).items()
        }

    def job(self, day: dt.date, ledger: Mapping[dt.date, _Seen] | None = None) -> _Job:
        """The check of ``day`` given the verdicts before it (default: the decided ones):
        its suite parameters, and the profiles of the accepted days its values meet."""
        known = self.ledger if ledger is None else ledger
        accepted = [(d, seen) for d, seen in sorted(known.items()) if d < day and seen.accepted]
        parameters = raw_parameters(
            day,
            now=self.validated_at,
            history_rows=[seen.rows for _, seen in accepted],
            settings=self.cfg.raw,
        )
        recent = accepted[-self.cfg.raw.history_partitions :]
        history = tuple(
            (d, seen.profile)
            for d, seen in recent
            if seen.profile and seen.profile.get("version") == PROFILE_VERSION
        )
        parameters["value_history"] = [d.isoformat() for d, _ in history]
        if len(history) >= self.cfg.raw.values.min_history:
            parameters.update(gx_parameters(history, self.cfg.raw.values))
        return day, parameters, history

    def check(self) -> Callable[[_Job], _Checked]:
        """The check of one ``(day, parameters)``, picklable for the cluster."""
        return functools.partial(
            _check_raw_partition,
            paths=self.paths,
            validated_at=self.validated_at,
            cfg=self.cfg,
            with_index=False,
        )

    def decide(self, checked: _Checked) -> _Checked:
        outcome = checked.outcome
        self.ledger[checked.day] = _Seen(outcome.success, outcome.rows, checked.profile)
        return checked

    def in_order(self, days: list[dt.date], run: PartitionMap) -> list[_Checked]:
        check = self.check()
        decided = []
        for index, day in enumerate(days, 1):
            decided.append(self.decide(check(self.job(day))))
            run.say(f"validated {index}/{len(days)} partitions")
        return decided

    def in_parallel(self, days: list[dt.date], run: PartitionMap) -> list[_Checked]:
        # each pending day's guess reads its file: on the cluster, in parallel
        guesses = run.map(_expected_outcome, days, done="profiled", paths=self.paths, cfg=self.cfg)
        expected = dict(zip(days, guesses, strict=True))
        checked: dict[tuple[dt.date, str], _Checked] = {}
        decided: list[_Checked] = []
        pending = list(days)
        while pending:
            guessed = {**self.ledger, **{day: expected[day] for day in pending}}
            jobs = [self.job(day, guessed) for day in pending]
            jobs = [job for job in jobs if _key(job) not in checked]
            if decided:
                run.say(f"checking {len(jobs)} partition(s) again: their row-count bounds changed")
            results = run.map(self.check(), jobs, done="validated")
            for job, result in zip(jobs, results, strict=True):
                checked[_key(job)] = result
                expected[job[0]] = _Seen(
                    result.outcome.success, result.outcome.rows, result.profile
                )
            # Decide in day order while the bounds a day was checked with are its real
            # ones; the first pending day's always are, so each round decides one at least.
            while pending and (hit := checked.get(_key(self.job(pending[0])))):
                pending.pop(0)
                decided.append(self.decide(hit))
        return decided


def _key(job: _Job) -> tuple[dt.date, str]:
    day, parameters, _ = job
    return day, json.dumps(dict(parameters), sort_keys=True, default=str)


def _expected_outcome(day: dt.date, paths: StatePaths, cfg: ValidationConfig) -> _Seen:
    """A guess of a pending day's verdict: accepted, with its file's row count and value
    statistics; an unreadable file is rejected. (A wrong guess costs a second check.)"""
    try:
        df = read_partition(ledger.partition_path(paths, day))
    except Exception:
        return _Seen(False, 0, None)
    try:
        profile: dict[str, Any] | None = _profile(paths, df, cfg)[0]
    except Exception:  # not schema-valid: the check will say so
        profile = None
    return _Seen(True, len(df), profile)


def _with_index(paths: StatePaths, decided: list[_Checked], run: PartitionMap) -> list[_Checked]:
    """Build the Data Docs index once for the batch (on the cluster when there is one,
    whose workers have Great Expectations imported); the outcomes with their pages."""
    result_ids = [c.outcome.result_id for c in decided if c.outcome.result_id]
    if not result_ids:
        return decided
    pages = run.call(functools.partial(_build_index, paths, result_ids))
    return [
        dataclasses.replace(
            c, outcome=dataclasses.replace(c.outcome, data_docs=pages.get(c.outcome.result_id))
        )
        if c.outcome.result_id
        else c
        for c in decided
    ]


def _build_index(paths: StatePaths, result_ids: list[str]) -> dict[str, Path | None]:
    """The suite's page and the site's index; a page of ``result_ids`` that is missing
    (another process's index build may remove a page it has not seen the result of) is
    rendered again. Returns each result's page."""
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from fraud_detection.validation import expectations  # noqa: F401  (registers ours)

    context = _context(paths)
    context.suites.add(ExpectationSuite(**copy.deepcopy(load_suite(RAW_SUITE))))
    keys = {rid: ValidationResultIdentifier.from_tuple(tuple(rid.split("/"))) for rid in result_ids}

    def page(key: Any) -> Path | None:
        urls = context.get_docs_sites_urls(resource_identifier=key, site_name=_SITE)
        url = urls[0].get("site_url") if urls else None
        return _url_path(str(url)) if url else None

    missing = [key for key in keys.values() if page(key) is None]
    context.build_data_docs(
        site_names=[_SITE],
        resource_identifiers=[ExpectationSuiteIdentifier(name=RAW_SUITE), *missing],
        build_index=True,
    )
    return {rid: page(key) for rid, key in keys.items()}


def validate_training_set(
    paths: StatePaths,
    df: pd.DataFrame,
    name: str,
    *,
    config: ValidationConfig | None = None,
    source: Path | None = None,
    reference: str | None = None,
    skipped: str | None = None,
) -> ValidationOutcome:
    """Check a training frame against ``training_set``; record it as ``training/<name>.json``.

    ``name`` identifies the training set (letters, digits, ``.``, ``_``, ``-``), e.g. the
    training run or the file stem; ``source`` is the file it came from, if any.

    ``reference`` names the training set to compare values with (the champion's, which CT
    passes): its record's profile gives the label rate's band and each feature's
    distribution for the suite's value expectations (``meta.stage: values``). Without one,
    or when its record has no profile, those are skipped with the reason (``skipped``:
    why the caller has none). The frame's own profile goes into its record.
    """
    if not _NAME.match(name):
        raise FraudError(
            f"training set name {name!r}: use letters, digits, '.', '_' or '-' "
            "(it names the record file)"
        )
    cfg = config or load_validation_config()
    validated_at = _utc_now(None)
    parameters = training_parameters(cfg.training)
    settings = cfg.training.values
    profile = training_profile(df, TRAINING_VALUE_COLUMNS, settings)
    compared: str | None = None
    reasons: list[str] = []
    if reference is None:
        reasons.append(skipped or "no training set to compare with (no champion yet)")
    else:
        known_file = ledger.training_records_folder(paths) / f"{reference}.json"
        known = (ledger.read_record(known_file) or {}).get("profile")
        if not known or known.get("version") != TRAINING_PROFILE_VERSION:
            reasons.append(
                f"the champion's training set {reference!r} has no profile in "
                f"{known_file} (validated before profiles were kept): compared from the next "
                "champion on"
            )
        else:
            parameters.update(training_gx_parameters(known, settings))
            compared = f"the champion's training set {reference} ({known['rows']:,} rows)"
    run = _run_suite(
        paths,
        TRAINING_SUITE,
        df,
        parameters,
        name,
        validated_at,
        cfg.result_format,
        value_source=compared,
        frame_fingerprint=cfg.gx_frame_fingerprint,
    )
    outcome = ValidationOutcome(
        batch=f"training set {name!r}",
        suite=TRAINING_SUITE,
        success=run.success,
        rows=len(df),
        evaluated=run.evaluated,
        failures=(*run.failures, *run.value_failures),
        parameters=parameters,
        record=ledger.training_records_folder(paths) / f"{name}.json",
        data_docs=run.data_docs,
        result_id=run.result_id,
        validated_at=validated_at,
        sample_size=cfg.sample_size,
        warnings=run.warnings,
        values={"compared_with": compared, "skipped": reasons},
    )
    fingerprint = ledger.fingerprint(source) if source is not None and source.is_file() else None
    return _finish(outcome, {"training_set": name, "profile": profile}, fingerprint)
