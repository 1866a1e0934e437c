"""Signing-key rotation and identity-provider outages, against a real JWKS over HTTP.

Each test runs its own provider (not the session's), so taking it down or rotating its
keys cannot disturb other tests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from jwcrypto import jwk

from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.support.identity import JwksServer, TokenFactory, new_signing_key

ME = "/api/v1/users/me"


S = TypeVar("S", bound=JwksServer)


def serving(server: S) -> Iterator[S]:
    """The identity provider's JWKS served over HTTP for the test, then stopped."""
    server.start()
    yield server
    server.stop()


@pytest.fixture
def provider() -> Iterator[JwksServer]:
    yield from serving(JwksServer())


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


# --- keys the service cannot use ------------------------------------------------------------
# Identity providers publish more than RS256 signing keys (Keycloak adds its RSA-OAEP key for
# encryption, an admin may add an EC or Ed25519 key the service was not built for, a plugin
# may publish something odd): one such entry must not keep the usable keys from loading.

# What an odd entry holds besides its kid: looks like key material, so must never be logged.
MATERIAL = "c2VjcmV0LWtleS1tYXRlcmlhbC1zaG91bGQtbm90LWJlLWxvZ2dlZA"


def unusable_keys(label: str) -> list[Any]:
    """Entries no verifier can check an RS256 token with, each named ``{label}-...``."""
    point = json.loads(jwk.JWK.generate(kty="EC", crv="P-256").export_public())
    encryption = json.loads(new_signing_key(f"{label}-enc").export_public())
    return [
        {"kty": "XYZ", "kid": f"{label}-kty", "use": "sig", "k": MATERIAL},
        {"kty": "RSA", "kid": f"{label}-rsa", "use": "sig", "n": MATERIAL + "!!", "e": "AQAB"},
        {"kty": "RSA", "kid": f"{label}-no-e", "use": "sig", "n": MATERIAL},
        {"kty": "EC", "kid": f"{label}-curve", "crv": "P-192", "x": MATERIAL, "y": MATERIAL},
        {**point, "kid": f"{label}-off-curve", "y": point["x"]},
        {**encryption, "use": "enc", "alg": "RSA-OAEP"},
        {"kty": "RSA", "kid": [f"{label}-kid-not-text"], "n": MATERIAL, "e": "AQAB"},
        f"{label}-not-an-object",
    ]


class OddProvider(JwksServer):
    """A provider whose JWKS lists ``odd`` entries before its signing keys."""

    def __init__(self) -> None:
        super().__init__()
        self.odd: list[Any] = unusable_keys("first")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [*self.odd, *super().jwks()["keys"]]}


@pytest.fixture
def odd_provider() -> Iterator[OddProvider]:
    yield from serving(OddProvider())


@asynccontextmanager
async def service_of(settings: Settings, provider: JwksServer) -> AsyncIterator[httpx.AsyncClient]:
    """The service trusting ``provider``, its keys loaded at start-up as in production."""
    app = create_app(settings.model_copy(update={"keycloak_url": provider.base_url}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def skip_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "flyswatter.auth"
        and record.levelno == logging.WARNING
        and "skipped" in record.getMessage()
    ]


async def test_unusable_keys_are_skipped_and_the_usable_ones_verify(
    settings: Settings, odd_provider: OddProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flyswatter.auth")
    tokens = TokenFactory(odd_provider)
    async with service_of(settings, odd_provider) as http:
        response = await http.get(ME, headers=bearer(tokens.user_token("alice")))
        assert response.status_code == 200, response.text
        first = skip_warnings(caplog)
        # One warning per unusable signing entry (the encryption key is no signing key).
        assert len(first) == len(odd_provider.odd) - 1, first
        for name in ("first-kty", "first-rsa", "first-no-e", "first-curve", "first-off-curve"):
            assert sum(name in message for message in first) == 1, (name, first)

        # A rotation that also publishes new odd entries: the new key is picked up, and only
        # the new odd entries are warned about (those without a name of their own read as the
        # ones already warned about), the known ones once was enough.
        odd_provider.rotate()
        odd_provider.odd += unusable_keys("second")
        rotated = await http.get(ME, headers=bearer(tokens.user_token("alice")))
        assert rotated.status_code == 200, rotated.text
        second = skip_warnings(caplog)[len(first) :]
        named = [message.replace("first-", "second-") for message in first if "first-" in message]
        assert sorted(second) == sorted(named)
    for record in caplog.records:
        assert MATERIAL not in record.getMessage()


async def test_a_key_published_for_encryption_never_verifies(
    settings: Settings, odd_provider: OddProvider
) -> None:
    tokens = TokenFactory(odd_provider)
    signed = tokens.user_token("alice")
    public = json.loads(odd_provider.signing_key.export_public())
    del public["use"]
    # The very key that signed the token, published for encryption only (RFC 7517 4.2, 4.3):
    # it is the provider's word that it signs nothing.
    odd_provider.keys = []
    for published in ({"use": "enc"}, {"key_ops": ["encrypt", "wrapKey"]}):
        odd_provider.odd = [{**public, **published}]
        async with service_of(settings, odd_provider) as http:
            refused = await http.get(ME, headers=bearer(signed))
        assert refused.status_code == 401, (published, refused.text)
