"""The raw suite's own Great Expectations 1.x expectations (subclasses, the GX way).

Importing this module imports Great Expectations and registers the expectations, so the
gate imports it only where it runs a suite or builds Data Docs (:mod:`.gate`).

* ``expect_column_quantile_values_to_be_within_bands``: GX's
  ``expect_column_quantile_values_to_be_between`` with a JSON-safe result. On pandas, GX
  1.24 reports each quantile's verdict as a numpy boolean, which its validation-results
  store cannot serialize (``TypeError: Object of type bool is not JSON serializable``);
  the checks, the arguments and the Data Docs rendering are GX's own.
"""

from __future__ import annotations

from typing import Any

from great_expectations.expectations.core.expect_column_quantile_values_to_be_between import (
    ExpectColumnQuantileValuesToBeBetween,
)
from great_expectations.util import convert_to_json_serializable

__all__ = ["ExpectColumnQuantileValuesToBeWithinBands"]


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
