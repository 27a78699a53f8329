"""A fast, faithful scorer built from the registered sklearn Pipeline, and the standard
path for any other model.

:func:`scorer_for` picks: the fast :class:`Scorer` for the template's model, else
:class:`PipelineScorer` (the pipeline's own ``predict_proba``), so any classifier a
user registers serves.

The registered model is the fitted :class:`~sklearn.pipeline.Pipeline` of
``training/model.py``: a pandas ``ColumnTransformer`` (numbers to nullable floats,
categories to strings, a missing category to ``"(missing)"``, each category to its
ordinal code, an unseen one to NaN), then a ``HistGradientBoostingClassifier`` that
encodes the categorical columns once more with its own internal ``OrdinalEncoder``.
Scoring one row through all of that takes ~20 ms here (most of it pandas); the trees
themselves take ~0.3 ms.

:class:`Scorer` does exactly what the two encoders do, with plain dicts composed once at
load time (raw category -> the classifier's internal code, unseen or missing -> NaN as
the pipeline does), lays the row out as a float64 numpy row in the classifier's internal
column order, and calls ``predict_proba`` of a copy of the fitted classifier whose
feature names and internal encoder are removed (the encoding is done already).
``tests/unit/test_serving_scorer.py`` proves it equals ``pipeline.predict_proba`` to
1e-9 on holdout rows with unseen and missing categories and missing numbers; the
service also checks it on each version's logged input example before swapping it in.

The service runs the classifier with one OpenMP thread (:func:`limit_openmp_threads`,
set once at start-up in the thread that scores): a one-row call gains nothing from a
second thread, and concurrent requests would oversubscribe the cores.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud_detection.errors import FraudError
from fraud_detection.training.model import MISSING_CATEGORY

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = [
    "PipelineScorer",
    "Scorer",
    "ScorerError",
    "build_scorer",
    "limit_openmp_threads",
    "scorer_for",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


class ScorerError(FraudError):
    """The model's structure is not the one this scorer knows how to reproduce."""


def limit_openmp_threads() -> None:
    """One OpenMP thread for the calling thread's model calls (the service calls it once,
    at start-up, in the event loop's thread; OpenMP's setting is per thread, so other
    threads, e.g. training in the same process, keep theirs)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


@dataclass(frozen=True, eq=False)
class Scorer:
    """Scores rows given as numeric values and raw category strings.

    ``numeric`` and ``categorical`` are the pipeline's input columns in its order. A
    numeric row is float64 with NaN for missing; a category is a ``str`` or ``None``.
    """

    kind = "fast"

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    # Per categorical column: raw value -> the classifier's internal code.
    codes: tuple[Mapping[str, float], ...]
    # Per categorical column: the code of a missing value (that of "(missing)", or NaN).
    missing_codes: tuple[float, ...]
    # Position in the classifier's internal row of each numeric / categorical input.
    numeric_slots: tuple[int, ...]
    categorical_slots: tuple[int, ...]
    classifier: Any  # the fitted HistGradientBoostingClassifier, stripped copy

    @property
    def n_inputs(self) -> int:
        return len(self.numeric_slots) + len(self.categorical_slots)

    def encode(self, numbers: FloatArray, categories: Sequence[Sequence[str | None]]) -> FloatArray:
        """The classifier's internal rows: ``numbers`` (n x numeric) and one sequence of
        raw values per categorical column."""
        n = numbers.shape[0]
        out = np.empty((n, self.n_inputs), dtype=np.float64)
        out[:, self.numeric_slots] = numbers
        for slot, values, codes, missing in zip(
            self.categorical_slots, categories, self.codes, self.missing_codes, strict=True
        ):
            out[:, slot] = [missing if v is None else codes.get(v, math.nan) for v in values]
        return out

    def encode_one(self, numbers: Sequence[float], categories: Sequence[str | None]) -> FloatArray:
        """One internal row (shape 1 x n) from one row of numbers and of categories."""
        out = np.empty((1, self.n_inputs), dtype=np.float64)
        out[0, self.numeric_slots] = numbers
        for slot, value, codes, missing in zip(
            self.categorical_slots, categories, self.codes, self.missing_codes, strict=True
        ):
            out[0, slot] = missing if value is None else codes.get(value, math.nan)
        return out

    def predict(self, rows: FloatArray) -> FloatArray:
        """P(fraud) of internal rows (from :meth:`encode`)."""
        proba: FloatArray = self.classifier.predict_proba(rows)[:, 1]
        return proba

    def score_one(self, numbers: Sequence[float], categories: Sequence[str | None]) -> float:
        """P(fraud) of one row: the service's hot path (and the benchmark's floor)."""
        return float(self.predict(self.encode_one(numbers, categories))[0])

    def score_frame(self, frame: pd.DataFrame) -> FloatArray:
        """P(fraud) of a DataFrame holding the input columns, as the pipeline takes it."""
        numbers = (
            frame[list(self.numeric)].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        )
        categories = [
            frame[c].astype("string").astype(object).where(frame[c].notna(), None).tolist()
            for c in self.categorical
        ]
        return self.predict(self.encode(numbers, categories))


class PipelineScorer:
    """The standard path for any other model: the pipeline's own ``predict_proba`` on a
    DataFrame laid out like the version's logged input example (same columns, same
    dtypes). Slower than :class:`Scorer` (pandas per call), but exact for any sklearn
    classifier a user registers."""

    kind = "pipeline"

    def __init__(self, pipeline: Pipeline, example: pd.DataFrame) -> None:
        from fraud_detection.features.engineering import CATEGORICAL_FEATURES

        columns = [str(c) for c in example.columns]
        self.pipeline = pipeline
        self.categorical = tuple(c for c in columns if c in CATEGORICAL_FEATURES)
        self.numeric = tuple(c for c in columns if c not in CATEGORICAL_FEATURES)
        self._columns = columns
        self._dtypes = example.dtypes.to_dict()

    def encode(self, numbers: FloatArray, categories: Sequence[Sequence[str | None]]) -> Any:
        """A DataFrame of the pipeline's input columns (NaN / None for missing)."""
        data: dict[str, Any] = {c: numbers[:, i] for i, c in enumerate(self.numeric)}
        data.update({c: list(v) for c, v in zip(self.categorical, categories, strict=True)})
        frame = pd.DataFrame(data)[self._columns]
        return frame.astype(self._dtypes)

    def predict(self, rows: Any) -> FloatArray:
        proba: FloatArray = np.asarray(self.pipeline.predict_proba(rows), dtype=np.float64)[:, 1]
        return proba

    def score_one(self, numbers: Sequence[float], categories: Sequence[str | None]) -> float:
        row = np.asarray([numbers], dtype=np.float64)
        return float(self.predict(self.encode(row, [[c] for c in categories]))[0])

    def score_frame(self, frame: pd.DataFrame) -> FloatArray:
        return self.predict(frame[self._columns])


def scorer_for(pipeline: Pipeline, example: pd.DataFrame) -> Scorer | PipelineScorer:
    """The fast :class:`Scorer` when the model is the shape it reproduces, else the
    pipeline's own ``predict_proba`` (:class:`PipelineScorer`)."""
    try:
        return build_scorer(pipeline)
    except ScorerError:
        return PipelineScorer(pipeline, example)


def _ordinal(values: Any) -> dict[Any, int]:
    return {value: i for i, value in enumerate(list(values))}


def build_scorer(pipeline: Pipeline) -> Scorer:
    """A :class:`Scorer` reproducing ``pipeline.predict_proba(frame)[:, 1]``.

    Raises :class:`ScorerError` when the pipeline is not the shape ``build_pipeline``
    makes (prepare = numeric + categorical ColumnTransformer, classify = a fitted
    HistGradientBoostingClassifier).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.preprocessing import OrdinalEncoder

    steps = dict(pipeline.steps)
    prepare, classifier = steps.get("prepare"), steps.get("classify")
    if not isinstance(prepare, ColumnTransformer) or not isinstance(
        classifier, HistGradientBoostingClassifier
    ):
        raise ScorerError(
            "the model is not a Pipeline(prepare=ColumnTransformer, "
            "classify=HistGradientBoostingClassifier): cannot build the fast scorer"
        )
    fitted = {
        name: (transformer, list(columns)) for name, transformer, columns in prepare.transformers_
    }
    if set(fitted) - {"numeric", "categorical", "remainder"}:
        raise ScorerError(f"unexpected column groups in the model: {sorted(fitted)}")
    numeric = fitted.get("numeric", (None, []))[1]
    categorical_step, categorical = fitted.get("categorical", (None, []))
    outer_codes: list[dict[Any, int]] = []
    if categorical:
        encoder = categorical_step[-1]
        if not isinstance(encoder, OrdinalEncoder) or not (
            encoder.handle_unknown == "use_encoded_value" and math.isnan(encoder.unknown_value)
        ):
            raise ScorerError("the categorical columns are not ordinal-encoded with unknown=NaN")
        outer_codes = [_ordinal(categories) for categories in encoder.categories_]

    # The classifier's inputs, as the ColumnTransformer outputs them.
    seen = [str(c) for c in classifier.feature_names_in_]
    if seen != [*numeric, *categorical]:
        raise ScorerError(f"the classifier's inputs {seen} are not the prepared columns")

    # The classifier's own encoder: categorical inputs first, then the numeric ones.
    inner = getattr(classifier, "_preprocessor", None)
    position = list(range(len(seen)))
    inner_codes: list[dict[float, int] | None] = [None] * len(categorical)
    if inner is not None:
        masks = {name: np.asarray(mask, dtype=bool) for name, _, mask in inner.transformers_}
        inner_encoder = inner.named_transformers_["encoder"]
        cat_idx = np.flatnonzero(masks["encoder"]).tolist()
        num_idx = np.flatnonzero(masks["numerical"]).tolist()
        order = cat_idx + num_idx
        position = [order.index(i) for i in range(len(seen))]
        for k, column in enumerate(cat_idx):
            j = column - len(numeric)
            if j < 0:
                raise ScorerError("the classifier treats a numeric input as categorical")
            inner_codes[j] = {float(v): i for i, v in enumerate(inner_encoder.categories_[k])}

    composed: list[dict[str, float]] = []
    missing_codes: list[float] = []
    for j, outer in enumerate(outer_codes):
        table: dict[str, float] = {}
        for value, code in outer.items():
            mapped = inner_codes[j]
            final = float(code) if mapped is None else float(mapped.get(float(code), math.nan))
            table[str(value)] = final
        composed.append(table)
        missing_codes.append(table.get(MISSING_CATEGORY, math.nan))

    stripped = copy.copy(classifier)
    # Names are validated against DataFrames only; the row is laid out by position here.
    if hasattr(stripped, "feature_names_in_"):
        del stripped.feature_names_in_
    stripped._preprocessor = None  # the encoding above replaces it
    return Scorer(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        codes=tuple(composed),
        missing_codes=tuple(missing_codes),
        numeric_slots=tuple(position[: len(numeric)]),
        categorical_slots=tuple(position[len(numeric) :]),
        classifier=stripped,
    )
