"""Credentials that are not one well-formed bearer JWS: always a 401 (or a 400 for two
headers), never a 500, never a traceback, and counted against the caller's address."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jws

from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.support.identity import TokenFactory

ME = "/api/v1/users/me"
# jwcrypto marks an internal class deprecated; signing the tokens here touches it.
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:tests.test_malformed_credentials"
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def signed_payload(tokens: TokenFactory, payload: bytes) -> str:
    """A correctly signed JWS whose payload is any bytes at all."""
    key = tokens.server.signing_key
    token = jws.JWS(payload)
    token.add_signature(key, alg="RS256", protected={"alg": "RS256", "kid": key.key_id})
    return str(token.serialize(compact=True))


def unsigned(header: bytes, payload: bytes = b"{}") -> str:
    return f"{b64url(header)}.{b64url(payload)}.{b64url(b'signature')}"


def kid_header(tokens: TokenFactory, **extra: object) -> bytes:
    return json.dumps({"alg": "RS256", "kid": tokens.server.signing_key.key_id, **extra}).encode()


MALFORMED: dict[str, Callable[[TokenFactory], str]] = {
    "header nested 10k deep": lambda t: unsigned(nested(10_000)),
    "header nested 500 deep": lambda t: unsigned(nested(500)),
    "header object holding nesting": lambda t: unsigned(
        b'{"alg":"RS256","x":' + nested(900) + b"}"
    ),
    "header not json": lambda t: unsigned(b"\xff\xfe not json"),
    "header a json string": lambda t: unsigned(b'"RS256"'),
    "header with a number for kid": lambda t: unsigned(b'{"alg":"RS256","kid":1e999}'),
    "signed payload nested 10k deep": lambda t: signed_payload(t, nested(10_000)),
    "signed payload nested 2k deep in an object": lambda t: signed_payload(
        t, b'{"sub":"x","exp":' + nested(2_000) + b"}"
    ),
    "signed payload not json": lambda t: signed_payload(t, b"\x00\x01\x02"),
    "signed payload a list": lambda t: signed_payload(t, b"[1,2,3]"),
    "signed exp beyond any float": lambda t: t.sign(t.claims(sub="x", exp=10**400)),
    "signed exp beyond year 9999": lambda t: t.sign(t.claims(sub="x", exp=10**15)),
    "signed exp a string": lambda t: t.sign(t.claims(sub="x", exp="tomorrow")),
    "signed exp true": lambda t: t.sign(t.claims(sub="x", exp=True)),
    "signed nbf a list": lambda t: t.sign(t.claims(sub="x", nbf=[1])),
    "signed sub holding NUL": lambda t: t.sign(t.claims(sub="a\x00b")),
    "signed sub a number": lambda t: t.sign(t.claims(sub=42)),
    "signed username with a newline": lambda t: t.sign(
        t.claims(sub="x", preferred_username="a\nSet-Cookie: b")
    ),
    "signed iat in the future": lambda t: t.sign(t.claims(sub="x", iat=int(time.time()) + 3600)),
    "four segments": lambda t: t.user_token("alice") + ".extra",
    "two segments": lambda t: ".".join(t.user_token("alice").split(".")[:2]),
    "padding in a segment": lambda t: t.user_token("alice").replace(".", "=.", 1),
    "header larger than any JOSE header": lambda t: unsigned(kid_header(t, x="a" * 4_000)),
    "token of 100 kB": lambda t: "a" * 50_000 + "." + "b" * 50_000 + ".c",
}


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_token_is_a_401_without_a_traceback(
    client: httpx.AsyncClient,
    tokens: TokenFactory,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    response = await client.get(ME, headers={"Authorization": f"Bearer {MALFORMED[case](tokens)}"})
    assert_invalid_token(response)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_token_issued_in_the_future_beyond_the_leeway_is_refused(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    now = int(time.time())
    within = tokens.user_token("alice", iat=now + 10)
    beyond = tokens.user_token("alice", iat=now + 120)
    assert (await client.get(ME, headers={"Authorization": f"Bearer {within}"})).status_code == 200
    assert_invalid_token(await client.get(ME, headers={"Authorization": f"Bearer {beyond}"}))


async def test_display_name_with_control_characters_is_shown_blanked(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    claims = tokens.claims(sub="alice-blank", name="Al\x00ice\u2028", email="a\x1b@example.org")
    token = tokens.sign(claims)
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["name"] == "Al\ufffdice\ufffd"
    assert response.json()["email"] == "a\ufffd@example.org"


@pytest.mark.parametrize(
    "roles",
    [None, 5, "flyswatter-admin", {"flyswatter-admin": True}],
    ids=["null", "number", "string", "object"],
)
async def test_realm_roles_that_are_not_a_list_grant_no_role(
    client: httpx.AsyncClient, tokens: TokenFactory, roles: object
) -> None:
    token = tokens.sign(tokens.claims(sub="odd-roles", realm_access={"roles": roles}))
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json()["is_admin"] is False


async def test_two_authorization_headers_are_a_400_invalid_request(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    token = tokens.user_token("alice")
    for second in (f"Bearer {token}", "Bearer other", "Basic YWxpY2U6c2VjcmV0"):
        response = await client.get(
            ME, headers=[("Authorization", f"Bearer {token}"), ("Authorization", second)]
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


# Any bytes a client can put in a header (HTTP forbids only CR, LF and NUL there).
header_bytes = st.binary(min_size=1, max_size=300).filter(
    lambda raw: not set(raw) & {0, 10, 13} and raw.strip() == raw
)


@given(
    raw=st.one_of(
        header_bytes,
        st.lists(header_bytes, min_size=3, max_size=3).map(b".".join),
        st.lists(st.binary(max_size=200).map(lambda b: b64url(b).encode()), min_size=3, max_size=3)
        .map(b".".join)
        .filter(bool),
    )
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.anyio
async def test_any_bytes_as_a_bearer_token_are_a_401(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.get(ME, headers=[(b"Authorization", b"Bearer " + raw)])
    assert_invalid_token(response)


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    # An hour, not a minute: the sliding window forgets part of the last window's count,
    # so a run that straddles a window's end would see one request too many let through.
    app = create_app(
        settings.model_copy(update={"rate_limit_enabled": True, "rate_limit_reads": "4/hour"})
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_malformed_tokens_are_charged_to_the_address_budget(
    limited: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    cases = [
        "header nested 10k deep",
        "signed payload nested 10k deep",
        "signed exp beyond any float",
    ]
    statuses = []
    for case in [*cases, cases[0], cases[1]]:
        headers = {"Authorization": f"Bearer {MALFORMED[case](tokens)}"}
        statuses.append((await limited.get(ME, headers=headers)).status_code)
    assert statuses == [401, 401, 401, 401, 429]
