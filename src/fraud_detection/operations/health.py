"""The pipeline health report: is the release machinery healthy? (pure: figures, pages)

From the evidence :mod:`.evidence` reads: CT success rate and time since the last good
CT run (the ledger), gate rejections by reason (the gate records, the ledger, the model
versions' ``gate.check.*`` tags), the champion's age (its ``promoted_at`` tag), serving
latency p50/p99 and error rate over the last days (the prediction log), and the last CI
results (GitHub's workflow runs, when given). Rendered as a self-contained HTML page and
as Markdown for a GitHub Actions job summary.

Definitions (also printed on the page):

- a CT run **finished** unless its outcome is ``failed`` (an exception or a rejected
  training set stopped it); success rate = finished / CT runs;
- a CT run is **good** when it finished and no gate said no (no rejected partition, no
  rejected challenger): what ``fraud ct run --fail-on-gate`` turns green;
- the serving error rate is the share of API transactions answered 5xx: the prediction
  log's rows (``status`` 200) and the error log's (``<state>/serving/errors/``, written by
  the service for every 5xx answer). A log from before the ``status`` column records
  answered requests only: with no status anywhere the rate is shown as not measured.
  Latency percentiles are of the answered requests.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from fraud_detection.operations.audit import parse_time

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Health:
    """The report's figures (None: not measurable from the evidence, ``notes`` say why)."""

    generated_at: str
    ct_runs: int
    ct_finished: int
    ct_good: int
    ct_success_rate: float | None
    last_run_at: str | None
    last_good_at: str | None
    hours_since_last_good: float | None
    rejections: list[tuple[str, str, int]]  # (gate, reason, count), most frequent first
    champion_version: str | None
    champion_promoted_at: str | None
    champion_age_days: float | None
    serving_window_days: int
    serving_requests: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    error_rate: float | None
    ci: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ct_runs(ledger: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in ledger if r.get("kind", "ct_run") in ("ct_run", "ct", None)]


def finished(record: Mapping[str, Any]) -> bool:
    return record.get("outcome") != "failed"


def good(record: Mapping[str, Any]) -> bool:
    """Finished, and no gate said no (the rule of ``registry.runs.failed_gates``)."""
    return (
        finished(record)
        and "REJECTED" not in str(record.get("data_gate") or "")
        and not str(record.get("training_gate") or "").startswith("REJECTED")
        and not str(record.get("model_gate") or "").startswith("rejected")
    )


def _reason_key(text: str) -> str:
    """A reason without its figures, so that the same rule groups together."""
    return re.sub(r"\d[\d.,:eE+-]*", "N", text.split(" — ")[0]).strip()


def rejections(
    raw_records: Sequence[Mapping[str, Any]],
    training_records: Sequence[Mapping[str, Any]],
    ledger: Sequence[Mapping[str, Any]],
    versions: Sequence[Mapping[str, Any]],
) -> list[tuple[str, str, int]]:
    """Rejections per (gate, reason): a failed expectation (column and kind) for the data
    gates, a failed check for the model gate; a rejection with two reasons counts twice."""
    counts: Counter[tuple[str, str]] = Counter()
    for gate, records in (("data", raw_records), ("training", training_records)):
        for record in records:
            if record.get("success") is True:
                continue
            failures = record.get("failures") or [{}]
            for key in dict.fromkeys(
                f"{f.get('column') or 'table'}: {f.get('expectation') or 'rejected'}"
                for f in failures
            ):
                counts[(gate, key)] += 1
    tags = {str(v["version"]): v.get("tags") or {} for v in versions}
    for record in _ct_runs(ledger):
        if not str(record.get("model_gate") or "").startswith("rejected"):
            continue
        failed = sorted(
            k.removeprefix("gate.check.")
            for k, v in tags.get(str(record.get("challenger_version")), {}).items()
            if k.startswith("gate.check.") and v == "fail"
        )
        for key in failed or [_reason_key(r) for r in record.get("reasons") or ["rejected"]]:
            counts[("model", key)] += 1
    return [(g, r, n) for (g, r), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _percentile(values: Any, q: float) -> float | None:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return None if arr.size == 0 else float(np.percentile(arr, q))


def measure(
    *,
    ledger: Sequence[Mapping[str, Any]],
    raw_records: Sequence[Mapping[str, Any]] = (),
    training_records: Sequence[Mapping[str, Any]] = (),
    versions: Sequence[Mapping[str, Any]] = (),
    predictions: pd.DataFrame | None = None,
    ci: Sequence[Mapping[str, Any]] = (),
    now: dt.datetime | None = None,
    window_days: int = 7,
    notes: Sequence[str] = (),
) -> Health:
    """The figures of the report, as of ``now`` (UTC; default: the wall clock)."""
    now = now or dt.datetime.now(dt.UTC)
    said = list(notes)
    runs = _ct_runs(ledger)
    done = [r for r in runs if finished(r)]
    goods = [r for r in runs if good(r)]
    last_good = parse_time(goods[-1].get("started_at")) if goods else None
    if not runs:
        said.append("no CT run in the ledger yet")

    champion = next((v for v in versions if "champion" in (v.get("aliases") or [])), None)
    # Champion since its promotion, or since a rollback made it champion again.
    tags = (champion or {}).get("tags") or {}
    since = [parse_time(tags.get(key)) for key in ("promoted_at", "rolled_back_at")]
    promoted_at = max((s for s in since if s is not None), default=None)
    if champion is None:
        said.append("no champion in the registry")

    requests, p50, p99, error_rate = 0, None, None, None
    if predictions is not None and len(predictions):
        frame = predictions
        if "logged_at" in frame:
            import pandas as pd

            stamps = pd.to_datetime(frame["logged_at"], utc=True)
            frame = frame[stamps >= now - dt.timedelta(days=window_days)]
        if "source" in frame:
            frame = frame[frame["source"] == "api"]  # batch scores have no latency
        requests = len(frame)
        if requests:
            answered = frame
            if "status" in frame:
                # A row without a status: a log from before the column, answered requests.
                status = frame["status"].astype(float).fillna(200.0)
                error_rate = float((status >= 500).mean())
                answered = frame[status < 500]
            p50 = _percentile(answered["latency_ms"], 50)
            p99 = _percentile(answered["latency_ms"], 99)
    if requests == 0:
        said.append(f"no API request in the prediction log over the last {window_days} days")
    elif error_rate is None:
        said.append(
            "serving error rate not measured: the prediction log has no status column "
            "(it records answered requests only)"
        )

    return Health(
        generated_at=now.isoformat(timespec="seconds"),
        ct_runs=len(runs),
        ct_finished=len(done),
        ct_good=len(goods),
        ct_success_rate=len(done) / len(runs) if runs else None,
        last_run_at=runs[-1].get("started_at") if runs else None,
        last_good_at=None if last_good is None else last_good.isoformat(timespec="seconds"),
        hours_since_last_good=None
        if last_good is None
        else round((now - last_good).total_seconds() / 3600, 1),
        rejections=rejections(raw_records, training_records, ledger, versions),
        champion_version=None if champion is None else str(champion["version"]),
        champion_promoted_at=None
        if promoted_at is None
        else promoted_at.isoformat(timespec="seconds"),
        champion_age_days=None
        if promoted_at is None
        else round((now - promoted_at).total_seconds() / 86400, 1),
        serving_window_days=window_days,
        serving_requests=requests,
        latency_p50_ms=None if p50 is None else round(p50, 2),
        latency_p99_ms=None if p99 is None else round(p99, 2),
        error_rate=error_rate,
        ci=[dict(r) for r in ci],
        notes=said,
    )


# ------------------------------------------------------------------ rendering


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:g}{unit}"


def headline(h: Health) -> list[tuple[str, str]]:
    """The figures as (label, value) rows, the same on both pages."""
    return [
        (
            "CT success rate",
            f"{_pct(h.ct_success_rate)} ({h.ct_finished} of {h.ct_runs} runs finished)",
        ),
        ("CT runs with every gate passed", f"{h.ct_good} of {h.ct_runs}"),
        (
            "time since the last good CT run",
            "never"
            if h.hours_since_last_good is None
            else f"{h.hours_since_last_good:g} h (at {h.last_good_at})",
        ),
        ("last CT run", h.last_run_at or "none"),
        (
            "champion",
            "none"
            if h.champion_version is None
            else f"v{h.champion_version}, {_num(h.champion_age_days, ' days')} old "
            f"(promoted {h.champion_promoted_at or 'at an unrecorded time'})",
        ),
        (
            f"serving requests (last {h.serving_window_days} days)",
            f"{h.serving_requests:,}",
        ),
        ("serving latency p50", _num(h.latency_p50_ms, " ms")),
        ("serving latency p99", _num(h.latency_p99_ms, " ms")),
        ("serving error rate", _pct(h.error_rate)),
    ]


def markdown(h: Health) -> str:
    """The report as Markdown (a GitHub Actions job summary)."""
    lines = [f"### Pipeline health ({h.generated_at})", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in headline(h)]
    lines += ["", "#### Gate rejections by reason", ""]
    if h.rejections:
        lines += ["| gate | reason | rejections |", "|---|---|---|"]
        lines += [f"| {g} | {r} | {n} |" for g, r, n in h.rejections]
    else:
        lines.append("none")
    lines += ["", "#### Last CI results", ""]
    if h.ci:
        lines += ["| workflow | result | at | commit |", "|---|---|---|---|"]
        lines += [
            f"| {r['workflow']} | {r['conclusion']} | {r.get('at') or '-'} | "
            f"{r.get('commit') or '-'} |"
            for r in h.ci
        ]
    else:
        lines.append("not available")
    if h.notes:
        lines += ["", *(f"- {note}" for note in h.notes)]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:60rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f3f3f3}.ok{color:#1a7f37}.bad{color:#cf222e}
.note{color:#555}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(h: Health) -> str:
    """The report as one self-contained HTML page (inline CSS, nothing fetched)."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Pipeline health</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Pipeline health</h1><p class='note'>generated {html.escape(h.generated_at)}</p>",
        _table(["figure", "value"], headline(h)),
        "<h2>Gate rejections by reason</h2>",
        _table(["gate", "reason", "rejections"], h.rejections) if h.rejections else "<p>none</p>",
        "<h2>Last CI results</h2>",
        _table(
            ["workflow", "result", "at", "commit"],
            [
                [r["workflow"], r["conclusion"], r.get("at") or "-", r.get("commit") or "-"]
                for r in h.ci
            ],
        )
        if h.ci
        else "<p>not available</p>",
    ]
    if h.notes:
        parts.append(
            "<h2>Notes</h2><ul>"
            + "".join(f"<li class='note'>{html.escape(n)}</li>" for n in h.notes)
            + "</ul>"
        )
    parts.append(
        "<p class='note'>Success rate: CT runs that finished (outcome not failed) over all CT "
        "runs. Good: finished with every gate passed. Read from the CT ledger, the gate "
        "records, the registry and the prediction log; see docs/level2.md.</p></body></html>"
    )
    return "\n".join(parts) + "\n"
