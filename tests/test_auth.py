"""Token validation: what opens the API and what is refused, with real signed tokens.

Every token here is checked by the service's own verifier against the test JWKS served over
HTTP; nothing is overridden. Refusals are problem+json with an RFC 6750 challenge.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import httpx
import pytest
from jwcrypto import jwk, jwt

from flyswatter.auth.tokens import Principal
from tests.support.identity import JwksServer, TokenFactory

ME = "/api/v1/users/me"


def _now() -> int:
    # At the call, not at import: a long run reaches this test well after collection.
    return int(time.time())


def _hs256_with_public_key(tokens: TokenFactory) -> str:
    """The classic key-confusion forgery: the RSA public key used as an HMAC secret."""
    public_pem = tokens.server.signing_key.export_to_pem()
    secret = jwk.JWK(kty="oct", k=_b64url(public_pem))
    kid = tokens.server.signing_key["kid"]
    token = jwt.JWT(header={"alg": "HS256", "kid": kid}, claims=tokens.claims(sub="mallory"))
    token.make_signed_token(secret)
    return str(token.serialize())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none(tokens: TokenFactory) -> str:
    """An unsigned token naming a published key: anybody can write one."""
    header = {"alg": "none", "typ": "JWT", "kid": tokens.server.signing_key["kid"]}
    claims = tokens.claims(sub="mallory", preferred_username="mallory")
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}."


def _tampered(tokens: TokenFactory) -> str:
    header, payload, signature = tokens.user_token("alice", scopes=["issues:read"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "projects:read projects:write issues:read issues:write"
    forged = _b64url(json.dumps(claims).encode())
    return f"{header}.{forged}.{signature}"


REFUSED_TOKENS: dict[str, Callable[[TokenFactory], str]] = {
    "expired": lambda t: t.user_token("alice", exp=_now() - 600, iat=_now() - 900),
    "not_yet_valid": lambda t: t.user_token("alice", nbf=_now() + 600),
    "wrong_issuer": lambda t: t.user_token("alice", iss="http://127.0.0.1:1/realms/other"),
    "wrong_audience": lambda t: t.user_token("alice", aud=["some-other-api"]),
    "alg_none": _alg_none,
    "hs256_with_public_key": _hs256_with_public_key,
    "tampered_payload": _tampered,
    "id_token": lambda t: t.user_token("alice", typ="ID", aud="flyswatter-web"),
    "refresh_token": lambda t: t.user_token("alice", typ="Refresh"),
    "no_subject": lambda t: t.sign(t.claims(preferred_username="ghost")),
    "no_expiry": lambda t: t.sign(t.claims(sub="alice-sub", exp=None)),
}


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    body = response.json()
    assert body["status"] == 401
    assert body["type"].endswith(":invalid-token")


async def test_valid_token_is_accepted(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    response = await client.get(ME, headers={"Authorization": f"Bearer {tokens.user_token('a')}"})
    assert response.status_code == 200
    assert response.json()["username"] == "a"


async def test_audience_may_be_a_single_string(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    token = tokens.user_token("alice", aud="flyswatter-api")
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize("case", sorted(REFUSED_TOKENS))
async def test_bad_token_is_refused_with_401(
    client: httpx.AsyncClient, tokens: TokenFactory, case: str
) -> None:
    token = REFUSED_TOKENS[case](tokens)
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert_invalid_token(response)
    assert token not in response.text


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic YWxpY2U6c2VjcmV0", "Bearer not-a-jwt", "Bearer a.b.c"],
)
async def test_missing_or_garbage_authorization_is_refused_with_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_invalid_token(await client.get(ME, headers=headers))


async def test_unknown_key_id_refetches_the_jwks_exactly_once(
    client: httpx.AsyncClient, tokens: TokenFactory, jwks_server: JwksServer
) -> None:
    before = jwks_server.certs_requests
    token = tokens.sign(tokens.claims(sub="alice-sub"), header={"kid": "never-published"})
    assert_invalid_token(await client.get(ME, headers={"Authorization": f"Bearer {token}"}))
    assert jwks_server.certs_requests == before + 1


async def test_missing_scope_is_403_insufficient_scope(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    token = tokens.user_token("alice", scopes=["issues:read"])
    response = await client.post(
        "/api/v1/projects",
        json={"key": "NOPE", "name": "Nope"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="projects:write"'
    )
    assert response.json()["required_scopes"] == ["projects:write"]


async def test_service_account_is_recognised_from_its_token(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    token = tokens.service_token("billing-sync")
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    me = response.json()
    assert me["is_service_account"] is True
    assert me["client_id"] == "billing-sync"


@pytest.mark.parametrize(
    "client_claims",
    [{}, {"client_id": "flyswatter-web"}, {"clientId": "flyswatter-web"}],
    ids=["no-client-id", "client-id-of-another-client", "old-client-id-of-another-client"],
)
def test_a_person_named_service_account_is_keyed_as_a_person(
    tokens: TokenFactory, client_claims: dict[str, str]
) -> None:
    # Anyone may choose this name; only a client-credentials token names the client as well.
    claims = tokens.claims(
        sub="person-sub", preferred_username="service-account-alice", **client_claims
    )
    principal = Principal.from_claims(claims)
    assert principal.is_service_account is False
    assert principal.key == "user:person-sub"


@pytest.mark.parametrize(
    ("claim", "client_id"),
    [("client_id", "billing-sync"), ("clientId", "billing-sync"), ("client_id", "Billing-Sync")],
    ids=["keycloak-25", "before-keycloak-25", "mixed-case-client"],
)
def test_a_service_account_token_is_keyed_by_its_client_not_azp(
    tokens: TokenFactory, claim: str, client_id: str
) -> None:
    claims = tokens.claims(
        sub="robot-sub",
        preferred_username="service-account-billing-sync",
        azp="flyswatter-web",
        **{claim: client_id},
    )
    principal = Principal.from_claims(claims)
    assert principal.is_service_account is True
    assert principal.client_id == client_id
    assert principal.key == f"client:{client_id}"


async def test_a_person_named_service_account_is_shown_as_a_person(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    token = tokens.user_token("service-account-alice")
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    me = response.json()
    assert me["username"] == "service-account-alice"
    assert me["is_service_account"] is False
    assert me["client_id"] is None


@pytest.mark.parametrize(
    ("claims", "scopes", "roles"),
    [
        (
            {"scope": "projects:read issues:read \ud800x"},
            ["issues:read", "projects:read"],
            [],
        ),
        (
            {"scope": "projects:read", "realm_access": {"roles": ["\udfff", "flyswatter-dev"]}},
            ["projects:read"],
            ["flyswatter-dev"],
        ),
        (
            {"scope": "projects:read is\x1bsues:read", "realm_access": {"roles": ["adm\x00in"]}},
            ["projects:read"],
            [],
        ),
    ],
    ids=["lone-surrogate-scope", "lone-surrogate-role", "control-characters"],
)
async def test_scopes_and_roles_with_unsafe_characters_are_dropped_not_a_500(
    client: httpx.AsyncClient,
    tokens: TokenFactory,
    claims: dict[str, object],
    scopes: list[str],
    roles: list[str],
) -> None:
    token = tokens.sign(tokens.claims(sub="odd-grants", preferred_username="odd", **claims))
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    # The well-formed entries still grant; the others grant nothing and are not echoed back.
    assert response.json()["scopes"] == scopes
    assert response.json()["realm_roles"] == roles
