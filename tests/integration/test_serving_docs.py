"""The docs page (``/docs``) works offline: every script, stylesheet and icon it loads
comes from the service itself, and a browser gets them without an API key."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fraud_detection.config import ServingSettings, load_profile
from fraud_detection.serving.app import create_app

pytestmark = pytest.mark.integration


class _Assets(HTMLParser):
    """The URLs a browser fetches for a page: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [v for k, v in attrs if k == wanted and v]


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The app with the API key required; no lifespan: the docs need no model."""
    monkeypatch.setenv("FRAUD_API_KEY", "s3cret")
    profile = load_profile().model_copy(
        update={"state_dir": tmp_path, "serving": ServingSettings(api_key_required=True)}
    )
    return TestClient(create_app(profile=profile))


def test_docs_page_loads_nothing_from_outside_the_service(client: TestClient) -> None:
    # When a browser without the key opens /docs
    page = client.get("/docs")
    assert page.status_code == 200
    parser = _Assets()
    parser.feed(page.text)
    # then every asset it loads is a path on this service, none on a CDN
    assert len(parser.urls) == 3, parser.urls  # the bundle, the stylesheet, the icon
    assert all(url.startswith("/") and not url.startswith("//") for url in parser.urls)
    assert not re.search(r"https?://", page.text), "the page names an outside URL"
    # and each asset is served, with its content type, without the key
    types = {url.rsplit(".", 1)[-1]: client.get(url) for url in parser.urls}
    assert all(response.status_code == 200 for response in types.values())
    assert "javascript" in types["js"].headers["content-type"]
    assert types["css"].headers["content-type"].startswith("text/css")
    assert types["png"].headers["content-type"] == "image/png"
    assert len(types["js"].content) > 100_000  # the real Swagger UI bundle
    # The page asks for the schema it documents, which is served too.
    assert client.get("/openapi.json").status_code == 200


def test_redoc_is_not_served_and_the_static_folder_is_not_open(client: TestClient) -> None:
    assert client.get("/redoc").status_code in {401, 404}
    # Only the page's own assets are open; anything else there needs the key.
    assert client.get("/docs/static/__init__.py").status_code == 401
    keyed = client.get("/docs/static/__init__.py", headers={"X-API-Key": "s3cret"})
    assert keyed.status_code in {200, 404}
