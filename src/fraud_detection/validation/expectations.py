"""The raw suite's own Great Expectations 1.x expectations (subclasses, the GX way).

Importing this module imports Great Expectations and registers the expectations, so the
gate imports it only where it runs a suite or builds Data Docs (:mod:`.gate`).

* ``expect_column_quantile_values_to_be_within_bands``: GX's
  ``expect_column_quantile_values_to_be_between`` with a JSON-safe result. On pandas, GX
  1.24 reports each quantile's verdict as a numpy boolean, which its validation-results
  store cannot serialize (``TypeError: Object of type bool is not JSON serializable``);
  the checks, the arguments and the Data Docs rendering are GX's own.
* ``expect_column_most_common_value_share_to_be_between``: the share of rows holding the
  column's single most common value (a sentinel such as 9999.99, a stuck id) within
  bounds. GX has ``expect_column_most_common_value_to_be_in_set``, which needs the value
  known in advance; a sentinel is not. Its metric, ``column.most_common_value_share``,
  reports the value too.
* ``expect_column_value_shares_to_be_close_to`` / ``expect_column_hour_shares_to_be_close_to``:
  the total variation distance between the column's value shares (or the UTC hour-of-day
  shares of a timestamp column) and ``reference`` shares is at most ``max_distance``. GX's
  ``expect_column_kl_divergence_to_be_less_than`` is the nearest, but KL is infinite when a
  value is missing from either side and its tolerance is not in the units of a share.
* ``expect_column_kl_divergence_to_be_below_reference``: GX's
  ``expect_column_kl_divergence_to_be_less_than`` (the training-set gate's comparison with
  the champion's training set), whose Data Docs sentence GX 1.24 cannot render when the
  partition object is a suite parameter (it reads its ``weights`` before substitution and
  logs a traceback); the check itself is GX's own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from great_expectations.execution_engine.pandas_execution_engine import PandasExecutionEngine
from great_expectations.expectations.core.expect_column_kl_divergence_to_be_less_than import (
    ExpectColumnKLDivergenceToBeLessThan,
)
from great_expectations.expectations.core.expect_column_quantile_values_to_be_between import (
    ExpectColumnQuantileValuesToBeBetween,
)
from great_expectations.expectations.expectation import ColumnAggregateExpectation
from great_expectations.expectations.metrics.column_aggregate_metric_provider import (
    ColumnAggregateMetricProvider,
    column_aggregate_value,
)
from great_expectations.render.components import (
    LegacyRendererType,
    RenderedStringTemplateContent,
)
from great_expectations.render.renderer.renderer import renderer
from great_expectations.util import convert_to_json_serializable

from fraud_detection.validation.values import hour_shares, largest_change, tvd, value_shares

__all__ = [
    "ColumnHourShares",
    "ColumnMostCommonValueShare",
    "ColumnValueShares",
    "ExpectColumnHourSharesToBeCloseTo",
    "ExpectColumnKlDivergenceToBeBelowReference",
    "ExpectColumnMostCommonValueShareToBeBetween",
    "ExpectColumnQuantileValuesToBeWithinBands",
    "ExpectColumnValueSharesToBeCloseTo",
]


class ExpectColumnQuantileValuesToBeWithinBands(ExpectColumnQuantileValuesToBeBetween):
    """Each quantile of a column within its band (``quantile_ranges``), as GX's
    ``expect_column_quantile_values_to_be_between``, with plain-Python results."""

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        result = super()._validate(metrics, runtime_configuration, execution_engine)
        safe: dict[str, Any] = convert_to_json_serializable(result)
        safe["success"] = bool(safe["success"])
        return safe


class ColumnMostCommonValueShare(ColumnAggregateMetricProvider):
    """``{"share": ..., "value": ...}``: the most common value of a column and the share of
    its non-null rows that hold it (one hash count, pandas)."""

    metric_name = "column.most_common_value_share"

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> dict[str, Any]:
        if not len(column):
            return {"share": 0.0, "value": None}
        counts = column.value_counts(sort=False)
        top = counts.idxmax()
        value = top.item() if hasattr(top, "item") else top
        return {"share": float(counts.max() / len(column)), "value": value}


def _sentence(
    template: str, configuration: Any, runtime_configuration: dict[str, Any] | None
) -> list[RenderedStringTemplateContent]:
    """A Data Docs sentence: ``$name`` placeholders filled from the expectation's kwargs."""
    params = dict(configuration.kwargs) if configuration is not None else {}
    styling = (runtime_configuration or {}).get("styling") or {}
    return [
        RenderedStringTemplateContent(
            content_block_type="string_template",
            string_template={"template": template, "params": params, "styling": styling},
        )
    ]


class ExpectColumnMostCommonValueShareToBeBetween(ColumnAggregateExpectation):
    """The share of a column's rows holding its most common value is within
    ``min_value``..``max_value`` (either may be None: unbounded)."""

    # a number, or a suite parameter ({"$PARAMETER": name}) resolved at run time
    min_value: float | dict[str, Any] | None = None
    max_value: float | dict[str, Any] | None = None

    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.most_common_value_share",)
    success_keys: ClassVar[tuple[str, ...]] = ("min_value", "max_value")
    args_keys: ClassVar[tuple[str, ...]] = ("column", "min_value", "max_value")

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict[str, Any] | None = None,
    ) -> list[RenderedStringTemplateContent]:
        return _sentence(
            "$column: the share of rows holding its most common value must be at most $max_value.",
            configuration,
            runtime_configuration,
        )

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        observed = metrics["column.most_common_value_share"]
        share = float(observed["share"])
        kwargs = self._get_success_kwargs()
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        success = (low is None or share >= low) and (high is None or share <= high)
        return {
            "success": bool(success),
            "result": {
                "observed_value": share,
                "details": {"most_common_value": convert_to_json_serializable(observed["value"])},
            },
        }


class ColumnValueShares(ColumnAggregateMetricProvider):
    """Each value's share of the column's non-null rows."""

    metric_name = "column.value_shares"

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> dict[str, float]:
        return value_shares(column)


class ColumnHourShares(ColumnAggregateMetricProvider):
    """Each UTC hour of the day's share of a timestamp column's non-null rows."""

    metric_name = "column.hour_shares"

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> dict[str, float]:
        return hour_shares(column)


class ExpectColumnValueSharesToBeCloseTo(ColumnAggregateExpectation):
    """The column's value shares are within ``max_distance`` (total variation distance,
    half the L1 distance) of the ``reference`` shares; None: unbounded."""

    reference: dict[str, Any]  # value -> share, or a suite parameter
    max_distance: float | dict[str, Any] | None = None

    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.value_shares",)
    success_keys: ClassVar[tuple[str, ...]] = ("reference", "max_distance")
    args_keys: ClassVar[tuple[str, ...]] = ("column", "reference", "max_distance")
    _what: ClassVar[str] = "value shares"

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict[str, Any] | None = None,
    ) -> list[RenderedStringTemplateContent]:
        return _sentence(
            f"$column: the {cls._what} must be within a total variation distance of "
            "$max_distance from the reference shares.",
            configuration,
            runtime_configuration,
        )

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        shares: dict[str, float] = metrics[self.metric_dependencies[0]]
        kwargs = self._get_success_kwargs()
        reference = {str(k): float(v) for k, v in dict(kwargs["reference"]).items()}
        limit = kwargs.get("max_distance")
        distance = tvd(shares, reference)
        value, change = largest_change(shares, reference)
        return {
            "success": bool(limit is None or distance <= limit),
            "result": {
                "observed_value": distance,
                "details": {"largest_change": {"value": value, "change": change}},
            },
        }


class ExpectColumnHourSharesToBeCloseTo(ExpectColumnValueSharesToBeCloseTo):
    """The UTC hour-of-day shares of a timestamp column are within ``max_distance`` of
    the ``reference`` shares (``"00"`` .. ``"23"``)."""

    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.hour_shares",)
    _what: ClassVar[str] = "UTC hour-of-day shares"


class ExpectColumnKlDivergenceToBeBelowReference(ExpectColumnKLDivergenceToBeLessThan):
    """GX's KL-divergence expectation against a reference partition given as a suite
    parameter, with a Data Docs sentence that does not need the partition itself."""

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        return _sentence(
            "$column: KL divergence of its distribution from the reference training set's "
            "must be below $threshold.",
            configuration,
            runtime_configuration,
        )
