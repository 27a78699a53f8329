# The prediction service (`fraud serve`: FastAPI on port 8000) as a container image.
# Build: `make image` (needs a Docker daemon; cd.yml builds it on GitHub's runners).
# Run:   docker run -p 8000:8000 -e FRAUD_API_KEY=<key> -v fraud-state:/var/lib/fraud-detection \
#            fraud-detection-serving:dev
# Secure by default: the image listens on 0.0.0.0 and requires the API key (clients send it
# as X-API-Key). Without FRAUD_API_KEY the container exits at once with one line saying so;
# it never serves an open API. It runs the local profile (SQLite, files in the volume);
# docker-compose.yml runs it with the production profile.
# The state volume holds what serving reads: the MLflow registry (the champion model),
# the Feast online store and state/serving/champion.json. Lint: `make lint-docker`.

# The base image is pinned by digest (the multi-arch index of the tag), so a rebuild gets the
# same bytes. Refresh both FROM lines (and docker/Dockerfile.pipeline's) together:
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm   # the "Digest:" line
# Dependabot (.github/dependabot.yml, docker ecosystem) proposes the update weekly.

# ---- build: the locked runtime environment, made with uv from uv.lock -------------------
FROM python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1 AS build

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
FROM python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FRAUD_PROFILE__STATE_DIR=/var/lib/fraud-detection \
    FEAST_USAGE=False \
    GX_ANALYTICS_ENABLED=False

# The key is required even when the CMD is changed to pass --insecure-no-key. A boolean,
# not a secret (hadolint flags the name): the key itself comes only from `docker run -e`.
# hadolint ignore=DL3064
ENV FRAUD_PROFILE__SERVING__API_KEY_REQUIRED=true

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

# 0.0.0.0 so the published port reaches it: `fraud serve` refuses such a bind without an
# API key, and the profile override above requires the key even with --insecure-no-key.
CMD ["fraud", "serve", "--host", "0.0.0.0", "--port", "8000"]
