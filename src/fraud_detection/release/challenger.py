"""``fraud model release``: the challenger becomes champion only once it is delivered.

With ``serving.release.staged: true`` a version that passed CT's model gate stays the
``challenger`` (tagged ``gate.promote=true``). This step runs the delivery checks
(:mod:`fraud_detection.release.delivery`) on it in the serving path: a ``fraud serve`` of
its own serves the challenger (``FRAUD_SERVING__ALIAS=challenger``, no prediction log, no
live traffic), loads it with the service's loader, answers the smoke request and holds
the load budgets. Passed: the version goes into shadow (tagged ``release.stage=shadow``,
:mod:`.promotion`): the live service scores every request with it beside the champion
until ``fraud model shadow-check`` promotes or blocks it; with
``serving.release.shadow.enabled: false`` (or ``staged: false``, where no service scores
in shadow) the ``champion`` alias moves at once (the registry's compare-and-set promotion)
and serving is told. Failed: nothing moves, the version stays challenger, tagged
``release.blocked`` with the failed checks and ``release.stage=blocked``. Either way a
record goes to CT's run ledger (trigger ``release``), so ``fraud ct history`` shows it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from fraud_detection.registry import runs, tracking
from fraud_detection.release import promotion
from fraud_detection.release.delivery import DeliveryReport, run_delivery_check
from fraud_detection.serving.champion import STAGE_TAG
from fraud_detection.serving.settings import DeliverySettings, load_serving_config
from fraud_detection.training import ct

BLOCKED_TAG = "release.blocked"
TRIGGER = "release"


def staged() -> bool:
    """Whether a version that passed CT's gate stays the ``challenger`` until
    ``fraud model release`` delivers it (``serving.release.staged``), instead of being
    promoted by the CT run."""
    return load_serving_config().release.staged


@dataclass(frozen=True)
class Release:
    """What ``fraud model release`` did."""

    version: str
    promoted: bool
    champion: str | None
    reason: str
    report: DeliveryReport
    shadow: bool = False  # delivered and put in shadow (not champion yet)


def release_challenger(
    ctx: ct.CTContext,
    *,
    budgets: DeliverySettings | None = None,
    progress: Callable[[str], None] = lambda _message: None,
) -> Release:
    """Delivery checks on the challenger, then promote it if they pass (see the module).

    Raises :class:`~fraud_detection.registry.tracking.RegistryError` when there is no
    challenger or it did not pass the model gate.
    """
    started = time.perf_counter()
    tracking.setup_mlflow(ctx.profile)
    name = ctx.model_name
    pending = tracking.challenger(name)
    if pending is None:
        raise tracking.RegistryError(f"no challenger of {name} to release")
    version = str(pending.version)
    tags = dict(pending.tags)
    if tags.get("gate.promote") != "true":
        why = tags.get("gate.reasons") or "no gate decision recorded"
        raise tracking.RegistryError(
            f"challenger version {version} did not pass the model gate ({why}): not released"
        )
    current = tracking.champion(name)
    expected = None if current is None else str(current.version)
    record = runs.RunRecord(
        trigger=TRIGGER,
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        champion_version=expected,
    )
    report = run_delivery_check(
        state_dir=ctx.paths.root, budgets=budgets, progress=progress, alias="challenger"
    )
    if report.version != version:
        raise tracking.RegistryError(
            f"the challenger moved from version {version} to {report.version} during its "
            "delivery check: run `fraud model release` again"
        )
    if not report.passed:
        summary = report.summary()
        tracking.set_version_tags(name, version, {BLOCKED_TAG: summary[:500], STAGE_TAG: "blocked"})
        record.outcome = "kept champion"
        record.model_gate = f"blocked v{version}: delivery check failed"
        record.reasons = [summary]
        runs.append_record(ctx.paths, record.finish(started))
        return Release(version, False, expected, f"delivery check {summary}", report)
    config = load_serving_config().release
    if config.staged and config.shadow.enabled and expected is not None:
        promotion.enter_shadow(ctx, version)
        record.outcome = "shadow"
        record.model_gate = f"shadow v{version}: delivered, scored beside the champion"
        record.reasons = [f"delivery check {report.summary()}"]
        runs.append_record(ctx.paths, record.finish(started))
        return Release(
            version,
            False,
            expected,
            f"delivery check {report.summary()}; in shadow beside champion version {expected}",
            report,
            shadow=True,
        )
    result = tracking.promote(
        name,
        version,
        expected_champion=expected,
        decision={"promote": True, "reasons": [f"delivery check {report.summary()}"]},
    )
    record.champion_version = result.champion
    record.outcome = "promoted" if result.promoted else "kept champion"
    record.model_gate = f"released v{version}" if result.promoted else f"not released v{version}"
    record.reasons = [result.reason]
    runs.append_record(ctx.paths, record.finish(started))
    if result.promoted:
        tracking.set_version_tags(name, version, {STAGE_TAG: promotion.PROMOTED})
        ct.notify_serving(ctx, version, promoted=True)
    return Release(version, result.promoted, result.champion, result.reason, report)
