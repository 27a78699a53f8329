"""``fraud serve``: run the prediction API (uvicorn, one process)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: configs/serving.yaml).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default 8000, configs/serving.yaml).")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Serve from this state folder instead of the profile's.")
    ] = None,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (costs latency; off by default).")
    ] = False,
    insecure_no_key: Annotated[
        bool,
        typer.Option(
            "--insecure-no-key",
            help="Serve beyond loopback (e.g. 0.0.0.0) without an API key, with a warning. "
            "Without it, such a bind needs FRAUD_API_KEY.",
        ),
    ] = False,
) -> None:
    """Serve the champion model: POST /predict on Feast online features, hot reload.

    Bound beyond loopback the API key is required (FRAUD_API_KEY), whatever the profile
    says; without one it refuses to start, unless --insecure-no-key.
    """
    import logging

    from fraud_detection.config import Secrets, load_profile, state_paths
    from fraud_detection.serving.exposure import UnsafeBindError, decide_exposure
    from fraud_detection.serving.settings import load_serving_config

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    config = load_serving_config(overrides=overrides)
    profile = load_profile()
    if state_dir is not None:
        profile = profile.model_copy(update={"state_dir": state_dir.resolve()})
    paths = state_paths(profile)

    secret = Secrets().api_key
    exposure = decide_exposure(
        config.host,
        key_set=secret is not None and bool(secret.get_secret_value().strip()),
        insecure_no_key=insecure_no_key,
    )
    if exposure.refusal:
        raise UnsafeBindError(exposure.refusal)
    if exposure.require_key and not profile.serving.api_key_required:
        serving = profile.serving.model_copy(update={"api_key_required": True})
        profile = profile.model_copy(update={"serving": serving})

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("mlflow", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if exposure.warning and not profile.serving.api_key_required:
        logging.getLogger(__name__).warning(exposure.warning)

    import uvicorn

    from fraud_detection.serving.app import create_app, predictions_folder

    app = create_app(config=config, profile=profile)
    base = f"http://{config.host}:{config.port}"
    typer.echo(f"serving {profile.mlflow.model_name}@champion from {paths.root}")
    typer.echo(f"  API docs:        {base}/docs")
    typer.echo(f"  predict:         POST {base}/predict")
    typer.echo(f"  ready:           {base}/ready")
    typer.echo(f"  prediction log:  {predictions_folder(paths)}/date=*/part-*.parquet")
    if profile.serving.api_key_required:
        typer.echo("  API key:         required (X-API-Key header, from FRAUD_API_KEY)")
    typer.echo("  stop with Ctrl+C (the prediction log is flushed on the way out)")
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        workers=1,
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
