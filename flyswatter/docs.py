"""Swagger UI at ``/docs``, served by the service itself so it works without internet.

FastAPI's own page loads Swagger UI from a CDN, which leaves a blank page on a disconnected
machine. The assets come from the ``fastapi-offline`` package (pinned in pyproject.toml:
Swagger UI 5, kept current with the CDN's major version); only its files are used, because its
``FastAPIOffline`` factory drops ``swagger_ui_init_oauth`` and so the Keycloak sign-in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
# The security scheme behind the Authorize dialog's plain token field.
BEARER_SCHEME = "bearerToken"


def add_offline_docs(app: FastAPI, init_oauth: dict[str, Any]) -> None:
    """``/docs`` (and ``/redoc``), the OAuth2 redirect page and their files, all from here."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def under_root(request: Request, path: str | None) -> str:
        """A path of this app as the browser must ask for it, behind a proxy's prefix too."""
        return f"{request.scope.get('root_path', '')}{path}"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets = under_root(request, ASSETS_URL)
        return get_swagger_ui_html(
            openapi_url=under_root(request, app.openapi_url),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=under_root(request, OAUTH2_REDIRECT_URL),
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            init_oauth=init_oauth,
            # No call to swagger.io's validator: the page must not reach beyond this service.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        assets = under_root(request, ASSETS_URL)
        return get_redoc_html(
            openapi_url=under_root(request, app.openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )


def offer_plain_bearer_token(schema: dict[str, Any]) -> None:
    """Let every secured operation also take a pasted access token (Authorize → bearerToken).

    OpenAPI lists alternatives in an operation's ``security``: Keycloak's OAuth2 flows, or a
    token obtained elsewhere (curl, another client) typed into the dialog's value field.
    """
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A Keycloak access token obtained elsewhere, pasted as it is",
    }
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            security = operation.get("security") if isinstance(operation, dict) else None
            if security and {BEARER_SCHEME: []} not in security:
                security.append({BEARER_SCHEME: []})
