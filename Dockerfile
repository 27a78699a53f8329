# The prediction service (`fraud serve`: FastAPI on port 8000) as a container image.
# Build: `make image` (needs a Docker daemon; cd.yml builds it on GitHub's runners).
# Run:   docker run -p 8000:8000 -v fraud-state:/var/lib/fraud-detection fraud-detection-serving:dev
# The state volume holds what serving reads: the MLflow registry (the champion model),
# the Feast online store and state/serving/champion.json. Lint: `make lint-docker`.

# ---- build: the locked runtime environment, made with uv from uv.lock -------------------
FROM python:3.11.13-slim-bookworm AS build

# uv from PyPI, pinned: the same resolver that wrote uv.lock.
RUN pip install --no-cache-dir uv==0.13.9

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. --frozen: exactly uv.lock,
# never re-resolved. --no-default-groups: without the dev and test groups (pyproject's
# default-groups would otherwise pull pytest, schemathesis and the linters in; --no-dev
# alone leaves the test group).
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project

# Then the package itself, installed as a wheel (not editable: src/ is not copied over).
COPY src/ src/
RUN uv sync --frozen --no-default-groups --no-editable

# ---- runtime: the environment, the configs and the Feast repo; no build tools --------
FROM python:3.11.13-slim-bookworm

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FRAUD_PROFILE__STATE_DIR=/var/lib/fraud-detection \
    FEAST_USAGE=False \
    GX_ANALYTICS_ENABLED=False

# A non-root user owns only the state folder; the code is read-only for it.
RUN groupadd --system --gid 10001 fraud \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/fraud fraud \
    && mkdir -p /var/lib/fraud-detection \
    && chown fraud:fraud /var/lib/fraud-detection

WORKDIR /app
COPY --from=build /app/.venv /app/.venv
# `fraud` finds the project (configs/, pyproject.toml) from its working directory.
COPY pyproject.toml ./
COPY configs/ configs/
COPY feature_repo/ feature_repo/

USER 10001:10001
VOLUME ["/var/lib/fraud-detection"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]

CMD ["fraud", "serve", "--host", "0.0.0.0", "--port", "8000"]
