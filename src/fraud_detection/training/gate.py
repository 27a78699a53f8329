"""Model validation: may the challenger replace the champion? A pure decision.

The challenger is promoted only when every check passes:

* **infrastructure**: the saved model loads and scores, a single row as in a batch (the
  caller's verdict: ``registry.tracking.infra_check`` on the model *as reloaded from the
  registry*, the way serving loads it);
* **floor**: its primary metric reaches ``gate.floor`` whatever the champion;
* with a champion, **same holdout**: both evaluations are of the same rows. The caller
  scores the champion on the challenger's holdout (the newest days), so that the two
  numbers are comparable at all;
* **overall**: challenger >= champion - ``gate.tolerance``;
* **slices**: on every slice supported in both evaluations, challenger >= champion -
  ``gate.slice_tolerance`` (a better average must not hide a worse segment).

Without a champion (the first model) the floor and the infrastructure decide. The
decision lists every check with its numbers and a reason for each failure, and
:meth:`GateDecision.to_dict` is the JSON artifact the run keeps as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fraud_detection.training.evaluation import Evaluation
from fraud_detection.training.settings import GateSettings

__all__ = ["GateDecision", "decide"]


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, why not (``reasons``: every failed check, with its numbers),
    and every check made (``checks``: name, challenger, champion, threshold, passed)."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.promote:
            return f"promote: all {len(self.checks)} checks passed"
        return "do not promote: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "summary": self.summary,
            "reasons": list(self.reasons),
            "checks": [dict(c) for c in self.checks],
        }


class _Checks:
    """Collects checks and the reasons of the failed ones."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.reasons: list[str] = []

    def add(
        self,
        name: str,
        passed: bool,
        reason: str,
        challenger: float | str | None = None,
        champion: float | str | None = None,
        threshold: float | None = None,
    ) -> None:
        self.checks.append(
            {
                "name": name,
                "challenger": challenger,
                "champion": champion,
                "threshold": threshold,
                "passed": bool(passed),
            }
        )
        if not passed:
            self.reasons.append(reason)


def _not_worse(
    checks: _Checks,
    name: str,
    what: str,
    challenger: float,
    champion: float,
    tolerance: float,
) -> None:
    bound = champion - tolerance
    gap = champion - challenger
    checks.add(
        name,
        challenger >= bound,
        f"{what} {challenger:.3f} is {gap:.3f} below the champion's {champion:.3f} "
        f"(tolerance {tolerance:.3f})",
        challenger,
        champion,
        bound,
    )


def decide(
    challenger: Evaluation,
    champion: Evaluation | None,
    cfg: GateSettings,
    infra_ok: bool,
    infra_detail: str,
) -> GateDecision:
    """The promotion decision for ``challenger`` (see the module docstring for the rules).

    ``champion`` must have been evaluated on the challenger's holdout; if it was not (row
    count or row fingerprint differ) the challenger is not promoted.
    """
    metric = cfg.primary_metric
    checks = _Checks()
    checks.add(
        "infrastructure",
        infra_ok,
        f"infrastructure check failed: {infra_detail}",
        challenger=infra_detail,
    )
    value = float(getattr(challenger, metric))
    checks.add(
        f"{metric}_floor",
        value >= cfg.floor,
        f"{metric} {value:.3f} is below the floor {cfg.floor:.3f}",
        challenger=value,
        threshold=cfg.floor,
    )
    if champion is not None:
        same = challenger.n == champion.n and challenger.holdout_digest == champion.holdout_digest
        checks.add(
            "same_holdout",
            same,
            (
                f"the champion was evaluated on a different holdout ({champion.n:,} rows, "
                f"fingerprint {champion.holdout_digest}) than the challenger "
                f"({challenger.n:,} rows, fingerprint {challenger.holdout_digest}): "
                "score the champion on the challenger's holdout"
            ),
            challenger=challenger.n,
            champion=champion.n,
        )
        # Metrics of different rows are not comparable: without the same holdout the
        # comparisons are not made (and the challenger is already rejected).
        if same:
            _not_worse(
                checks,
                f"{metric}_vs_champion",
                metric,
                value,
                float(getattr(champion, metric)),
                cfg.tolerance,
            )
            for mine in challenger.slices:
                theirs = champion.slice(mine.column, mine.value)
                if not (mine.supported and theirs is not None and theirs.supported):
                    continue
                ours, reference = getattr(mine, metric), getattr(theirs, metric)
                if ours is None or reference is None:
                    continue
                _not_worse(
                    checks,
                    f"slice {mine.key} {metric}",
                    f"slice {mine.key}: {metric}",
                    float(ours),
                    float(reference),
                    cfg.slice_tolerance,
                )
    return GateDecision(promote=not checks.reasons, reasons=checks.reasons, checks=checks.checks)
