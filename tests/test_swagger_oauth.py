"""Swagger UI's Authorize dialog: both OAuth2 flows, pointing at the configured Keycloak."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from flyswatter.app import create_app
from flyswatter.auth.scopes import SCOPE_DESCRIPTIONS
from flyswatter.config import Settings
from flyswatter.dev.realm import REALM_FILE, load_realm

SWAGGER_CLIENT = Settings.model_fields["swagger_client_id"].default


@pytest.fixture
async def docs_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(
        settings.model_copy(
            update={"keycloak_url": "http://keycloak:8080", "issuer": None, "cors_origins": []}
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_openapi_offers_authorization_code_and_client_credentials_flows(
    docs_client: httpx.AsyncClient,
) -> None:
    schema = (await docs_client.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["keycloak"]
    endpoints = "http://keycloak:8080/realms/flyswatter/protocol/openid-connect"
    assert scheme["type"] == "oauth2"
    code = scheme["flows"]["authorizationCode"]
    assert code["authorizationUrl"] == f"{endpoints}/auth"
    assert code["tokenUrl"] == f"{endpoints}/token"
    assert code["scopes"] == dict(SCOPE_DESCRIPTIONS)
    credentials = scheme["flows"]["clientCredentials"]
    assert credentials["tokenUrl"] == f"{endpoints}/token"
    assert credentials["scopes"] == dict(SCOPE_DESCRIPTIONS)


async def test_browser_facing_urls_follow_the_issuer_not_the_internal_keycloak_name(
    settings: Settings,
) -> None:
    app = create_app(
        settings.model_copy(
            update={
                "keycloak_url": "http://keycloak:8080",
                "issuer": "https://sso.example.org/realms/flyswatter",
            }
        )
    )
    flows = app.openapi()["components"]["securitySchemes"]["keycloak"]["flows"]
    assert flows["authorizationCode"]["authorizationUrl"] == (
        "https://sso.example.org/realms/flyswatter/protocol/openid-connect/auth"
    )


async def test_swagger_ui_signs_in_with_the_public_client_and_pkce(
    docs_client: httpx.AsyncClient,
) -> None:
    page = (await docs_client.get("/docs")).text
    init = re.search(r"ui\.initOAuth\((\{.*?\})\)", page)
    assert init is not None, "Swagger UI is not configured for OAuth2"
    config = json.loads(init.group(1))
    assert config["clientId"] == "flyswatter-web"
    assert config["usePkceWithAuthorizationCodeGrant"] is True
    assert set(config["scopes"].split()) == {"openid", *SCOPE_DESCRIPTIONS}
    assert "clientSecret" not in config
    assert "/docs/oauth2-redirect" in page
    assert (await docs_client.get("/docs/oauth2-redirect")).status_code == 200


def test_realm_lets_swagger_ui_redirect_back_to_the_deployments_docs() -> None:
    """flyswatter-web's redirect URI and web origin follow FLYSWATTER_BASE_URL, exactly."""
    realm = load_realm(REALM_FILE, environ={"FLYSWATTER_BASE_URL": "https://bugs.example.org"})
    web = next(c for c in realm["clients"] if c["clientId"] == SWAGGER_CLIENT)
    assert web["redirectUris"] == ["https://bugs.example.org/docs/oauth2-redirect"]
    assert web["webOrigins"] == ["https://bugs.example.org"]
    assert web["attributes"]["post.logout.redirect.uris"] == "https://bugs.example.org/docs"
    default = next(
        c for c in load_realm(REALM_FILE, environ={})["clients"] if c["clientId"] == SWAGGER_CLIENT
    )
    assert default["redirectUris"] == ["http://localhost:8000/docs/oauth2-redirect"]
    assert web["publicClient"] is True
    assert web["attributes"]["pkce.code.challenge.method"] == "S256"
