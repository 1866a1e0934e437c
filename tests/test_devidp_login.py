"""The development identity provider's authorization-code flow with PKCE, over real HTTP.

A person signs in on its login page; the code comes back to the realm file's redirect URI and
nowhere else, once, for a minute, to the client, redirect URI and verifier it was made for.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from flyswatter.config import Settings
from flyswatter.dev import identity_provider, oauth
from flyswatter.dev.identity_provider import DevIdentityProvider
from flyswatter.dev.realm import REALM_FILE, load_realm
from flyswatter.dev.server import BackgroundServer
from tests.support.keycloak_flows import (
    DEMO_PASSWORD,
    authorization_code,
    bearer,
    endpoints,
    pkce_pair,
)

APP_URL = "http://localhost:8000"  # the realm file's default base URL
REDIRECT_URI = f"{APP_URL}/docs/oauth2-redirect"
SECOND_CLIENT = "flyswatter-web-two"


@pytest.fixture(scope="module")
def provider() -> Iterator[DevIdentityProvider]:
    realm = load_realm(REALM_FILE, environ={})
    # A second browser client, to show a code cannot change hands between clients.
    web = next(client for client in realm["clients"] if client["clientId"] == "flyswatter-web")
    second = copy.deepcopy(web)
    second["clientId"] = SECOND_CLIENT
    realm["clients"].append(second)
    server = BackgroundServer()
    idp = DevIdentityProvider(realm, server.base_url)
    server.start(idp.app)
    yield idp
    server.stop()


def start_login(
    provider: DevIdentityProvider, challenge: str, **query: str
) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=provider.base_url, timeout=10)
    params = {
        "response_type": "code",
        "client_id": "flyswatter-web",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid",
        "state": "s t/a?t=e&ü",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **query,
    }
    return client, client.get(f"{endpoints(provider.base_url)}/auth", params=params)


def sign_in(provider: DevIdentityProvider, challenge: str, **query: str) -> dict[str, list[str]]:
    client, page = start_login(provider, challenge, **query)
    try:
        assert page.status_code == 200, page.text
        action = page.text.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        answer = client.post(action, data={"username": "maria", "password": DEMO_PASSWORD})
    finally:
        client.close()
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return parse_qs(urlsplit(location).query)


def redeem(provider: DevIdentityProvider, code: str, verifier: str, **form: str) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "client_id": "flyswatter-web",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **form,
    }
    return httpx.post(provider.token_endpoint, data=data, timeout=10)


def test_person_signs_in_and_the_service_accepts_the_token(
    provider: DevIdentityProvider, settings: Settings
) -> None:
    from flyswatter.app import create_app

    tokens = authorization_code(provider.base_url, "maria", REDIRECT_URI)
    assert {"access_token", "id_token", "refresh_token"} <= set(tokens)
    server = BackgroundServer()
    server.start(create_app(settings.model_copy(update={"keycloak_url": provider.base_url})))
    try:
        me = httpx.get(f"{server.base_url}/api/v1/users/me", headers=bearer(tokens["access_token"]))
    finally:
        server.stop()
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "maria"


def test_state_comes_back_untouched_with_the_code(provider: DevIdentityProvider) -> None:
    _, challenge = pkce_pair()
    answer = sign_in(provider, challenge)
    assert answer["state"] == ["s t/a?t=e&ü"]
    assert answer["iss"] == [provider.issuer]
    assert len(answer["code"][0]) >= 32


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/docs/oauth2-redirect",
        f"{REDIRECT_URI}/../../evil",
        f"{REDIRECT_URI}?next=https://evil.example",
        f"{REDIRECT_URI}/",
        "http://127.0.0.1:8000/docs/oauth2-redirect",
        "",
    ],
)
def test_a_redirect_uri_not_in_the_realm_file_is_refused_on_the_page(
    provider: DevIdentityProvider, redirect_uri: str
) -> None:
    _, challenge = pkce_pair()
    client, page = start_login(provider, challenge, redirect_uri=redirect_uri)
    client.close()
    assert page.status_code == 400
    assert "location" not in page.headers
    assert "Invalid parameter: redirect_uri" in page.text


def test_unknown_client_is_refused_on_the_page(provider: DevIdentityProvider) -> None:
    _, challenge = pkce_pair()
    client, page = start_login(provider, challenge, client_id="nobody")
    client.close()
    assert page.status_code == 400
    assert "location" not in page.headers


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid admin:everything"}, "invalid_scope"),
    ],
)
def test_bad_requests_go_back_to_the_client_with_an_error_and_the_state(
    provider: DevIdentityProvider, query: dict[str, str], error: str
) -> None:
    _, challenge = pkce_pair()
    client, page = start_login(provider, challenge, **query)
    client.close()
    assert page.status_code == 302
    location = page.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    answer = parse_qs(urlsplit(location).query)
    assert answer["error"] == [error]
    assert answer["state"] == ["s t/a?t=e&ü"]
    assert "code" not in answer


def test_a_client_without_the_browser_flow_cannot_start_it(provider: DevIdentityProvider) -> None:
    _, challenge = pkce_pair()
    cli: dict[str, Any] = provider.realm.clients["flyswatter-cli"]
    assert not cli.get("redirectUris")
    client, page = start_login(provider, challenge, client_id="flyswatter-cli")
    client.close()
    assert page.status_code == 400


def test_wrong_password_shows_the_login_page_again(provider: DevIdentityProvider) -> None:
    _, challenge = pkce_pair()
    client, page = start_login(provider, challenge)
    try:
        action = page.text.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        again = client.post(action, data={"username": "maria", "password": "wrong"})
        assert again.status_code == 200
        assert "Invalid username or password." in again.text
        assert "location" not in again.headers
        signed_in = client.post(action, data={"username": "maria", "password": DEMO_PASSWORD})
        assert signed_in.status_code == 302
    finally:
        client.close()


def test_unfinished_sign_ins_are_capped_oldest_first(
    provider: DevIdentityProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity_provider, "MAX_PENDING_LOGINS", 2)
    _, challenge = pkce_pair()
    pending = provider.authorize(
        {
            "response_type": "code",
            "client_id": "flyswatter-web",
            "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    first, second, third = (provider.start_login(pending) for _ in range(3))
    with pytest.raises(oauth.OAuthError):
        provider.login(first, "maria", DEMO_PASSWORD)
    assert provider.login(third, "maria", DEMO_PASSWORD).startswith(REDIRECT_URI + "?")
    assert provider.login(second, "maria", DEMO_PASSWORD).startswith(REDIRECT_URI + "?")


def test_login_page_loads_nothing_and_cannot_be_framed(provider: DevIdentityProvider) -> None:
    _, challenge = pkce_pair()
    client, page = start_login(provider, challenge)
    client.close()
    assert "<script" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


class TestCodes:
    def test_a_code_is_good_for_one_token_request(self, provider: DevIdentityProvider) -> None:
        verifier, challenge = pkce_pair()
        code = sign_in(provider, challenge)["code"][0]
        assert redeem(provider, code, verifier).status_code == 200
        again = redeem(provider, code, verifier)
        assert again.status_code == 400
        assert again.json()["error"] == "invalid_grant"

    def test_the_wrong_verifier_is_refused_and_spends_the_code(
        self, provider: DevIdentityProvider
    ) -> None:
        verifier, challenge = pkce_pair()
        code = sign_in(provider, challenge)["code"][0]
        other_verifier, _ = pkce_pair()
        wrong = redeem(provider, code, other_verifier)
        assert wrong.status_code == 400
        assert wrong.json()["error"] == "invalid_grant"
        assert redeem(provider, code, verifier).status_code == 400

    def test_a_missing_verifier_is_refused(self, provider: DevIdentityProvider) -> None:
        _, challenge = pkce_pair()
        code = sign_in(provider, challenge)["code"][0]
        assert redeem(provider, code, "").json()["error"] == "invalid_grant"

    def test_the_code_is_bound_to_its_redirect_uri(self, provider: DevIdentityProvider) -> None:
        verifier, challenge = pkce_pair()
        code = sign_in(provider, challenge)["code"][0]
        moved = redeem(provider, code, verifier, redirect_uri=f"{APP_URL}/elsewhere")
        assert moved.status_code == 400
        assert moved.json()["error"] == "invalid_grant"

    def test_the_code_is_bound_to_its_client(self, provider: DevIdentityProvider) -> None:
        verifier, challenge = pkce_pair()
        code = sign_in(provider, challenge)["code"][0]
        other = redeem(provider, code, verifier, client_id=SECOND_CLIENT)
        assert other.status_code == 400
        assert other.json()["error"] == "invalid_grant"

    def test_an_expired_code_is_refused(
        self, provider: DevIdentityProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(identity_provider, "CODE_LIFESPAN_SECONDS", 0)
        verifier, challenge = pkce_pair()
        code = sign_in(provider, challenge)["code"][0]
        assert redeem(provider, code, verifier).json()["error"] == "invalid_grant"

    def test_the_refresh_token_of_a_browser_sign_in_refreshes(
        self, provider: DevIdentityProvider
    ) -> None:
        verifier, challenge = pkce_pair()
        code = sign_in(provider, challenge)["code"][0]
        tokens = redeem(provider, code, verifier).json()
        refreshed = httpx.post(
            provider.token_endpoint,
            data={
                "grant_type": "refresh_token",
                "client_id": "flyswatter-web",
                "refresh_token": tokens["refresh_token"],
            },
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["scope"] == tokens["scope"]


def test_discovery_announces_the_code_flow_with_s256_only(provider: DevIdentityProvider) -> None:
    discovery = httpx.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["authorization_endpoint"] == f"{endpoints(provider.base_url)}/auth"
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in discovery["grant_types_supported"]
