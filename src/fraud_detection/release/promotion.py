"""The shadow period of a staged release, and the promotion that ends it.

A challenger that passed its delivery checks (``fraud model release``, with
``serving.release.staged`` and ``serving.release.shadow.enabled``) is put in shadow: its
version is tagged ``release.stage=shadow`` and ``release.shadow_since``, and the live
service (which follows the ``challenger`` alias, :mod:`fraud_detection.serving.champion`)
scores every request with it beside the champion, logging both in the prediction log.

``fraud model shadow-check`` (:func:`shadow_check`) reads the rows of that log scored by
both since the shadow began, against the current champion, and asks the pure verdict
(:func:`fraud_detection.release.shadow.judge`):

- window not full yet: nothing changes, the shadow goes on;
- the verdict fails (disagreement, failures, too slow): the challenger is blocked
  (``release.stage=blocked``, ``release.blocked`` with the verdict's reasons), the service
  stops scoring it, the champion stays;
- the verdict passes and the profile's ``serving.release_approval`` is ``auto`` (level 1,
  the local profile): the challenger becomes champion (the registry's compare-and-set
  promotion); ``manual`` (the production profile): it is tagged
  ``release.stage=awaiting_approval`` and stays in shadow until ``fraud model approve
  --version N --reason ...`` (:func:`approve`) promotes it, tagged ``release.approved_by``
  (user@host), ``release.approved_at`` and ``release.approval_reason``.

Every decision is tagged on the version (``release.shadow_verdict``), appended to CT's run
ledger (``<state>/ct/runs.jsonl``, trigger ``release``) and announced to the service
through ``<state>/serving/champion.json``, so it starts or stops the shadow at once.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraud_detection.registry import runs, tracking
from fraud_detection.release.rollback import operator
from fraud_detection.release.shadow import ShadowVerdict, judge, window_full
from fraud_detection.serving.champion import STAGE_TAG
from fraud_detection.serving.settings import ShadowSettings
from fraud_detection.training import ct

SHADOW, AWAITING, PROMOTED, BLOCKED = "shadow", "awaiting_approval", "promoted", "blocked"
SINCE_TAG = "release.shadow_since"
VERDICT_TAG = "release.shadow_verdict"
BLOCKED_TAG = "release.blocked"
APPROVED_BY, APPROVED_AT, APPROVAL_REASON = (
    "release.approved_by",
    "release.approved_at",
    "release.approval_reason",
)
TRIGGER = "release"
_WINDOW_COLUMNS = (
    "logged_at",
    "model_version",
    "score",
    "threshold",
    "route",
    "shadow_version",
    "shadow_score",
    "shadow_threshold",
    "shadow_ms",
)


@dataclass(frozen=True)
class ShadowCheck:
    """What ``fraud model shadow-check`` (or ``approve``) found and did."""

    version: str
    champion: str | None  # after the step
    outcome: str  # in shadow | blocked | promoted | awaiting approval
    message: str  # one line
    verdict: ShadowVerdict | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def enter_shadow(ctx: ct.CTContext, version: str) -> None:
    """Put a delivered challenger in shadow: tag it and tell the service."""
    tracking.set_version_tags(ctx.model_name, version, {STAGE_TAG: SHADOW, SINCE_TAG: _now()})
    current = tracking.champion(ctx.model_name)
    ct.notify_serving(ctx, None if current is None else str(current.version), promoted=False)


def read_window(
    state: Path, *, challenger: str, champion: str, since: dt.datetime | None
) -> dict[str, Any]:
    """The prediction-log rows scored by both ``champion`` and ``challenger`` since
    ``since``: each model's scores and thresholds, and the challenger's scoring time in
    shadow (NaN on a canary row, where it answered). Part files written before the log
    had the shadow columns are skipped."""
    import pandas as pd
    import pyarrow.parquet as pq

    folder = state / "serving" / "predictions"
    files = sorted(folder.glob("date=*/part-*.parquet")) if folder.is_dir() else []
    frames = []
    for file in files:
        if "route" not in pq.read_schema(file).names:
            continue
        frames.append(pd.read_parquet(file, columns=list(_WINDOW_COLUMNS)))
    frame = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_WINDOW_COLUMNS)
    )
    if since is not None and len(frame):
        frame = frame[pd.to_datetime(frame["logged_at"], utc=True) >= since]
    shadow = frame[
        (frame["route"] == "shadow")
        & (frame["model_version"] == champion)
        & (frame["shadow_version"] == challenger)
    ]
    canary = frame[
        (frame["route"] == "canary")
        & (frame["model_version"] == challenger)
        & (frame["shadow_version"] == champion)
    ]

    def floats(values: Any) -> np.ndarray:
        return np.asarray(pd.to_numeric(values), dtype=np.float64)

    return {
        "champion_scores": np.concatenate(
            [floats(shadow["score"]), floats(canary["shadow_score"])]
        ),
        "shadow_scores": np.concatenate([floats(shadow["shadow_score"]), floats(canary["score"])]),
        "shadow_ms": np.concatenate([floats(shadow["shadow_ms"]), np.full(len(canary), np.nan)]),
        "champion_threshold": _last(shadow["threshold"], canary["shadow_threshold"]),
        "shadow_threshold": _last(shadow["shadow_threshold"], canary["threshold"]),
        "canary_rows": len(canary),
    }


def _last(*columns: Any) -> float:
    for column in columns:
        values = column.dropna()
        if len(values):
            return float(values.iloc[-1])
    return 0.5  # no row: the verdict says the window is empty anyway


def _tags(ctx: ct.CTContext, version: str) -> dict[str, str]:
    return dict(tracking.version_info(ctx.model_name, version)["tags"])


def _record(
    ctx: ct.CTContext,
    started: float,
    champion: str | None,
    outcome: str,
    gate: str,
    reasons: list[str],
) -> None:
    record = runs.RunRecord(
        trigger=TRIGGER,
        started_at=_now(),
        champion_version=champion,
        model_gate=gate,
        outcome=outcome,
        reasons=reasons,
    )
    runs.append_record(ctx.paths, record.finish(started))


def _verdict_tag(verdict: ShadowVerdict) -> str:
    return json.dumps(verdict.to_dict())[:5000]


def _in_shadow(ctx: ct.CTContext) -> tuple[str, dict[str, str], str | None]:
    """The challenger in shadow, its tags and the champion; a one-line error otherwise."""
    name = ctx.model_name
    pending = tracking.challenger(name)
    if pending is None:
        raise tracking.RegistryError(f"no challenger of {name} in shadow")
    version = str(pending.version)
    tags = dict(pending.tags)
    stage = tags.get(STAGE_TAG)
    if stage not in (SHADOW, AWAITING):
        shown = f"its release stage is {stage}" if stage else "it has not been delivered"
        raise tracking.RegistryError(
            f"challenger version {version} is not in shadow ({shown}): run `fraud model release`"
        )
    current = tracking.champion(name)
    return version, tags, None if current is None else str(current.version)


def shadow_check(ctx: ct.CTContext, settings: ShadowSettings | None = None) -> ShadowCheck:
    """Judge the challenger's shadow window; promote, block or wait (see the module).

    Raises :class:`~fraud_detection.registry.tracking.RegistryError` (one line) when no
    challenger is in shadow or there is no champion to compare it with.
    """
    from fraud_detection.serving.settings import load_serving_config

    started = time.perf_counter()
    settings = settings or load_serving_config().release.shadow
    tracking.setup_mlflow(ctx.profile)
    name = ctx.model_name
    version, tags, champion = _in_shadow(ctx)
    if champion is None:
        raise tracking.RegistryError(
            f"challenger version {version} has no champion to be compared with: "
            "run `fraud model release` with serving.release.shadow.enabled: false"
        )
    if tags.get(STAGE_TAG) == AWAITING:
        return ShadowCheck(
            version,
            champion,
            "awaiting approval",
            f"version {version} passed its shadow window and awaits approval: "
            f'fraud model approve --version {version} --reason "..."',
        )
    since = _parse(tags.get(SINCE_TAG))
    window = read_window(ctx.paths.root, challenger=version, champion=champion, since=since)
    lasted = None if since is None else (dt.datetime.now(dt.UTC) - since).total_seconds()
    verdict = judge(
        window["champion_scores"],
        window["shadow_scores"],
        champion_threshold=window["champion_threshold"],
        shadow_threshold=window["shadow_threshold"],
        shadow_ms=window["shadow_ms"],
        settings=settings,
        window_s=lasted,
    )
    if not window_full(verdict):
        return ShadowCheck(
            version,
            champion,
            "in shadow",
            "still in shadow: " + "; ".join(verdict.reasons),
            verdict,
        )
    figures = _figures(verdict)
    if not verdict.promote:
        why = "; ".join(verdict.reasons)
        tracking.set_version_tags(
            name,
            version,
            {STAGE_TAG: BLOCKED, BLOCKED_TAG: why[:500], VERDICT_TAG: _verdict_tag(verdict)},
        )
        _record(ctx, started, champion, "kept champion", f"blocked v{version}: shadow", [why])
        ct.notify_serving(ctx, champion, promoted=False)  # the service drops the shadow
        return ShadowCheck(
            version, champion, "blocked", f"version {version} stays challenger: {why}", verdict
        )
    tracking.set_version_tags(name, version, {VERDICT_TAG: _verdict_tag(verdict)})
    if ctx.profile.serving.release_approval == "manual":
        tracking.set_version_tags(name, version, {STAGE_TAG: AWAITING})
        _record(
            ctx, started, champion, "awaiting approval", f"awaiting approval v{version}", [figures]
        )
        return ShadowCheck(
            version,
            champion,
            "awaiting approval",
            f"version {version} passed its shadow window ({figures}) and awaits approval "
            f"(profile {ctx.profile.name}: serving.release_approval manual): "
            f'fraud model approve --version {version} --reason "..."',
            verdict,
        )
    return _promote(ctx, started, version, champion, f"shadow {figures}", verdict)


def approve(ctx: ct.CTContext, version: str, reason: str) -> ShadowCheck:
    """Promote a challenger awaiting approval after its shadow window, audited.

    Raises :class:`~fraud_detection.registry.tracking.RegistryError` (one line) when
    ``version`` is not the challenger awaiting approval, or the reason is empty.
    """
    started = time.perf_counter()
    if not reason.strip():
        raise tracking.RegistryError('an approval needs a reason: --reason "why it may serve"')
    tracking.setup_mlflow(ctx.profile)
    current, tags, champion = _in_shadow(ctx)
    if current != str(version):
        raise tracking.RegistryError(
            f"version {version} is not the challenger (the challenger is version {current})"
        )
    if tags.get(STAGE_TAG) != AWAITING:
        raise tracking.RegistryError(
            f"version {version} is still in its shadow window, not awaiting approval: "
            "run `fraud model shadow-check` first"
        )
    by = operator()
    tracking.set_version_tags(
        ctx.model_name,
        current,
        {APPROVED_BY: by, APPROVED_AT: _now(), APPROVAL_REASON: reason.strip()[:500]},
    )
    return _promote(ctx, started, current, champion, f"approved by {by}: {reason.strip()}", None)


def _promote(
    ctx: ct.CTContext,
    started: float,
    version: str,
    champion: str | None,
    why: str,
    verdict: ShadowVerdict | None,
) -> ShadowCheck:
    result = tracking.promote(
        ctx.model_name,
        version,
        expected_champion=champion,
        decision={"promote": True, "reasons": [why]},
    )
    if result.promoted:
        tracking.set_version_tags(ctx.model_name, version, {STAGE_TAG: PROMOTED})
    outcome = "promoted" if result.promoted else "kept champion"
    gate = f"released v{version} after shadow" if result.promoted else f"not released v{version}"
    _record(ctx, started, result.champion, outcome, gate, [why, result.reason])
    ct.notify_serving(ctx, result.champion, promoted=result.promoted)
    if not result.promoted:
        return ShadowCheck(version, result.champion, "in shadow", result.reason, verdict)
    return ShadowCheck(
        version, result.champion, "promoted", f"version {version} is the champion ({why})", verdict
    )


def _figures(verdict: ShadowVerdict) -> str:
    p99 = "n/a" if verdict.p99_ms is None else f"{verdict.p99_ms:.2f} ms"
    return (
        f"agreement {verdict.agreement or 0:.3f} over {verdict.requests:,} requests, "
        f"error rate {verdict.error_rate or 0:.3f}, p99 {p99}"
    )


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
