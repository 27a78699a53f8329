"""Configuration: a bad key or value is an error naming the key and the file."""

from pathlib import Path

import pytest

from fraud_detection.config import (
    ConfigError,
    SimulateConfig,
    load_profile,
    load_simulate_config,
    load_yaml_model,
)

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "simulate.yaml"
    path.write_text(text)
    return path


def test_committed_configs_load() -> None:
    cfg = load_simulate_config()
    assert cfg.days > 0
    assert cfg.rows_per_day > 0
    for name in ("local", "production"):
        assert load_profile(name).name == name


def test_misspelt_key_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 1\nrows_per_dya: 10\n")
    with pytest.raises(ConfigError) as err:
        load_yaml_model(SimulateConfig, path)
    assert str(path) in str(err.value)
    assert "rows_per_dya" in str(err.value)


def test_wrong_type_names_nested_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "scenario:\n  drift:\n    start_day: soon\n")
    with pytest.raises(ConfigError, match=r"scenario\.drift\.start_day"):
        load_yaml_model(SimulateConfig, path)


def test_negative_size_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "rows_per_day: -5\n")
    with pytest.raises(ConfigError, match="rows_per_day"):
        load_yaml_model(SimulateConfig, path)


def test_drift_day_outside_range_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "days: 3\nscenario:\n  drift:\n    enabled: true\n    start_day: 5\n")
    with pytest.raises(ConfigError, match="outside the 3 simulated days"):
        load_yaml_model(SimulateConfig, path)


def test_config_is_frozen() -> None:
    cfg = load_simulate_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.days = 3  # type: ignore[misc]


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "rows_per_day: 100\n")
    monkeypatch.setenv("FRAUD_SIMULATE__ROWS_PER_DAY", "250")
    monkeypatch.setenv("FRAUD_SIMULATE__SCENARIO__DRIFT__KIND", "spending")
    cfg = load_yaml_model(SimulateConfig, path)
    assert cfg.rows_per_day == 250
    assert cfg.scenario.drift.kind == "spending"


def test_flags_override_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "rows_per_day: 100\n")
    monkeypatch.setenv("FRAUD_SIMULATE__ROWS_PER_DAY", "250")
    cfg = load_yaml_model(SimulateConfig, path, {"rows_per_day": 7})
    assert cfg.rows_per_day == 7


def test_bad_environment_value_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "rows_per_day: 100\n")
    monkeypatch.setenv("FRAUD_SIMULATE__DAYS", "many")
    with pytest.raises(ConfigError, match="days"):
        load_yaml_model(SimulateConfig, path)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_model(SimulateConfig, path)


def test_profile_state_dir_is_absolute_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_profile("local").state_dir.is_absolute()
    monkeypatch.setenv("FRAUD_PROFILE__STATE_DIR", "/tmp/elsewhere")
    profile = load_profile("local")
    assert profile.state_dir == Path("/tmp/elsewhere")
    assert profile.mlflow_tracking_uri == "sqlite:////tmp/elsewhere/mlflow/mlflow.db"


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: local, production"):
        load_profile("staging")


def test_a_misspelt_environment_key_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pydantic-settings would drop a variable whose first key is no field: say so instead
    monkeypatch.setenv("FRAUD_PROFILE__MLFOW__TRACKING_URI", "http://mlflow:5000")
    with pytest.raises(
        ConfigError,
        match=r"FRAUD_PROFILE__MLFOW__TRACKING_URI \(did you mean "
        r"FRAUD_PROFILE__MLFLOW__TRACKING_URI\?\): no such setting",
    ):
        load_profile()


def test_a_misspelt_nested_environment_key_is_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAUD_SIMULATE__SCENARIO__DRIFT__STARTDAY", "3")
    with pytest.raises(
        ConfigError, match=r"did you mean FRAUD_SIMULATE__SCENARIO__DRIFT__START_DAY"
    ):
        load_simulate_config()


def test_other_variables_in_dotenv_do_not_break_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A .env also holds the profile's selector, secrets and the compose file's passwords
    (tmp_path / ".env").write_text(
        # pragma: allowlist nextline secret
        "FRAUD_PROFILE=local\nFRAUD_API_KEY=secret\nPOSTGRES_PASSWORD=pw\n"
        "FRAUD_PROFILE__STATE_DIR=/tmp/from-dotenv\n"  # pragma: allowlist secret
    )
    monkeypatch.setenv("FRAUD_PROJECT_DIR", str(Path.cwd()))
    monkeypatch.chdir(tmp_path)
    profile = load_profile()
    assert profile.state_dir == Path("/tmp/from-dotenv")
