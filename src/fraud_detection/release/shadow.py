"""The shadow verdict: may a challenger scored beside the champion replace it? Pure.

In shadow the challenger scores the same requests as the champion and is never answered
with. Over a window of requests it may replace the champion when (``serving.release.shadow``):

- the window is full: at least ``min_requests`` requests scored by both, over at least
  ``min_duration_s`` since the shadow began;
- the two agree: the share of requests with the same decision, each model at its own
  threshold, is at least ``min_agreement`` (a challenger with inverted scores agrees on
  almost none);
- it does not fail: the share of requests it could not score (a NaN score) is at most
  ``max_error_rate``;
- it is fast enough: the p99 of its own scoring time is at most ``max_p99_ms``.

:func:`judge` takes the scores as arrays (the prediction log's columns) and returns every
number behind the verdict and one reason per rule not met.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fraud_detection.serving.settings import ShadowSettings


@dataclass(frozen=True)
class ShadowVerdict:
    """Whether the challenger may become champion, and why (not)."""

    promote: bool
    requests: int
    agreement: float | None
    error_rate: float | None
    p99_ms: float | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    champion_scores: npt.ArrayLike,
    shadow_scores: npt.ArrayLike,
    *,
    champion_threshold: float,
    shadow_threshold: float,
    shadow_ms: npt.ArrayLike,
    settings: ShadowSettings,
    window_s: float | None = None,
) -> ShadowVerdict:
    """The verdict on one window of requests scored by both models (see the module).
    ``window_s``: how long the shadow has lasted (needed when ``min_duration_s`` > 0)."""
    champ = np.asarray(champion_scores, dtype=np.float64)
    shadow = np.asarray(shadow_scores, dtype=np.float64)
    took = np.asarray(shadow_ms, dtype=np.float64)
    n = len(champ)
    if len(shadow) != n or len(took) != n:
        raise ValueError("champion_scores, shadow_scores and shadow_ms differ in length")
    if n == 0:
        return ShadowVerdict(False, 0, None, None, None, [_window(0, settings)])
    short = settings.min_duration_s > 0 and (window_s is None or window_s < settings.min_duration_s)
    failed = ~np.isfinite(shadow)
    error_rate = float(failed.mean())
    scored = ~failed
    agreement = (
        float(
            ((champ[scored] >= champion_threshold) == (shadow[scored] >= shadow_threshold)).mean()
        )
        if scored.any()
        else 0.0
    )
    timed = took[np.isfinite(took)]
    p99 = float(np.percentile(timed, 99)) if len(timed) else None
    reasons = []
    if n < settings.min_requests:
        reasons.append(_window(n, settings))
    if short:
        lasted = "an unknown time" if window_s is None else f"{window_s:,.0f} s"
        reasons.append(
            f"shadow window not full: {lasted} of min_duration_s {settings.min_duration_s:,.0f} s"
        )
    if agreement < settings.min_agreement:
        reasons.append(
            f"agreement {agreement:.3f} below min_agreement {settings.min_agreement:g} "
            f"(same decision on {agreement:.1%} of {int(scored.sum()):,} requests)"
        )
    if error_rate > settings.max_error_rate:
        reasons.append(
            f"error rate {error_rate:.3f} above max_error_rate {settings.max_error_rate:g} "
            f"({int(failed.sum()):,} of {n:,} not scored)"
        )
    if p99 is None or p99 > settings.max_p99_ms:
        shown = "unknown" if p99 is None else f"{p99:.2f} ms"
        reasons.append(f"shadow scoring p99 {shown} above max_p99_ms {settings.max_p99_ms:g}")
    return ShadowVerdict(not reasons, n, agreement, error_rate, p99, reasons)


def window_full(verdict: ShadowVerdict) -> bool:
    """Whether the verdict was reached on a full window (else: keep the shadow going)."""
    return not any(r.startswith("shadow window not full") for r in verdict.reasons)


def _window(n: int, settings: ShadowSettings) -> str:
    return f"shadow window not full: {n:,} of min_requests {settings.min_requests:,} requests"
