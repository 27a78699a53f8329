"""The shadow verdict: a challenger that disagrees with the champion stays challenger."""

from __future__ import annotations

import numpy as np
import pytest

from fraud_detection.release.shadow import judge
from fraud_detection.serving.settings import ShadowSettings

pytestmark = pytest.mark.unit

SETTINGS = ShadowSettings(min_requests=500, min_agreement=0.95, max_error_rate=0.0, max_p99_ms=5)


def _scores(n: int = 1_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.beta(0.5, 8.0, n)  # mostly low, a tail of high scores: fraud-like


def test_a_challenger_that_agrees_within_budgets_may_be_promoted() -> None:
    champion = _scores()
    # Given a challenger scoring almost like the champion, fast
    challenger = np.clip(champion + np.random.default_rng(1).normal(0, 0.001, len(champion)), 0, 1)
    verdict = judge(
        champion,
        challenger,
        champion_threshold=0.3,
        shadow_threshold=0.3,
        shadow_ms=np.full(len(champion), 0.2),
        settings=SETTINGS,
    )
    # Then it may replace the champion
    assert verdict.promote, verdict.reasons
    assert verdict.agreement is not None
    assert verdict.agreement >= 0.95


def test_a_challenger_with_inverted_scores_stays_challenger_with_the_reason() -> None:
    champion = _scores()
    # Given a challenger whose scores are the champion's inverted
    verdict = judge(
        champion,
        1.0 - champion,
        champion_threshold=0.3,
        shadow_threshold=0.3,
        shadow_ms=np.full(len(champion), 0.2),
        settings=SETTINGS,
    )
    # Then it is not promoted, and the reason names the agreement
    assert not verdict.promote
    assert len(verdict.reasons) == 1
    assert "below min_agreement 0.95" in verdict.reasons[0]


def test_a_short_window_failures_and_slow_scoring_each_block_with_their_reason() -> None:
    champion = _scores(100)
    shadow = champion.copy()
    shadow[:3] = np.nan  # could not score three requests
    verdict = judge(
        champion,
        shadow,
        champion_threshold=0.3,
        shadow_threshold=0.3,
        shadow_ms=np.full(100, 9.0),
        settings=SETTINGS,
    )
    assert not verdict.promote
    text = " | ".join(verdict.reasons)
    assert "100 of min_requests 500" in text
    assert "3 of 100 not scored" in text
    assert "above max_p99_ms 5" in text
    assert "min_agreement" not in text  # the scored ones agree


def test_a_window_shorter_than_min_duration_is_not_full() -> None:
    from fraud_detection.release.shadow import window_full

    champion = _scores()
    timed = SETTINGS.model_copy(update={"min_duration_s": 600})
    args = {
        "champion_threshold": 0.3,
        "shadow_threshold": 0.3,
        "shadow_ms": np.full(len(champion), 0.2),
        "settings": timed,
    }
    # Given enough requests, but a shadow begun 60 s ago
    early = judge(champion, champion, window_s=60, **args)
    # Then the window is not full yet, and says how long it lasted
    assert not early.promote
    assert not window_full(early)
    assert early.reasons == ["shadow window not full: 60 s of min_duration_s 600 s"]
    # And once the time has passed, it may be promoted
    assert judge(champion, champion, window_s=601, **args).promote


def test_the_canary_share_is_deterministic_per_transaction_and_near_the_share() -> None:
    from fraud_detection.features.online import transaction_key
    from fraud_detection.serving.service import canary

    keys = [transaction_key(f"T{i}", 1, 0, 1, 1.0) for i in range(20_000)]
    picked = [canary(k, 0.1) for k in keys]
    # About the share, the same answer every time for a transaction, none at share 0
    assert abs(np.mean(picked) - 0.1) < 0.01
    assert picked == [canary(k, 0.1) for k in keys]
    assert not any(canary(k, 0.0) for k in keys)
