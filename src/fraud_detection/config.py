"""Configuration: one YAML per job in ``configs/``, a profile in ``configs/profiles/``.

Each file loads into a frozen pydantic model with ``extra="forbid"``, so a misspelt key
or a wrong type is a :class:`ConfigError` naming the key and the file. Environment
variables override YAML values (pydantic-settings): ``FRAUD_<JOB>__<KEY>[__<SUBKEY>]``
for a job config, ``FRAUD_PROFILE__<KEY>`` for the profile, ``FRAUD_PROFILE`` to pick the
profile. Nothing here runs at import: files are read when a loader is called.
"""

from __future__ import annotations

import datetime as dt
import os
import typing
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from fraud_detection.errors import EXIT_CONFIG, EXIT_USAGE, FraudError, PathError

ENV_PREFIX = "FRAUD_"

# FRAUD_* variables that are not FRAUD_<JOB>__<KEY> overrides of a config file, and what
# each is for. Any other FRAUD_* variable that names no config key is refused
# (:func:`check_environment`): pydantic-settings would ignore it silently.
OTHER_VARIABLES = {
    "FRAUD_PROFILE": "which configs/profiles/<name>.yaml to use",
    "FRAUD_API_KEY": "the prediction API's key (a secret, never in YAML)",
    "FRAUD_PROJECT_DIR": "the repository root, when not found from the working directory",
    "FRAUD_DEBUG": "1: the CLI prints the traceback of an error",
    "FRAUD_STATE_DIR": "the level-0 notebook's state folder",
    "FRAUD_FEATURE_TABLES": "where feature_repo/definitions.py points Feast's sources",
    "FRAUD_DEPLOY_PORT": "the port of make deploy's Prefect server",
    "FRAUD_DEPLOY_REPOSITORY": "the git repository deployed runs clone (make deploy-prefect)",
    "FRAUD_DEPLOY_REF": "the commit, tag or branch deployed runs clone, pinned to its sha",
    "FRAUD_DEPLOY_GIT_TOKEN_BLOCK": "the Prefect Secret block with a token to clone with",
    "FRAUD_DEPLOY_COMMIT": "set by deploy.py for prefect.yaml's build steps: the pinned sha",
    "FRAUD_DEPLOY_ACCESS_TOKEN": "set by deploy.py for prefect.yaml's build steps",
    "FRAUD_REQUIRE_SERVICES": "1: tests marked `services` fail instead of skipping",
}


class ConfigError(FraudError):
    """A configuration file is missing or invalid; the message says which key and file."""

    exit_code = EXIT_CONFIG


class FlagError(ConfigError):
    """A command-line flag's value that the config's rules refuse: a usage error."""

    exit_code = EXIT_USAGE


def _from_flags(overrides: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``loc`` (a validation error's location) came from a flag."""
    node: Any = overrides
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class _Section(BaseModel):
    """A nested block of a config file: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# The YAML being loaded, handed to the settings source below (set only inside a loader).
_YAML_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("_YAML_VALUES", default=None)


class _YamlValues(PydanticBaseSettingsSource):
    """The settings source for the file being loaded: the lowest precedence."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_YAML_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_VALUES.get() or {})


class _FileSettings(BaseSettings):
    """A config file's model.

    Precedence, highest first: explicit arguments (command-line flags), environment
    variables, ``.env``, the YAML file.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_nested_delimiter="__",
        case_sensitive=False,
        env_file=".env",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _KnownKeysDotEnv(settings_cls),
            _YamlValues(settings_cls),
        )


class _KnownKeysDotEnv(DotEnvSettingsSource):
    """``.env`` values for this model's own keys only. A ``.env`` also holds other
    variables (``FRAUD_PROFILE``, ``FRAUD_API_KEY``, the compose file's passwords), which
    are not this model's and must not make it fail; a misspelt key of this model is caught
    by :func:`_misspelt_variables`."""

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {k: v for k, v in super().__call__().items() if k in fields}


def _variables() -> dict[str, str | None]:
    """The environment and, below it, ``.env`` in the working directory (both of which
    pydantic-settings reads)."""
    names: dict[str, str | None] = {}
    env_file = Path(".env")
    if env_file.is_file():
        from dotenv import dotenv_values

        try:
            names.update(dotenv_values(env_file))
        except UnicodeDecodeError as exc:
            raise ConfigError(f".env: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    names.update(os.environ)
    return names


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``Section`` or ``Section | None``), else None (a value)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _setting_names(model: type[BaseModel], prefix: str) -> list[str]:
    """Every variable name that sets a key (or a whole section, as JSON) of ``model``."""
    names = []
    for name, field in model.model_fields.items():
        full = f"{prefix}{name.upper()}"
        names.append(full)
        if nested := _nested_model(field.annotation):
            names.extend(_setting_names(nested, full + "__"))
    return names


def _prefix(model: type[BaseModel]) -> str:
    return str(model.model_config.get("env_prefix") or "").upper()


def unknown_variables(
    models: typing.Iterable[type[BaseModel]], names: typing.Iterable[str]
) -> list[tuple[str, str | None]]:
    """Each of ``names`` that starts with ``FRAUD_`` but sets no key of ``models`` and is
    none of :data:`OTHER_VARIABLES`, with the closest valid name (or None)."""
    import difflib

    valid = set(OTHER_VARIABLES)
    for model in models:
        valid.update(_setting_names(model, _prefix(model)))
    unknown = sorted(
        name for name in names if name.upper().startswith(ENV_PREFIX) and name.upper() not in valid
    )
    return [
        (name, next(iter(difflib.get_close_matches(name.upper(), valid, n=1, cutoff=0.6)), None))
        for name in unknown
    ]


def _unknown_message(unknown: list[tuple[str, str | None]], where: str) -> str:
    shown = "; ".join(
        f"{name} (did you mean {closest}?)" if closest else name for name, closest in unknown
    )
    return f"{shown}: no such setting {where}; fix the name or unset the variable"


def check_environment(models: typing.Iterable[type[BaseModel]]) -> None:
    """Refuse ``FRAUD_*`` variables (environment or ``.env``) that set nothing.

    ``models`` are every config file's model; a variable must name one of their keys
    (``FRAUD_<JOB>__<KEY>[__<SUBKEY>]``) or be one of :data:`OTHER_VARIABLES`.
    """
    unknown = unknown_variables(models, _variables())
    if unknown:
        raise ConfigError(_unknown_message(unknown, "in any config file or profile"))


def _misspelt_variables(model: type[BaseModel]) -> list[tuple[str, str | None]]:
    """Environment (and ``.env``) variables with ``model``'s prefix that name none of its
    keys, at any depth: pydantic-settings would ignore them silently."""
    prefix = _prefix(model)
    if not prefix:
        return []
    mine = [name for name in _variables() if name.upper().startswith(prefix)]
    return unknown_variables([model], mine)


# --------------------------------------------------------------------------- jobs


# Schema-level corruptions (the partition breaks the raw contract) ...
SCHEMA_CORRUPTIONS = (
    "nulls",
    "wrong_types",
    "negative_amounts",
    "duplicate_ids",
    "missing_column",
    "renamed_column",
    "future_timestamps",
)
# ... and value-level ones (the contract holds; the values are wrong): the value-skew stage.
VALUE_CORRUPTIONS = (
    "amount_in_cents",
    "amount_sentinel",
    "stuck_card",
    "zeroed_coordinates",
    "flipped_longitude",
    "timezone_shift",
    "channel_missing",
    "category_default",
    "unknown_cards",
    "unknown_merchants",
    "replayed_day",
    "default_ip_location",
)
CORRUPTIONS = SCHEMA_CORRUPTIONS + VALUE_CORRUPTIONS
Corruption = Literal[
    "nulls",
    "wrong_types",
    "negative_amounts",
    "duplicate_ids",
    "missing_column",
    "renamed_column",
    "future_timestamps",
    "amount_in_cents",
    "amount_sentinel",
    "stuck_card",
    "zeroed_coordinates",
    "flipped_longitude",
    "timezone_shift",
    "channel_missing",
    "category_default",
    "unknown_cards",
    "unknown_merchants",
    "replayed_day",
    "default_ip_location",
]
if set(typing.get_args(Corruption)) != set(CORRUPTIONS):
    raise RuntimeError("Corruption must list CORRUPTIONS")


class DriftScenario(_Section):
    """From ``start_day`` on, a new fraud pattern and/or a shift in spending."""

    enabled: bool = False
    start_day: int = Field(10, ge=0)
    kind: Literal["fraud_pattern", "spending", "both"] = "both"


class BrokenFeedScenario(_Section):
    """One corrupted partition, on day ``day``, with the chosen corruption."""

    enabled: bool = False
    day: int = Field(12, ge=0)
    corruption: Corruption = "nulls"


class Scenario(_Section):
    drift: DriftScenario = DriftScenario()
    broken_feed: BrokenFeedScenario = BrokenFeedScenario()


class SimulateConfig(_FileSettings):
    """``configs/simulate.yaml``: the seeded transaction simulator."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "SIMULATE__")

    seed: int = 42
    start_date: dt.date = dt.date(2026, 1, 1)
    days: int = Field(14, gt=0, le=3650)
    rows_per_day: int = Field(10_000, gt=0)
    cards: int = Field(5_000, gt=0)
    merchants: int = Field(500, gt=0)
    label_delay_days: int = Field(7, ge=0)
    scenario: Scenario = Scenario()

    @model_validator(mode="after")
    def _days_in_range(self) -> SimulateConfig:
        drift, broken = self.scenario.drift, self.scenario.broken_feed
        if drift.enabled and drift.start_day >= self.days:
            raise ValueError(
                f"scenario.drift.start_day={drift.start_day} is outside the {self.days} "
                f"simulated days (0..{self.days - 1})"
            )
        if broken.enabled and broken.day >= self.days:
            raise ValueError(
                f"scenario.broken_feed.day={broken.day} is outside the {self.days} "
                f"simulated days (0..{self.days - 1})"
            )
        if broken.enabled and broken.corruption == "replayed_day" and broken.day == 0:
            raise ValueError(
                "scenario.broken_feed.corruption=replayed_day replays the day before: "
                "scenario.broken_feed.day must be 1 or later"
            )
        return self


# ------------------------------------------------------------------------ profile


class MlflowSettings(_Section):
    # Empty means "derive from state_dir": sqlite:///<state_dir>/mlflow/mlflow.db.
    tracking_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = "fraud-detection"
    model_name: str = "fraud-detector"  # the registered model; aliases champion, challenger
    # Empty: promotions lock a file in the state folder (one host). A postgresql:// URL:
    # a PostgreSQL advisory lock there, which every host sharing the registry takes.
    promotion_lock_url: str | None = None


class ServingSettings(_Section):
    api_key_required: bool = False
    # What a challenger that passed its shadow window needs to become champion: nothing
    # more (auto), or `fraud model approve` by a person (manual: the production profile).
    release_approval: Literal["auto", "manual"] = "auto"


class FeastSettings(_Section):
    """Which online store Feast serves from (SQLite under the state folder, or Redis) and
    where its registry lives (a file under the state folder, or a SQL database)."""

    online_store: Literal["sqlite", "redis"] = "sqlite"
    # Feast's Redis connection string: host:port[,db=N][,password=...][,ssl=true]. Put a
    # password in the environment (FRAUD_PROFILE__FEAST__REDIS_CONNECTION_STRING), not here.
    redis_connection_string: str = "127.0.0.1:6379"
    # Empty: the registry is a file under the state folder. Else a SQLAlchemy URL for
    # Feast's SQL registry, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/feast.
    registry_url: str | None = None
    # Empty: feature_repo/feature_store.yaml's project. Another name keeps a second set of
    # definitions and online rows apart in a shared registry and Redis (the demo's).
    project: str | None = None


class PrefectSettings(_Section):
    """The Prefect server flows report to. Empty ``api_url``: each command starts a
    temporary local server (the local profile); ``PREFECT_API_URL`` in the environment
    wins over both."""

    api_url: str | None = None
    # The database of the server `make prod-up` starts (SQLAlchemy URL, asyncpg driver).
    database_url: str | None = None


class MlflowServerSettings(_Section):
    """The tracking server `make prod-up` starts (clients use ``mlflow.tracking_uri``)."""

    backend_store_uri: str | None = None  # e.g. postgresql+psycopg://postgres@host/mlflow
    artifacts_destination: str | None = None  # where the server keeps proxied artifacts


def _none_if_empty(value: Any) -> Any:
    """An empty string (an environment variable set to nothing) means "not set"."""
    return None if isinstance(value, str) and not value.strip() else value


class DaskSettings(_Section):
    """Where partition-parallel work runs (validating, featurizing and scoring many
    partitions). Empty ``scheduler_address``: a local cluster of ``workers`` processes
    started for the job; else the Dask scheduler at that address (tcp://host:8786)."""

    scheduler_address: str | None = None
    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    # Fewer partitions than this run in the calling process (a cluster costs seconds).
    min_partitions: int = Field(4, ge=1)

    _empty_address = field_validator("scheduler_address", mode="before")(_none_if_empty)


class PostgresSettings(_Section):
    """The PostgreSQL server holding the stack's databases (production profile):
    ``admin_url`` is used to create the ``databases`` when they are missing."""

    admin_url: str | None = None  # e.g. postgresql://postgres@127.0.0.1:5432/postgres
    databases: tuple[str, ...] = ()


class Profile(_FileSettings):
    """``configs/profiles/<name>.yaml``: where state lives and which services to use."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "PROFILE__")

    name: str = "local"
    state_dir: Path = Path("state")
    mlflow: MlflowSettings = MlflowSettings()
    serving: ServingSettings = ServingSettings()
    feast: FeastSettings = FeastSettings()
    prefect: PrefectSettings = PrefectSettings()
    mlflow_server: MlflowServerSettings = MlflowServerSettings()
    dask: DaskSettings = DaskSettings()
    postgres: PostgresSettings = PostgresSettings()

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        return self.mlflow.artifact_root or str(self.state_dir / "mlflow" / "artifacts")


class Secrets(BaseSettings):
    """Secrets come only from the environment (or a git-ignored ``.env``), never YAML."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    api_key: SecretStr | None = None


# ------------------------------------------------------------------------ loaders

_M = TypeVar("_M", bound=BaseModel)


def project_dir() -> Path:
    """The repository root: ``$FRAUD_PROJECT_DIR``, else the nearest parent with ``configs/``."""
    if env := os.environ.get(ENV_PREFIX + "PROJECT_DIR"):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "configs").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    return here


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (misspelt?)"
    if err["type"] == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{key}: {err['msg']}{shown}"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_yaml_model(model: type[_M], path: Path, overrides: dict[str, Any] | None = None) -> _M:
    """Read ``path`` into ``model``; any problem is a one-line :class:`ConfigError`.

    ``overrides`` (nested dicts, e.g. from command-line flags) win over everything else.
    """
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{_shown(path)}: not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{_shown(path)}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())  # the parser's message spans several lines
        raise ConfigError(
            f"{_shown(path)}: not valid YAML ({type(exc).__name__}: {detail})"
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    misspelt = _misspelt_variables(model)
    if misspelt:
        raise ConfigError(_unknown_message(misspelt, f"in {_shown(path)}"))
    token = _YAML_VALUES.set(raw)
    try:
        return model(**(overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())  # type: ignore[arg-type]
        where = f"{_shown(path)} with the given flags" if overrides else _shown(path)
        if overrides and all(_from_flags(overrides, tuple(e["loc"])) for e in exc.errors()):
            raise FlagError(f"{where}: {problems}") from exc
        raise ConfigError(f"{where}: {problems}") from exc
    finally:
        _YAML_VALUES.reset(token)


def config_path(job: str, root: Path | None = None) -> Path:
    return (root or project_dir()) / "configs" / f"{job}.yaml"


def load_simulate_config(
    path: Path | None = None, overrides: dict[str, Any] | None = None
) -> SimulateConfig:
    """Load ``configs/simulate.yaml`` (or ``path``) with environment and flag overrides."""
    return load_yaml_model(SimulateConfig, path or config_path("simulate"), overrides)


def load_profile(name: str | None = None, root: Path | None = None) -> Profile:
    """Load the active profile (``$FRAUD_PROFILE``, default ``local``).

    A relative ``state_dir`` is resolved against the project directory, so commands
    behave the same from any working directory inside the repository.
    """
    root = root or project_dir()
    name = name or os.environ.get(ENV_PREFIX + "PROFILE", "local")
    path = root / "configs" / "profiles" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"profile {name!r} not found: no {path} (known: {', '.join(known)})")
    profile = load_yaml_model(Profile, path)
    state_dir = profile.state_dir if profile.state_dir.is_absolute() else root / profile.state_dir
    if state_dir.exists() and not state_dir.is_dir():
        raise PathError(
            f"the profile's state folder {state_dir} is a file: point state_dir "
            f"(FRAUD_PROFILE__STATE_DIR) at a folder"
        )
    return profile.model_copy(update={"name": name, "state_dir": state_dir})


def removable_state_dir(path: Path, root: Path | None = None) -> Path:
    """``path`` if deleting it as a state folder (``fraud clean``) can only remove state.

    Refused (:class:`PathError`): the file system's root, the home folder, the project
    folder or any folder above it, and a folder holding a ``.git`` or a
    ``pyproject.toml`` (a repository, not a state folder): a state_dir set by mistake
    must not delete anything else.
    """
    path = path.expanduser().resolve()
    project = (root or project_dir()).resolve()
    why = None
    if path == Path(path.anchor) or path == Path.home().resolve():
        why = "it is the file system's root or the home folder"
    elif path == project or path in project.parents:
        why = f"it holds the project {project}"
    elif (path / ".git").exists() or (path / "pyproject.toml").exists():
        why = "it holds a repository (.git or pyproject.toml)"
    if why:
        raise PathError(
            f"not deleting {path} as a state folder: {why}; point state_dir "
            "(FRAUD_PROFILE__STATE_DIR) at the folder the project's state is in"
        )
    return path


def check_state_dir(path: Path, flag: str = "--state-dir") -> Path:
    """``path`` resolved, if it can be a state folder: a folder this process may write,
    or one it may create (its nearest existing parent is such a folder). Else a
    :class:`PathError` naming the path and the fix. Leaves nothing behind."""
    import tempfile

    path = path.expanduser().resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is inside the file {existing}"
        raise PathError(f"{flag} {path} {what}: give a folder")
    try:  # permission bits do not tell (root, read-only mounts): try it
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise PathError(
            f"{flag} {path} {what} ({exc.strerror}): fix the permissions or give another folder"
        ) from exc
    return path


class StatePaths(BaseModel):
    """Where each kind of local state lives, all under the profile's ``state_dir``."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @property
    def raw(self) -> Path:
        """Daily transaction partitions: ``raw/date=YYYY-MM-DD/transactions.parquet``."""
        return self.root / "data" / "raw"

    @property
    def labels(self) -> Path:
        """Delayed labels by arrival day: ``labels/arrival_date=YYYY-MM-DD/labels.parquet``."""
        return self.root / "data" / "labels"

    @property
    def reference(self) -> Path:
        """Dimension tables: ``cards.parquet`` and ``merchants.parquet``."""
        return self.root / "data" / "reference"

    @property
    def level0(self) -> Path:
        """What the level-0 notebook hands over: a model file and a metrics JSON."""
        return self.root / "level0"

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def state_paths(profile: Profile | None = None) -> StatePaths:
    return StatePaths(root=(profile or load_profile()).state_dir)
