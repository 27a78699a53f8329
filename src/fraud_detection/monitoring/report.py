"""The monitoring report: one self-contained HTML page and its ``summary.json``.

Every plot is a matplotlib PNG inlined as base64 and the styles are inline, so the page
opens from disk, offline, and can be mailed or attached to an MLflow run as one file (no
CDN, no JavaScript). Figures use matplotlib's object API, as in
``training/evaluation.py``: no global pyplot state, headless.

Layout under the state folder::

    reports/monitoring/<YYYYMMDDTHHMMSSZ>/index.html, summary.json
    reports/monitoring/latest.html, latest.json         copies of the newest run's
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud_detection.monitoring.drift import MISSING, DriftResult, FeatureDrift
from fraud_detection.monitoring.performance import PerformanceResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "feature_histogram",
    "latest",
    "performance_plot",
    "render_html",
    "score_histogram",
    "to_png",
    "write_report",
]

REF_COLOR, CUR_COLOR = "#4c72b0", "#dd8452"


def to_png(fig: Figure) -> str:
    """The figure as a base64 PNG, for an ``<img src="data:image/png;base64,...">``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------ figures


def feature_histogram(drift: FeatureDrift, reference: Any, current: Any) -> Figure:
    """Reference and current shares of one feature: bars of categories, or a histogram
    over the central 99 % of both (so that a few huge amounts do not squash the plot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    if drift.kind == "categorical":
        ref = pd.Series(reference).astype("string").fillna(MISSING).value_counts(normalize=True)
        cur = pd.Series(current).astype("string").fillna(MISSING).value_counts(normalize=True)
        names = sorted(set(ref.index) | set(cur.index))
        x = np.arange(len(names))
        ax.bar(x - 0.2, ref.reindex(names, fill_value=0), 0.4, label="reference", color=REF_COLOR)
        ax.bar(x + 0.2, cur.reindex(names, fill_value=0), 0.4, label="current", color=CUR_COLOR)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("share of rows")
    else:
        ref_values = pd.to_numeric(pd.Series(reference), errors="coerce").dropna().to_numpy(float)
        cur_values = pd.to_numeric(pd.Series(current), errors="coerce").dropna().to_numpy(float)
        both = np.concatenate([ref_values, cur_values])
        if len(both):
            low, high = (float(q) for q in np.quantile(both, [0.005, 0.995]))
            if low == high:
                low, high = low - 0.5, high + 0.5
            bins = np.linspace(low, high, 41).tolist()
            for values, name, color in (
                (ref_values, "reference", REF_COLOR),
                (cur_values, "current", CUR_COLOR),
            ):
                clipped = np.clip(values, low, high)
                weights = np.full(len(clipped), 1 / len(clipped)) if len(clipped) else None
                ax.hist(clipped, bins=bins, weights=weights, alpha=0.55, label=name, color=color)
        ax.set_ylabel("share of rows")
    verdict = "DRIFTED" if drift.drifted else drift.level
    ax.set_title(f"{drift.feature}: PSI {drift.psi:.3f}, {verdict}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def score_histogram(
    reference: Any, current: Any, threshold: float | None, drift: FeatureDrift | None
) -> Figure:
    """The score distribution of the champion's holdout against current traffic (log y)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    bins = np.linspace(0, 1, 51).tolist()
    for values, name, color in (
        (reference, "reference (champion's holdout)", REF_COLOR),
        (current, "current traffic", CUR_COLOR),
    ):
        v = np.asarray(values, dtype=float)
        if len(v):
            ax.hist(
                v,
                bins=bins,
                weights=np.full(len(v), 1 / len(v)),
                alpha=0.55,
                label=name,
                color=color,
            )
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    title = "score distribution"
    if drift is not None:
        title += f": PSI {drift.psi:.3f}, KS {drift.statistic:.3f}"
    ax.set(xlabel="P(fraud)", ylabel="share of rows (log)", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def performance_plot(result: PerformanceResult) -> Figure:
    """PR-AUC per served day with the champion's holdout PR-AUC and the degradation limit;
    label coverage as bars on the right axis."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.4))
    ax = fig.subplots()
    days = [d.day for d in result.days]
    x = np.arange(len(days))
    cover = ax.twinx()
    cover.bar(x, [d.coverage for d in result.days], color="#cccccc", alpha=0.5, width=0.6)
    cover.set_ylim(0, 1.05)
    cover.set_ylabel("label coverage (bars)")
    ax.set_zorder(cover.get_zorder() + 1)
    ax.patch.set_visible(False)
    values = [np.nan if d.pr_auc is None else d.pr_auc for d in result.days]
    ax.plot(x, values, marker="o", color=CUR_COLOR, label="PR-AUC (labelled rows)")
    if result.reference_pr_auc is not None:
        ax.axhline(
            result.reference_pr_auc,
            color=REF_COLOR,
            linestyle="--",
            label=f"champion's holdout {result.reference_pr_auc:.3f}",
        )
    if result.limit is not None:
        ax.axhline(result.limit, color="#c44e52", linestyle=":", label=f"limit {result.limit:.3f}")
    ax.set_xticks(x, days, rotation=30, ha="right", fontsize=7)
    ax.set(ylim=(0, 1.02), ylabel="PR-AUC", title="performance on delayed labels")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ page

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Monitoring {{ s.generated_at }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.alert { color: #b00; font-weight: bold; } .warn { color: #b60; } .ok { color: #370; }
.box { background: #f6f6f6; padding: 0.6em 1em; border-radius: 4px; }
img { max-width: 100%; } .grid { display: flex; flex-wrap: wrap; gap: 8px; }
.grid img { width: 48%; min-width: 320px; }
</style></head><body>
<h1>Monitoring report: {{ s.model }} v{{ s.champion_version }}</h1>
<p>Generated {{ s.generated_at }}; clock (now) {{ s.now }}.
Current traffic: {{ s.current.days | join(", ") or "none" }}
({{ "{:,}".format(s.current.rows) }} rows;
{% for k, v in s.current.sources.items() %}{{ k }} {{ "{:,}".format(v) }}
{%- if not loop.last %}, {% endif %}{% endfor %}).
Reference: the champion's {{ s.reference.kind.replace("_", " ") }}
({{ "{:,}".format(s.reference.rows) }} rows, {{ s.reference.window | join(" .. ") }},
from <code>{{ s.reference.training_set }}</code>).</p>

<h2>Verdicts and signals</h2>
<div class="box">
<p><b>Data drift:</b>
{% if s.drift.skipped %}{{ s.drift.skipped }}
{% else %}<span class="{{ 'alert' if s.drift.detected else 'ok' }}">
{{ "detected" if s.drift.detected else "none" }}</span>:
{{ s.drift.drifted | length }} of {{ s.drift.features | length }} features drifted
(share {{ "%.2f" | format(s.drift.share) }}, threshold {{ s.drift.share_threshold }})
{%- if s.drift.drifted %}:
{{ s.drift.drifted | join(", ") }}{% endif %}.{% endif %}</p>
<p><b>Prediction drift:</b>
{% if s.prediction %}<span class="{{ 'alert' if s.prediction.drifted else s.prediction.level }}">
{{ "detected" if s.prediction.drifted else "none" }}</span>:
PSI {{ "%.3f" | format(s.prediction.psi) }}, KS {{ "%.3f" | format(s.prediction.statistic) }}
(p {{ "%.2g" | format(s.prediction.p_value) }})
{%- else %}{{ s.get("prediction_note") or "not measured" }}{% endif %}</p>
<p><b>Performance:</b> <span class="{{ 'alert' if s.performance.degraded else 'ok' }}">
{{ "degraded" if s.performance.degraded else "ok" }}</span>: {{ s.performance.verdict }}</p>
<p><b>Signals:</b>
{% if not s.signals %}none{% endif %}</p>
<ul>{% for sig in s.signals %}<li>{{ sig.kind }}: {{ sig.status }}{% if sig.path %}
(<code>{{ sig.path }}</code>){% endif %} &mdash; {{ sig.detail }}</li>{% endfor %}</ul>
<p>Emitted signals start continuous training through their Prefect events (the
<code>ct-on-signal</code> deployment's triggers), or <code>fraud ct signals</code>
without a server.</p>
</div>

<h2>Features</h2>
{% if s.drift.skipped %}<p>{{ s.drift.skipped }}</p>{% else %}
<table><tr><th>feature</th><th>kind</th><th>PSI</th><th>test</th><th>statistic</th>
<th>p-value</th><th>missing ref.</th><th>missing cur.</th><th>verdict</th></tr>
{% for f in s.drift.features %}<tr><td>{{ f.feature }}</td><td>{{ f.kind }}</td>
<td>{{ "%.3f" | format(f.psi) }}</td><td>{{ "KS D" if f.test == "ks" else "Cramér's V" }}</td>
<td>{{ "%.3f" | format(f.statistic) }}</td><td>{{ "%.2g" | format(f.p_value) }}</td>
<td>{{ "%.1f%%" | format(100 * f.reference_missing) }}</td>
<td>{{ "%.1f%%" | format(100 * f.current_missing) }}</td>
<td class="{{ f.level }}">{{ "DRIFTED" if f.drifted else f.level }}</td></tr>
{% endfor %}</table>
<p>Drifted: PSI &ge; {{ s.thresholds.psi_alert }}, or p-value &lt; {{ s.thresholds.p_value }}
with KS D &ge; {{ s.thresholds.ks_statistic_min }} (numeric) or Cramér's V &ge;
{{ s.thresholds.cramers_v_min }} (categorical). Warn: PSI &ge; {{ s.thresholds.psi_warn }}.</p>
{% for note in s.drift.notes %}<p>{{ note }}</p>{% endfor %}{% endif %}
{% if figures.get("features") %}<h3>Most drifted features: reference against current</h3>
<div class="grid">{% for png in figures.features %}<img src="data:image/png;base64,{{ png }}">
{% endfor %}</div>{% endif %}

<h2>Predictions</h2>
{% if figures.get("scores") %}<img src="data:image/png;base64,{{ figures.scores }}">{% endif %}
<p>Alert rate: reference {{ "%.2f%%" | format(100 * s.alert_rate.reference) }},
current {{ "%.2f%%" | format(100 * s.alert_rate.current) }}.</p>

<h2>Performance on delayed labels</h2>
{% if figures.get("performance") %}
<img src="data:image/png;base64,{{ figures.performance }}">{% endif %}
<table><tr><th>day</th><th>scored</th><th>labelled</th><th>coverage</th><th>frauds</th>
<th>alerts</th><th>PR-AUC</th><th>precision</th><th>recall</th></tr>
{% for d in s.performance.days %}<tr><td>{{ d.day }}</td><td>{{ "{:,}".format(d.scored) }}</td>
<td>{{ "{:,}".format(d.labelled) }}</td><td>{{ "%.0f%%" | format(100 * d.coverage) }}</td>
<td>{{ d.positives }}</td><td>{{ d.alerts }}</td>
<td>{{ "%.3f" | format(d.pr_auc) if d.pr_auc is not none else "-" }}</td>
<td>{{ "%.2f" | format(d.precision) if d.precision is not none else "-" }}</td>
<td>{{ "%.2f" | format(d.recall) if d.recall is not none else "-" }}</td></tr>
{% endfor %}</table>
<p>Labels (chargebacks) arrive days after a transaction; only those arrived by
{{ s.now }} count. Alerts: all scored rows; precision and recall: labelled rows.</p>
</body></html>
"""


def render_html(summary: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    """The page for ``summary`` (the ``summary.json`` content) and base64 ``figures``
    (``features``: a list, ``scores`` and ``performance``: one each, any may be absent)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(s=summary, figures=figures)


def _json(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def write_report(
    folder: Path,
    summary: Mapping[str, Any],
    figures: Mapping[str, Any],
) -> Path:
    """Write ``index.html`` and ``summary.json`` into ``folder``, then refresh the
    ``latest.html`` / ``latest.json`` copies beside it. Returns the page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "index.html"
    text = json.dumps(summary, indent=2, default=_json, allow_nan=False) + "\n"
    (folder / "summary.json").write_text(text)
    page.write_text(render_html(json.loads(text), figures))
    for source, name in ((page, "latest.html"), (folder / "summary.json", "latest.json")):
        tmp = folder.parent / f".{name}.tmp"
        shutil.copyfile(source, tmp)
        tmp.replace(folder.parent / name)
    return page


def latest(reports: Path) -> dict[str, Any] | None:
    """The newest run's summary (``latest.json``), or None before the first run."""
    path = reports / "latest.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def top_features(result: DriftResult, n: int) -> Sequence[FeatureDrift]:
    """The ``n`` features to plot: drifted first, then by PSI (the result's order)."""
    return result.features[:n]
