"""Signing-key rotation and identity-provider outages, against a real JWKS over HTTP.

Each test runs its own provider (not the session's), so taking it down or rotating its
keys cannot disturb other tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.support.identity import JwksServer, TokenFactory

ME = "/api/v1/users/me"


@pytest.fixture
def provider() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def throttled_app(settings: Settings, provider: JwksServer) -> AsyncIterator[FastAPI]:
    """The production throttle: an unknown ``kid`` refetches the JWKS at most once a minute."""
    app = create_app(
        settings.model_copy(
            update={"keycloak_url": provider.base_url, "jwks_refresh_min_interval_seconds": 60}
        )
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(throttled_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=throttled_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_new_signing_key_is_picked_up_by_the_first_token_that_uses_it(
    provider: JwksServer, http: httpx.AsyncClient
) -> None:
    tokens = TokenFactory(provider)
    assert (await http.get(ME, headers=bearer(tokens.user_token("alice")))).status_code == 200
    fetched = provider.certs_requests

    provider.rotate()  # right after start-up: the throttle must not hide the new key
    response = await http.get(ME, headers=bearer(tokens.user_token("alice")))

    assert response.status_code == 200, response.text
    assert provider.certs_requests == fetched + 1
    # Tokens signed before the rotation still validate, without another fetch.
    old = tokens.sign(tokens.claims(sub="bob-sub", preferred_username="bob"), key=provider.keys[1])
    assert (await http.get(ME, headers=bearer(old))).status_code == 200
    assert provider.certs_requests == fetched + 1


async def test_forged_key_ids_cost_one_refetch_per_interval(
    provider: JwksServer, http: httpx.AsyncClient
) -> None:
    tokens = TokenFactory(provider)
    fetched = provider.certs_requests
    for forged in ("forged-1", "forged-2", "forged-3"):
        token = tokens.sign(tokens.claims(sub="x"), header={"kid": forged})
        response = await http.get(ME, headers=bearer(token))
        assert response.status_code == 401
    assert provider.certs_requests == fetched + 1


async def test_during_an_outage_cached_keys_validate_and_unknown_keys_are_401(
    provider: JwksServer, http: httpx.AsyncClient
) -> None:
    tokens = TokenFactory(provider)
    cached = tokens.user_token("alice")
    provider.rotate()
    unknown = tokens.user_token("alice")
    provider.stop()
    try:
        assert (await http.get(ME, headers=bearer(cached))).status_code == 200
        refused = await http.get(ME, headers=bearer(unknown))
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    finally:
        provider.start()
