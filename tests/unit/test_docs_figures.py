"""The figures in docs/ are drawn by scripts over the project's own functions; they run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.features import engineering as fe
from fraud_detection.features.online import CardState

pytestmark = pytest.mark.unit

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"


def _load(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, FIGURES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_card_burst_figure_draws_and_shows_served_equals_offline(tmp_path: Path) -> None:
    figure = _load("card_burst")
    out = figure.draw(tmp_path / "burst.png")  # type: ignore[attr-defined]
    assert out.stat().st_size > 10_000
    assert (FIGURES / "card_burst.png").exists()
    # What the figure claims: the state, as of each request, gives the offline row
    tx = figure.frame()  # type: ignore[attr-defined]
    offline = fe.card_features(tx, new_merchant_lookback=pd.Timedelta(days=6))
    micros = pd.DatetimeIndex(tx["event_timestamp"]).as_unit("us").asi8
    state = CardState.empty()
    for i, (at, amount, merchant) in enumerate(
        zip(micros, tx["amount"], tx["merchant_id"], strict=True)
    ):
        seen = state.window_features(42, int(at))
        for name in fe.CARD_FEATURES:
            assert seen[name] == pytest.approx(offline[name].iloc[i], nan_ok=True), name
        state = state.with_events([int(at)], [amount], [merchant], [i]) or state
