"""Reading the evidence the audit log and the health report are built from (the I/O).

- the CT run ledger ``<state>/ct/runs.jsonl``, as plain dicts (lines of any kind: CT runs,
  rollbacks; a torn or hand-edited line is skipped);
- the gate records ``<state>/validation/raw/*.json`` and ``validation/training/*.json``;
- the registry's model versions with their tags and their runs' tags (MLflow, through
  the profile's tracking URI; a local state folder without a registry yet is skipped,
  not created);
- the prediction log's head columns, ``<state>/serving/predictions/date=*/part-*.parquet``,
  and the error log of requests answered 5xx, ``<state>/serving/errors/``;
- the last CI results: a JSON file in the shape of GitHub's "list workflow runs" answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud_detection.config import Profile

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("logged_at", "latency_ms", "source", "status")


def ledger(state: Path) -> list[dict[str, Any]]:
    """Every whole record of ``<state>/ct/runs.jsonl``, in order (any kind of record)."""
    from fraud_detection.config import StatePaths
    from fraud_detection.registry.runs import read_all

    return read_all(StatePaths(root=state))


def gate_records(state: Path, gate: str) -> list[dict[str, Any]]:
    """The records of the ``raw`` or ``training`` gate, each with ``_file`` (where it is)."""
    folder = state / "validation" / gate
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s is not a readable gate record: skipped", path)
            continue
        if isinstance(record, dict):
            record["_file"] = str(path.relative_to(state))
            found.append(record)
    return found


def registry_versions(profile: Profile) -> tuple[list[dict[str, Any]], str | None]:
    """Every version of the profile's model: version, run id, creation time, aliases, tags
    and its run's tags; and None, or why the registry was not read."""
    uri = profile.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return [], "no registry in this state folder yet"
    from fraud_detection.registry import tracking

    tracking.setup_mlflow(profile)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    # tracking.py has no "list the versions" helper yet; this read-only search is the
    # one MLflow call made outside it (to move there once that module is free).
    client = MlflowClient()
    name = profile.mlflow.model_name
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        return [], f"registry not readable: {exc.message.splitlines()[0]}"
    versions = []
    for number in sorted({int(mv.version) for mv in found}):
        info = tracking.version_info(name, str(number))  # tags and aliases, read one by one
        run_tags: dict[str, str] = {}
        if info["run_id"]:
            try:
                run_tags = tracking.run_tags(str(info["run_id"]))
            except MlflowException:
                run_tags = {}
        versions.append({**info, "run_tags": run_tags})
    return sorted(versions, key=lambda v: int(v["version"])), None


def prediction_log(state: Path) -> pd.DataFrame:
    """How serving went: the prediction log's head columns (``status`` only if the log
    has it), and the error log's requests answered 5xx (``<state>/serving/errors/``, as
    API rows with their ``status``); an empty frame when nothing was served."""
    import pandas as pd
    import pyarrow.dataset as ds

    frames = []
    for folder, source in (("predictions", None), ("errors", "api")):
        files = sorted((state / "serving" / folder).glob("date=*/part-*.parquet"))
        if not files:
            continue
        # Part files written before a column existed lack it: one file at a time.
        for file in files:
            dataset = ds.dataset(str(file), format="parquet")
            columns = [c for c in PREDICTION_COLUMNS if c in dataset.schema.names]
            frame = dataset.to_table(columns=columns).to_pandas()
            if source is not None:
                frame["source"] = source
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["logged_at", "latency_ms", "source"])
    combined: pd.DataFrame = pd.concat(frames, ignore_index=True)
    return combined


def ci_results(path: Path | None) -> tuple[list[dict[str, Any]], str | None]:
    """The latest run of each workflow in ``path``, a JSON file in the shape of GitHub's
    ``GET /repos/{owner}/{repo}/actions/runs`` answer (``{"workflow_runs": [...]}``, or
    the list itself); and None, or why there are none."""
    if path is None:
        return [], "no CI results given (--ci-results FILE)"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [], f"CI results {path} not readable: {exc}"
    runs = data.get("workflow_runs", []) if isinstance(data, Mapping) else data
    latest: dict[str, dict[str, Any]] = {}
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, Mapping):
            continue
        name = str(run.get("name") or run.get("path") or "?")
        stamp = str(run.get("updated_at") or run.get("created_at") or "")
        if name not in latest or stamp > str(latest[name].get("at") or ""):
            latest[name] = {
                "workflow": name,
                "conclusion": run.get("conclusion") or run.get("status") or "?",
                "at": stamp or None,
                "branch": run.get("head_branch"),
                "commit": (run.get("head_sha") or "")[:12] or None,
                "url": run.get("html_url"),
            }
    if not latest:
        return [], f"no workflow run in {path}"
    return sorted(latest.values(), key=lambda r: r["workflow"]), None
