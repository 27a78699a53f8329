"""The audit log: every promotion, rollback, gate decision and deployment, as events.

Pure: the events are built from plain data that :mod:`.evidence` reads (the CT run
ledger's JSON lines, the data gates' JSON records, the registry's model versions with
their tags), so the log is a view of that evidence and never a truth of its own. Each
event says what happened, when, who or what did it, why, and from which MLflow run and
which commit.

Where the evidence is silent the event says so ("not recorded") instead of guessing:

- a gate decision made inside a CT run is attributed to that run (its trigger and the
  commit it ran); one made outside any recorded run (``fraud validate raw`` by hand) is
  not attributed;
- a raw partition's record holds its latest verdict only (validating a day again
  replaces it), so the log shows that verdict;
- no deployment record is kept by ``prefect deploy``; a deployment shows where it took
  effect: the first CT run on a new commit (the ledger's ``code_version``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

KINDS: tuple[str, ...] = ("promotion", "rollback", "gate", "deployment")
NOT_RECORDED = "not recorded"
# Version tags written by ``fraud model rollback`` (read when present).
ROLLED_BACK_FROM = "rolled_back_from"
ROLLBACK_REASON = "rollback_reason"
ROLLED_BACK_AT = "rolled_back_at"
ROLLED_BACK_BY = "rolled_back_by"  # user@host
_WHY_SHOWN = 3  # failed expectations shown per gate decision (the record has them all)


@dataclass(frozen=True)
class AuditEvent:
    """One thing that changed (or was refused) on the way to production."""

    kind: str  # one of KINDS
    at: dt.datetime | None  # UTC; None when the evidence has no time
    what: str  # "v3 became champion (was v2)", "partition 2026-01-14 rejected", ...
    who: str  # "CT run (schedule), pid 42 on host-a", "data gate (CT run ...)", ...
    why: str
    run: str | None = None  # the MLflow run id
    commit: str | None = None  # the git commit the code ran at
    outcome: str = ""  # promoted | rolled back | accepted | rejected | deployed
    gate: str | None = None  # data | training | model (gate events)
    source: str = ""  # where the evidence is

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = None if self.at is None else self.at.isoformat()
        return data


# ------------------------------------------------------------------ helpers


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO-8601 time as an aware UTC datetime (naive ones are taken as UTC)."""
    if not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


def _short(commit: str | None) -> str | None:
    if not commit or commit == "unknown":
        return commit or None
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:12] + ("-dirty" if dirty else "")


def _ct_runs(ledger: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ledger's CT runs (not the records other commands append, e.g. rollbacks)."""
    return [r for r in ledger if r.get("kind", "ct_run") in ("ct_run", "ct", None)]


def _run_end(record: Mapping[str, Any]) -> dt.datetime | None:
    start = parse_time(record.get("started_at"))
    if start is None:
        return None
    return start + dt.timedelta(seconds=float(record.get("seconds") or 0.0))


def _ct_actor(record: Mapping[str, Any]) -> str:
    """``CT run (schedule, 2026-01-09 03:00)``: its trigger and when it started (UTC)."""
    start = parse_time(record.get("started_at"))
    when = f"{start:%Y-%m-%d %H:%M}" if start else "?"
    if record.get("trigger") == "release":  # fraud model release / shadow-check / approve
        return f"release step (fraud model, {when})"
    return f"CT run ({record.get('trigger') or '?'}, {when})"


def _run_at(
    ledger: Sequence[Mapping[str, Any]], when: dt.datetime | None
) -> Mapping[str, Any] | None:
    """The CT run that was under way at ``when`` (a second of slack each side)."""
    if when is None:
        return None
    slack = dt.timedelta(seconds=1)
    for record in _ct_runs(ledger):
        start, end = parse_time(record.get("started_at")), _run_end(record)
        if start is not None and end is not None and start - slack <= when <= end + slack:
            return record
    return None


def _failure_line(failure: Mapping[str, Any]) -> str:
    subject = failure.get("column") or failure.get("expectation") or "table"
    return f"{subject}: {failure.get('expected', '?')} — {failure.get('problem', '?')}"


def _gate_why(record: Mapping[str, Any]) -> str:
    failures = record.get("failures") or []
    if not failures:
        return f"{record.get('evaluated', '?')} expectations passed"
    lines = [_failure_line(f) for f in failures[:_WHY_SHOWN]]
    more = len(failures) - len(lines)
    return "; ".join(lines) + (f" (+{more} more)" if more > 0 else "")


def _process(tags: Mapping[str, str]) -> str | None:
    """``pid 42 on host-a`` from a ``promoted_by`` tag (JSON), else None."""
    try:
        who = json.loads(tags.get("promoted_by") or "{}")
    except ValueError:
        return None
    if not isinstance(who, dict) or not who.get("host"):
        return None
    return f"pid {who.get('pid', '?')} on {who['host']}"


# ------------------------------------------------------------------ the events


def gate_events(
    raw_records: Iterable[Mapping[str, Any]],
    training_records: Iterable[Mapping[str, Any]],
    ledger: Sequence[Mapping[str, Any]],
) -> list[AuditEvent]:
    """The data gate's verdict per partition and the training-set gate's per set."""
    events = []
    for gate, records in (("data", raw_records), ("training", training_records)):
        for record in records:
            at = parse_time(record.get("validated_at"))
            run = _run_at(ledger, at)
            outcome = "accepted" if record.get("success") is True else "rejected"
            name = (
                f"partition {record.get('partition', '?')}"
                if gate == "data"
                else f"training set {record.get('training_set', '?')}"
            )
            suite = record.get("suite") or "?"
            who = f"{gate} gate ({suite}) " + (
                f"in {_ct_actor(run)}" if run else f"outside any CT run ({NOT_RECORDED} who)"
            )
            events.append(
                AuditEvent(
                    kind="gate",
                    gate=gate,
                    at=at,
                    what=f"{name} {outcome}",
                    who=who,
                    why=_gate_why(record),
                    commit=_short(run.get("code_version")) if run else None,
                    outcome=outcome,
                    source=str(record.get("_file") or f"validation/{gate}"),
                )
            )
    return events


def model_gate_events(
    ledger: Sequence[Mapping[str, Any]], versions: Sequence[Mapping[str, Any]]
) -> list[AuditEvent]:
    """The model gate's decision on each challenger a CT run registered; decisions on
    versions no ledger line names (registered by hand) come from the version's tags."""
    by_version = {str(v["version"]): v for v in versions}
    events = []
    judged = set()
    for record in _ct_runs(ledger):
        version = record.get("challenger_version")
        gate = str(record.get("model_gate") or "")
        if version is None or gate.startswith("skipped"):
            continue
        version = str(version)
        judged.add(version)
        mv = by_version.get(version, {})
        tags = mv.get("tags") or {}
        # A staged release leaves an approved version the challenger (outcome
        # `challenger`): approved by the gate, awaiting delivery and shadow, not rejected.
        staged = record.get("outcome") == "challenger" or gate.startswith("challenger")
        promoted = record.get("outcome") == "promoted" or staged
        why = "; ".join(record.get("reasons") or []) or _promotion_why(tags, record)
        events.append(
            AuditEvent(
                kind="gate",
                gate="model",
                at=_run_end(record),
                what=f"challenger v{version} {'approved' if promoted else 'rejected'}"
                + (f" ({_release_stage(tags)})" if staged else ""),
                who=f"model gate in {_ct_actor(record)}",
                why=why,
                run=mv.get("run_id"),
                commit=_short(record.get("code_version") or tags.get("lineage.git_commit")),
                outcome="accepted" if promoted else "rejected",
                source="ct/runs.jsonl",
            )
        )
    for version, mv in by_version.items():
        tags = mv.get("tags") or {}
        if version in judged or "gate.promote" not in tags:
            continue
        approved = tags["gate.promote"] == "true"
        events.append(
            AuditEvent(
                kind="gate",
                gate="model",
                at=parse_time(mv.get("created_at")),
                what=f"challenger v{version} {'approved' if approved else 'rejected'}",
                who=f"model gate, outside any CT run ({NOT_RECORDED} who)",
                why=tags.get("gate.reasons") or "-",
                run=mv.get("run_id"),
                commit=_short(tags.get("lineage.git_commit")),
                outcome="accepted" if approved else "rejected",
                source="registry (version tags)",
            )
        )
    return events


def _release_stage(tags: Mapping[str, str]) -> str:
    """Where a staged challenger is in its release, from its ``release.stage`` tag."""
    stage = tags.get("release.stage")
    return {
        None: "awaiting delivery: fraud model release",
        "shadow": "in shadow beside the champion",
        "awaiting_approval": "passed its shadow window, awaiting approval",
        "promoted": "released",
        "blocked": "release blocked: " + (tags.get("release.blocked") or NOT_RECORDED),
    }.get(stage, f"release stage {stage}")


def _promotion_why(tags: Mapping[str, str], record: Mapping[str, Any] | None) -> str:
    """The gate's reasons, else how many of its checks passed (version tags), else what
    the CT run recorded."""
    if tags.get("gate.reasons"):
        return tags["gate.reasons"]
    checks = [v for k, v in tags.items() if k.startswith("gate.check.")]
    if checks:
        passed = checks.count("pass")
        return f"model gate approved: {passed} of {len(checks)} checks passed"
    if record is not None:
        return "; ".join(record.get("reasons") or []) or f"model gate: {record.get('model_gate')}"
    return NOT_RECORDED


def promotion_events(
    ledger: Sequence[Mapping[str, Any]], versions: Sequence[Mapping[str, Any]]
) -> list[AuditEvent]:
    """Each champion move by promotion: from the registry (``promoted_at``,
    ``promoted_by``, ``superseded_by``) joined with the CT run that promoted it; from the
    ledger alone when the registry could not be read."""
    promoted_runs = {
        str(r.get("champion_version")): r
        for r in _ct_runs(ledger)
        if r.get("outcome") == "promoted"
    }
    # The champion each version replaced: a version superseded by a rollback (tagged
    # rolled_back_to) was not replaced by a promotion.
    previous = {
        str(tags["superseded_by"]): str(v["version"])
        for v in versions
        if (tags := v.get("tags") or {}).get("superseded_by")
        and tags.get("rolled_back_to") != tags["superseded_by"]
    }
    events = []
    seen = set()
    for mv in versions:
        tags = mv.get("tags") or {}
        if not tags.get("promoted_at"):
            continue
        version = str(mv["version"])
        seen.add(version)
        record = promoted_runs.get(version)
        run_tags = mv.get("run_tags") or {}
        process = _process(tags)
        if record is not None:
            who = _ct_actor(record) + (f", {process}" if process else "")
        else:
            trigger = run_tags.get("trigger")
            who = (f"trained by a CT run ({trigger}); " if trigger else "") + (
                f"promoted by {process}" if process else f"promoter {NOT_RECORDED}"
            )
        was = previous.get(version)
        events.append(
            AuditEvent(
                kind="promotion",
                at=parse_time(tags["promoted_at"]),
                what=f"v{version} became champion (was {'v' + was if was else 'none'})",
                who=who,
                why=_promotion_why(tags, record),
                run=mv.get("run_id"),
                commit=_short((record or {}).get("code_version") or tags.get("lineage.git_commit")),
                outcome="promoted",
                source="registry (version tags) + ct/runs.jsonl",
            )
        )
    for version, record in promoted_runs.items():
        if version in seen or versions:  # the registry was read: it is the reference
            continue
        events.append(
            AuditEvent(
                kind="promotion",
                at=_run_end(record),
                what=f"v{version} became champion",
                who=_ct_actor(record),
                why="; ".join(record.get("reasons") or []) or str(record.get("model_gate")),
                commit=_short(record.get("code_version")),
                outcome="promoted",
                source="ct/runs.jsonl (registry not read)",
            )
        )
    return events


def rollback_events(
    ledger: Sequence[Mapping[str, Any]], versions: Sequence[Mapping[str, Any]]
) -> list[AuditEvent]:
    """Rollbacks: the ledger's records of kind ``rollback`` (``fraud model rollback``),
    and version tags ``rolled_back_from``/``rollback_reason`` no such record covers."""
    run_of = {str(v["version"]): v.get("run_id") for v in versions}
    events = []
    covered = set()
    for record in ledger:
        if record.get("kind") != "rollback" and record.get("outcome") != "rolled back":
            continue
        to = record.get("champion_version") or record.get("to_version")
        frm = record.get("rolled_back_from") or record.get("from_version")
        covered.add(str(to))
        who = record.get("actor") or record.get("by") or record.get("user")
        events.append(
            AuditEvent(
                kind="rollback",
                at=parse_time(record.get("at") or record.get("started_at")),
                what=f"v{to} champion again (rolled back from v{frm or '?'})",
                who=str(who) if who else f"`fraud model rollback` ({NOT_RECORDED} who)",
                why=record.get("reason") or "; ".join(record.get("reasons") or []) or NOT_RECORDED,
                run=record.get("run_id") or run_of.get(str(to)),
                commit=_short(record.get("code_version")),
                outcome="rolled back",
                source="ct/runs.jsonl",
            )
        )
    for mv in versions:
        tags = mv.get("tags") or {}
        version = str(mv["version"])
        if not tags.get(ROLLED_BACK_FROM) or version in covered:
            continue
        events.append(
            AuditEvent(
                kind="rollback",
                at=parse_time(tags.get(ROLLED_BACK_AT) or tags.get("promoted_at")),
                what=f"v{version} champion again (rolled back from v{tags[ROLLED_BACK_FROM]})",
                who=tags.get(ROLLED_BACK_BY) or NOT_RECORDED,
                why=tags.get(ROLLBACK_REASON) or NOT_RECORDED,
                run=mv.get("run_id"),
                commit=_short(tags.get("lineage.git_commit")),
                outcome="rolled back",
                source="registry (version tags)",
            )
        )
    return events


def deployment_events(ledger: Sequence[Mapping[str, Any]]) -> list[AuditEvent]:
    """Where a deployment took effect: the first CT run on each new commit."""
    events = []
    last = None
    for record in sorted(
        _ct_runs(ledger),
        key=lambda r: parse_time(r.get("started_at")) or dt.datetime.min.replace(tzinfo=dt.UTC),
    ):
        commit = record.get("code_version")
        if not commit or commit == "unknown" or commit == last:
            continue
        events.append(
            AuditEvent(
                kind="deployment",
                at=parse_time(record.get("started_at")),
                what=f"CT runs commit {_short(commit)}"
                + (f" (was {_short(last)})" if last else ""),
                who=f"{_ct_actor(record)}; deployer {NOT_RECORDED}",
                why="new code: prefect deploy of a pinned commit, or a run from a checkout",
                commit=_short(commit),
                outcome="deployed",
                source="ct/runs.jsonl (code_version)",
            )
        )
        last = commit
    return events


def build(
    *,
    ledger: Sequence[Mapping[str, Any]],
    raw_records: Iterable[Mapping[str, Any]] = (),
    training_records: Iterable[Mapping[str, Any]] = (),
    versions: Sequence[Mapping[str, Any]] = (),
) -> list[AuditEvent]:
    """Every event the evidence shows, newest first (events without a time last)."""
    events = [
        *gate_events(raw_records, training_records, ledger),
        *model_gate_events(ledger, versions),
        *promotion_events(ledger, versions),
        *rollback_events(ledger, versions),
        *deployment_events(ledger),
    ]
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(events, key=lambda e: (e.at is not None, e.at or oldest), reverse=True)


def select(
    events: Iterable[AuditEvent], *, since: dt.date | None = None, kind: str | None = None
) -> list[AuditEvent]:
    """The events of ``kind`` (any if None) at or after midnight UTC of ``since``."""
    start = None if since is None else dt.datetime.combine(since, dt.time(), dt.UTC)
    return [
        e
        for e in events
        if (kind is None or e.kind == kind)
        and (start is None or (e.at is not None and e.at >= start))
    ]


def summary(events: Sequence[AuditEvent]) -> str:
    """``9 events: 2 promotions, 0 rollbacks, 6 gate decisions (1 rejected), 1 deployment``."""
    counts = Counter(e.kind for e in events)
    rejected = sum(e.kind == "gate" and e.outcome == "rejected" for e in events)

    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return (
        f"{n(len(events), 'event')}: {n(counts['promotion'], 'promotion')}, "
        f"{n(counts['rollback'], 'rollback')}, {n(counts['gate'], 'gate decision')} "
        f"({rejected} rejected), {n(counts['deployment'], 'deployment')}"
    )


def _cut(text: str, width: int) -> str:
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(events: Sequence[AuditEvent], *, width: int = 48) -> str:
    """The events as a text table: when, kind, what, who, why, run, commit."""
    header = ["when (UTC)", "kind", "what", "who", "why", "run", "commit"]
    rows = [
        [
            e.at.strftime("%Y-%m-%d %H:%M:%S") if e.at else "?",
            e.kind if e.gate is None else f"{e.gate} gate",
            _cut(e.what, width),
            _cut(e.who, width),
            _cut(e.why, width),
            (e.run or "-")[:8],
            e.commit or "-",
        ]
        for e in events
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [
            fmt.format(*header),
            fmt.format(*("-" * w for w in widths)),
            *(fmt.format(*r) for r in rows),
        ]
    ).rstrip()
