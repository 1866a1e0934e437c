"""/docs works on a machine without internet: the service serves every file the page needs."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from flyswatter.docs import BEARER_SCHEME


class _References(HTMLParser):
    """Every URL a page loads by itself: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            value = values.get(name)
            if value and (tag != "a"):
                self.urls.append(value)


def _page_references(page: str) -> list[str]:
    parser = _References()
    parser.feed(page)
    # The inline start-up script names the OpenAPI document and the OAuth2 redirect page.
    parser.urls += re.findall(r"(?:url|oauth2RedirectUrl): '([^']+)'", page)
    return parser.urls


@pytest.mark.parametrize("page_url", ["/docs", "/redoc"])
async def test_docs_page_and_every_file_it_loads_come_from_the_service(
    client: httpx.AsyncClient, page_url: str
) -> None:
    page = await client.get(page_url)
    assert page.status_code == 200
    references = _page_references(page.text)
    assert any(url.endswith(".js") for url in references), references
    for reference in references:
        url = urljoin(str(page.url), reference)
        assert urlsplit(url).netloc == "testserver", f"{page_url} loads {url} from elsewhere"
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.content, url


@pytest.mark.parametrize("page_url", ["/docs", "/redoc"])
async def test_docs_pages_behind_a_path_prefix_name_every_file_under_it(
    app: FastAPI, page_url: str
) -> None:
    # A proxy that serves the service under /tracker passes the prefix as the ASGI root path.
    transport = httpx.ASGITransport(app=app, root_path="/tracker")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        page = await client.get(page_url)
    assert page.status_code == 200
    references = [url for url in _page_references(page.text) if not url.startswith("data:")]
    assert references
    assert all(url.startswith("/tracker/") for url in references), references


async def test_swagger_ui_files_have_their_content_types(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    types = {}
    for reference in _page_references(page):
        response = await client.get(reference)
        types[reference.rsplit(".", 1)[-1]] = response.headers["content-type"].split(";")[0]
    assert types["js"] in ("text/javascript", "application/javascript")
    assert types["css"] == "text/css"


async def test_authorize_dialog_offers_a_plain_bearer_token_beside_keycloak(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"][BEARER_SCHEME] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A Keycloak access token obtained elsewhere, pasted as it is",
    }
    secured = [
        operation
        for path_item in schema["paths"].values()
        for operation in path_item.values()
        if operation.get("security")
    ]
    assert secured
    for operation in secured:
        schemes = [name for requirement in operation["security"] for name in requirement]
        assert schemes == ["keycloak", BEARER_SCHEME], operation["operationId"]
