"""Getting tokens as people and services do, from Keycloak or from the development provider.

Both speak the same protocol at the same paths, so one set of helpers drives either; the
authorization-code flow goes through the provider's own login page over plain HTTP (the
browser tests do the same in Chromium).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

REALM = "flyswatter"
SERVICE_SECRET = "flyswatter-service-dev-secret"
READONLY_SECRET = "flyswatter-readonly-service-dev-secret"
DEMO_PASSWORD = "flyswatter"
DEMO_USERS = ("admin", "maria", "dev", "rita", "victor")
_FORM_ACTION = re.compile(r'<form[^>]*\baction="([^"]+)"', re.IGNORECASE)


def endpoints(base_url: str) -> str:
    return f"{base_url}/realms/{REALM}/protocol/openid-connect"


def token_request(base_url: str, form: dict[str, str], auth: tuple[str, str] | None = None) -> Any:
    response = httpx.post(f"{endpoints(base_url)}/token", data=form, auth=auth, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def client_credentials(base_url: str, client_id: str, secret: str, **form: str) -> Any:
    return token_request(
        base_url, {"grant_type": "client_credentials", **form}, auth=(client_id, secret)
    )


def password_grant(base_url: str, username: str, **form: str) -> Any:
    return token_request(
        base_url,
        {
            "grant_type": "password",
            "client_id": "flyswatter-cli",
            "username": username,
            "password": DEMO_PASSWORD,
            **form,
        },
    )


def refresh_grant(base_url: str, refresh_token: str, client_id: str) -> Any:
    return token_request(
        base_url,
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id},
    )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_code(
    base_url: str,
    username: str,
    redirect_uri: str,
    *,
    client_id: str = "flyswatter-web",
    scope: str = "openid",
) -> Any:
    """Sign in on the login page with a PKCE (S256) request; the token response."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        page = browser.get(
            f"{endpoints(base_url)}/auth",
            params={
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": scope,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        assert page.status_code == 200, page.text
        action = _FORM_ACTION.search(page.text)
        assert action is not None, "the login page has no form"
        # Keycloak marks its login cookies Secure; browsers send those to loopback over plain
        # HTTP (a secure context), httpx does not, so they are sent by hand.
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies.jar)
        submitted = browser.post(
            urljoin(str(page.url), html.unescape(action.group(1))),
            data={"username": username, "password": DEMO_PASSWORD},
            headers={"Cookie": cookies} if cookies else {},
            follow_redirects=False,
        )
    assert submitted.status_code == 302, submitted.text
    location = submitted.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    answer = parse_qs(urlsplit(location).query)
    assert answer["state"] == [state]
    return token_request(
        base_url,
        {
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": answer["code"][0],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
