"""A bad dependency resolution must fail here, not during a demo."""

import importlib

import pytest


@pytest.mark.unit
def test_prefect_server_api_imports() -> None:
    # prefect 3.8's server breaks on fastapi >= 0.155 ("Body() got an unexpected
    # keyword argument 'min_items'"); importing the API module is what fails.
    server = importlib.import_module("prefect.server.api.server")
    assert hasattr(server, "create_app")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("module", "major"),
    [("great_expectations", 1), ("prefect", 3), ("mlflow", 3), ("feast", 0)],
)
def test_core_stack_major_versions(module: str, major: int) -> None:
    # The code uses GX 1.x, Prefect 3 and MLflow 3 APIs; a resolver falling back to an
    # older major release would break them in confusing ways.
    version = importlib.import_module(module).__version__
    assert int(version.split(".")[0]) == major, f"{module} {version}"
