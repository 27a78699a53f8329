"""The interactive API docs (``/docs``) served entirely by the service: no CDN.

FastAPI's default docs page loads Swagger UI's JavaScript and CSS from cdn.jsdelivr.net
and its favicon from fastapi.tiangolo.com, so a browser on a network without internet
gets a blank page, and one with internet runs a script the service does not control.
Here the page is FastAPI's own (:func:`fastapi.openapi.docs.get_swagger_ui_html`), its
assets the Swagger UI dist files the ``fastapi-swagger`` wheel ships (pinned in
``uv.lock``), mounted under :data:`STATIC_PREFIX`. ReDoc is not served.

Create the app with ``docs_url=None, redoc_url=None`` and call :func:`add_docs`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["DOCS_PATH", "OPEN_PATHS", "STATIC_PREFIX", "add_docs"]

DOCS_PATH = "/docs"
STATIC_PREFIX = "/docs/static"
# The package and folder holding swagger-ui-bundle.js, swagger-ui.css, favicon-32x32.png.
ASSETS_PACKAGE = ("fastapi_swagger", "resources")
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
# What a browser loads for the docs page without sending an API key: the page and its
# three assets, nothing else of the static folder.
OPEN_PATHS = frozenset({DOCS_PATH, *(f"{STATIC_PREFIX}/{name}" for name in ASSETS)})


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` from the package's own files."""
    app.mount(STATIC_PREFIX, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-static")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        static = root + STATIC_PREFIX
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - docs",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
        )
