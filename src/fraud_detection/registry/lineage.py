"""Lineage: what a model version records about where it came from.

Pure helpers (plus ``git`` and file hashing), no MLflow import: the code version
(:func:`git_commit`), the data version as DVC would record it (:func:`dvc_hash`), the
configuration (:func:`config_hash`), and :func:`lineage_tags`, which turns them into the
tags written on every registered model version. The tag names are stable: dashboards,
audits and the promotion rule (``lineage_complete``) rely on them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Stable tag names, in the order they are written.
GIT_COMMIT_TAG = "lineage.git_commit"
DATA_HASH_TAG = "lineage.data_dvc_md5"
FEATURE_SERVICE_TAG = "lineage.feature_service"
VALIDATION_IDS_TAG = "lineage.gx_validation_ids"
CONFIG_HASH_TAG = "lineage.config_hash"
TRAINING_WINDOW_TAG = "lineage.training_window"
LINEAGE_TAGS: tuple[str, ...] = (
    GIT_COMMIT_TAG,
    DATA_HASH_TAG,
    FEATURE_SERVICE_TAG,
    VALIDATION_IDS_TAG,
    CONFIG_HASH_TAG,
    TRAINING_WINDOW_TAG,
)

UNKNOWN_COMMIT = "unknown"
_GIT_TIMEOUT_S = 10


def _git(repo_dir: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    # --no-optional-locks: `status` must not take index.lock while another git runs.
    git = shutil.which("git")
    if git is None:
        return None
    try:
        return subprocess.run(  # noqa: S603  (git by its path, our own arguments, no shell)
            [git, "--no-optional-locks", "-C", str(repo_dir), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_commit(repo_dir: Path | str = ".") -> str:
    """The commit checked out in ``repo_dir``, ``<sha>-dirty`` if tracked files changed.

    ``"unknown"`` outside a git work tree, without commits, or without ``git``. Untracked
    files do not make the tree dirty (the state folder is git-ignored anyway); when the
    status cannot be read the tree counts as dirty, since it cannot be shown clean.
    """
    head = _git(Path(repo_dir), "rev-parse", "--verify", "--quiet", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return UNKNOWN_COMMIT
    sha = head.stdout.strip()
    status = _git(Path(repo_dir), "status", "--porcelain", "--untracked-files=no")
    if status is None or status.returncode != 0 or status.stdout.strip():
        return f"{sha}-dirty"
    return sha


def dvc_hash(path: Path | str) -> str:
    """The md5 ``dvc add`` records in the ``.dvc`` file for ``path`` (a file or a folder).

    A file's hash is the md5 of its bytes; a folder's is the md5 of DVC's sorted JSON
    listing of relative paths and file md5s, suffixed ``.dir``. Computed with DVC's own
    ``dvc_data`` builder in dry-run mode, so nothing is copied into any cache. Unlike
    ``dvc add`` inside a repository, ``.dvcignore`` rules are not applied.
    """
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    target = Path(path).resolve()
    if not target.exists():
        raise FileNotFoundError(f"cannot hash {target}: no such file or folder")
    fs = LocalFileSystem()
    # build() wants an object database; with dry_run it only stages tree objects in memory.
    with tempfile.TemporaryDirectory(prefix="dvc-hash-") as odb_dir:
        _, _, obj = build(HashFileDB(fs, odb_dir), str(target), fs, "md5", dry_run=True)
    return str(obj.hash_info.value)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):  # a pydantic model (configs are frozen pydantic models)
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"config_hash cannot serialize {type(obj).__name__}: {obj!r}")


def config_hash(*objs: Any) -> str:
    """First 16 hex digits of the sha256 of a canonical JSON dump of ``objs``.

    Pydantic models are dumped in JSON mode, dict keys are sorted, so equal settings give
    equal hashes whatever the key order or whether they come as a model or a dict.
    """
    canonical = json.dumps(
        list(objs), default=_jsonable, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def lineage_tags(
    *,
    git_commit: str,
    data_hash: str,
    feature_service: str,
    validation_ids: Sequence[str],
    config_hash: str,
    training_window: tuple[str, str],
) -> dict[str, str]:
    """The lineage tags of a model version, keyed by the stable names in :data:`LINEAGE_TAGS`.

    Validation ids are joined with commas; the training window is an ISO-8601 interval
    ``start/end``.
    """
    start, end = training_window
    return {
        GIT_COMMIT_TAG: git_commit,
        DATA_HASH_TAG: data_hash,
        FEATURE_SERVICE_TAG: feature_service,
        VALIDATION_IDS_TAG: ",".join(validation_ids),
        CONFIG_HASH_TAG: config_hash,
        TRAINING_WINDOW_TAG: f"{start}/{end}",
    }


def missing_lineage(tags: Mapping[str, str]) -> list[str]:
    """The lineage tag names absent or empty in ``tags`` (empty list: the lineage is whole)."""
    return [name for name in LINEAGE_TAGS if not str(tags.get(name, "")).strip()]
