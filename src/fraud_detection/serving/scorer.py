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

For the API's one-row calls the trees are not walked by sklearn: its ``predict_proba``
spends ~1.3 ms per row here in Python overhead, once per tree (200 trees). :class:`Trees`
holds every tree's nodes in flat numpy arrays and walks all trees at once, one level per
step, with the exact rules of sklearn's ``_predictor.pyx`` (``x <= threshold`` goes left;
NaN follows the node's missing direction; a categorical node goes left when the code is
in its left bitset, right when it is another known category, and an unknown or negative
code goes where missing values go); leaf values are summed in sklearn's order and turned
into a probability by the classifier's own link. ~0.15 ms per row. It is checked against
``predict_proba`` when built, on rows that hit every threshold from both sides, NaN and
every category code; any difference, or a model it does not know (not binary, another
node layout), and the scorer uses sklearn's trees. Batches of more than
:data:`TREES_MAX_ROWS` rows always use sklearn's, which is faster per row in bulk.
``benchmarks/bench_serving.py`` records both.

The service runs the classifier with one OpenMP thread (:func:`limit_openmp_threads`,
set once at start-up in the thread that scores): a one-row call gains nothing from a
second thread, and concurrent requests would oversubscribe the cores.
"""

from __future__ import annotations

import copy
import logging
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

log = logging.getLogger(__name__)

__all__ = [
    "TREES_MAX_ROWS",
    "PipelineScorer",
    "Scorer",
    "ScorerError",
    "Trees",
    "build_scorer",
    "limit_openmp_threads",
    "scorer_for",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.intp]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

# Up to this many rows per call, :class:`Trees` scores (row by row); above, sklearn.
TREES_MAX_ROWS = 8
# The category column of a missing or negative code in Trees.category_left.
_MISSING_CODE = 256


class ScorerError(FraudError):
    """The model's structure is not the one this scorer knows how to reproduce."""


def limit_openmp_threads() -> None:
    """One OpenMP thread for the calling thread's model calls (the service calls it once,
    at start-up, in the event loop's thread; OpenMP's setting is per thread, so other
    threads, e.g. training in the same process, keep theirs)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


@dataclass(frozen=True, eq=False)
class Trees:
    """A fitted binary ``HistGradientBoostingClassifier``'s trees as flat arrays, walked
    for all trees at once (see the module docstring). Node ``i`` of the forest has
    ``feature[i]``, ``threshold[i]``, ``missing_left[i]``; ``children[1, i]`` / ``children[0,
    i]`` are its left / right child, and a leaf is its own child. A categorical node's
    decision for each code 0..255 (and a missing or negative one) is
    ``category_left[category_row[i], code]``."""

    feature: IntArray
    threshold: FloatArray
    missing_left: BoolArray
    children: IntArray  # shape (2, nodes): [right, left]
    categorical: BoolArray
    category_row: IntArray
    category_left: BoolArray  # shape (categorical nodes + 1, 257)
    value: FloatArray
    roots: IntArray
    depth: int
    baseline: float
    classifier: Any  # for its link (raw score -> probability)

    @classmethod
    def from_classifier(cls, classifier: Any) -> Trees:
        """The trees of a fitted classifier; :class:`ScorerError` if their layout is not
        the one this walker reproduces."""
        try:
            predictors = classifier._predictors
            baseline = np.asarray(classifier._baseline_prediction, dtype=np.float64).ravel()
            known, feature_map = classifier._bin_mapper.make_known_categories_bitsets()
            if classifier.n_trees_per_iteration_ != 1 or baseline.size != 1:
                raise ScorerError("the classifier is not binary")
            trees = [tree for iteration in predictors for tree in iteration]
            fields = {"feature_idx", "num_threshold", "missing_go_to_left", "left", "right"}
            fields |= {"is_leaf", "is_categorical", "bitset_idx", "value", "depth"}
            if not trees or not fields <= set(trees[0].nodes.dtype.names or ()):
                raise ScorerError("the classifier's tree nodes are not laid out as expected")
        except AttributeError as exc:
            raise ScorerError(f"the classifier's trees cannot be read: {exc}") from exc

        def bits(bitset: Any) -> BoolArray:  # bit c of an 8 x uint32 bitset, c = 0..255
            words = np.ascontiguousarray(bitset, dtype="<u4")
            return np.unpackbits(words.view(np.uint8), bitorder="little").astype(bool)

        parts: dict[str, list[Any]] = {k: [] for k in ("f", "t", "m", "l", "r", "c", "cr", "v")}
        tables: list[BoolArray] = [np.zeros(_MISSING_CODE + 1, dtype=bool)]
        roots: list[int] = []
        offset = 0
        for tree in trees:
            nodes = tree.nodes
            n = len(nodes)
            index = np.arange(n, dtype=np.intp) + offset
            leaf = nodes["is_leaf"].astype(bool)
            categorical = nodes["is_categorical"].astype(bool) & ~leaf
            rows = np.zeros(n, dtype=np.intp)
            for i in np.flatnonzero(categorical):
                node = nodes[i]
                goes_left = bool(node["missing_go_to_left"])
                left = bits(tree.raw_left_cat_bitsets[node["bitset_idx"]])
                seen = bits(known[feature_map[node["feature_idx"]]])
                # Left if in the left set; right if another known category; else missing.
                decision = left | (~seen & goes_left)
                rows[i] = len(tables)
                tables.append(np.append(decision, goes_left))
            roots.append(offset)
            parts["f"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp))
            parts["t"].append(nodes["num_threshold"].astype(np.float64))
            parts["m"].append(nodes["missing_go_to_left"].astype(bool))
            parts["l"].append(np.where(leaf, index, nodes["left"].astype(np.intp) + offset))
            parts["r"].append(np.where(leaf, index, nodes["right"].astype(np.intp) + offset))
            parts["c"].append(categorical)
            parts["cr"].append(rows)
            parts["v"].append(nodes["value"].astype(np.float64))
            offset += n
        return cls(
            feature=np.concatenate(parts["f"]),
            threshold=np.concatenate(parts["t"]),
            missing_left=np.concatenate(parts["m"]),
            children=np.stack([np.concatenate(parts["r"]), np.concatenate(parts["l"])]),
            categorical=np.concatenate(parts["c"]),
            category_row=np.concatenate(parts["cr"]),
            category_left=np.stack(tables),
            value=np.concatenate(parts["v"]),
            roots=np.asarray(roots, dtype=np.intp),
            depth=max(int(tree.nodes["depth"].max()) for tree in trees),
            baseline=float(baseline[0]),
            classifier=classifier,
        )

    def raw_one(self, x: FloatArray) -> float:
        """The raw score (log-odds) of one internal row, summed as sklearn sums it."""
        missing = np.isnan(x)
        codes = np.full(x.shape, _MISSING_CODE, dtype=np.intp)
        valid = ~missing & (x >= 0)
        codes[valid] = np.minimum(x[valid], 255).astype(np.intp)
        node = self.roots
        for _ in range(self.depth):
            f = self.feature[node]
            left = np.where(missing[f], self.missing_left[node], x[f] <= self.threshold[node])
            cat = self.categorical[node]
            if cat.any():
                left[cat] = self.category_left[self.category_row[node[cat]], codes[f[cat]]]
            node = self.children[left.view(np.int8), node]
        leaves = np.empty(len(node) + 1, dtype=np.float64)
        leaves[0] = self.baseline
        leaves[1:] = self.value[node]
        return float(np.cumsum(leaves)[-1])  # baseline + tree 1 + tree 2 ..., in order

    def predict(self, rows: FloatArray) -> FloatArray:
        """P(fraud) of internal rows, one walk per row."""
        raw = np.fromiter((self.raw_one(row) for row in rows), np.float64, len(rows))
        proba: FloatArray = self.classifier._loss.predict_proba(raw)[:, 1]
        return proba

    def check(self, n_inputs: int, categorical_slots: Sequence[int], rows: int = 512) -> None:
        """Raise :class:`ScorerError` unless :meth:`predict` equals the classifier's
        ``predict_proba`` exactly on rows that take every branch: each feature at, just
        above and just below the thresholds it is split on, NaN, and for categorical
        features every code 0..255 and -1."""
        rng = np.random.default_rng(0)
        candidates: list[FloatArray] = []
        for feature in range(n_inputs):
            if feature in categorical_slots:
                values = np.arange(-1, 256, dtype=np.float64)
            else:
                cut = np.unique(self.threshold[(self.feature == feature) & ~self.categorical])
                cut = cut[np.isfinite(cut)]
                values = np.concatenate(
                    [cut, np.nextafter(cut, np.inf), np.nextafter(cut, -np.inf), [0.0]]
                )
            candidates.append(np.append(values, np.nan))
        probe = np.column_stack([rng.choice(c, size=rows) for c in candidates])
        expected = self.classifier.predict_proba(probe)[:, 1]
        got = self.predict(probe)
        if not np.array_equal(got, expected):
            gap = float(np.nanmax(np.abs(got - expected)))
            raise ScorerError(f"the numpy trees differ from sklearn's by {gap:.3g}")


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
    trees: Trees | None = None  # the same trees for small calls (None: sklearn's only)

    @property
    def engine(self) -> str:
        """What walks the trees of a small call: ``numpy`` (:class:`Trees`) or ``sklearn``."""
        return "sklearn" if self.trees is None else "numpy"

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
        if self.trees is not None and len(rows) <= TREES_MAX_ROWS:
            return self.trees.predict(rows)
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
    engine = "sklearn"

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
    slots = position[len(numeric) :]
    trees: Trees | None
    try:
        trees = Trees.from_classifier(stripped)
        trees.check(len(seen), slots)
    except ScorerError as exc:
        log.info("scoring small calls with sklearn's trees: %s", exc)
        trees = None
    return Scorer(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        codes=tuple(composed),
        missing_codes=tuple(missing_codes),
        numeric_slots=tuple(position[: len(numeric)]),
        categorical_slots=tuple(slots),
        classifier=stripped,
        trees=trees,
    )
