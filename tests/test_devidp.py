"""Real clients against the development identity provider and the running service, over HTTP.

The provider and the service each run under uvicorn in a thread on a free loopback port;
tokens come from python-keycloak (as another service would get them) or from curl (as the
``flyswatter dev`` banner tells a newcomer), never from the test key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakPostError

from flyswatter.app import create_app
from flyswatter.config import Settings
from flyswatter.dev.demo import DEMO_PROJECT_KEY, DEMO_ROLES, quickstart, seed_demo_project
from flyswatter.dev.identity_provider import DevIdentityProvider
from flyswatter.dev.server import BackgroundServer, start_dev_identity_provider
from tests.support.servers import system_program

SERVICE_SECRET = "flyswatter-service-dev-secret"
READONLY_SECRET = "flyswatter-readonly-service-dev-secret"
DEMO_PASSWORD = "flyswatter"


@pytest.fixture(scope="module")
def provider() -> Iterator[DevIdentityProvider]:
    # An empty environment: the realm file's development defaults, whatever this machine sets.
    idp, server = start_dev_identity_provider(environ={})
    yield idp
    server.stop()


@pytest.fixture
def service_settings(settings: Settings, provider: DevIdentityProvider) -> Settings:
    return settings.model_copy(update={"keycloak_url": provider.base_url})


@pytest.fixture
def service_url(service_settings: Settings) -> Iterator[str]:
    server = BackgroundServer()
    server.start(create_app(service_settings))
    yield server.base_url
    server.stop()


def keycloak_client(
    provider: DevIdentityProvider, client_id: str, secret: str | None = None
) -> KeycloakOpenID:
    return KeycloakOpenID(
        server_url=provider.base_url,
        realm_name="flyswatter",
        client_id=client_id,
        client_secret_key=secret,
        timeout=5,
    )


def service_token(provider: DevIdentityProvider) -> str:
    openid = keycloak_client(provider, "flyswatter-service", SERVICE_SECRET)
    return str(openid.token(grant_type="client_credentials")["access_token"])


def user_tokens(provider: DevIdentityProvider, username: str) -> dict[str, Any]:
    return keycloak_client(provider, "flyswatter-cli").token(username, DEMO_PASSWORD)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str, provider: DevIdentityProvider) -> dict[str, Any]:
    return keycloak_client(provider, "flyswatter-api").decode_token(token, validate=False)


def create_project_and_issue(service_url: str, token: str, key: str) -> dict[str, Any]:
    with httpx.Client(base_url=service_url, headers=bearer(token), timeout=10) as api:
        project = api.post("/api/v1/projects", json={"key": key, "name": f"Project {key}"})
        assert project.status_code == 201, project.text
        issue = api.post(f"/api/v1/projects/{key}/issues", json={"title": "It crashes"})
        assert issue.status_code == 201, issue.text
        return dict(issue.json())


class TestRealClients:
    def test_client_credentials_token_creates_a_project_and_an_issue(
        self, provider: DevIdentityProvider, service_url: str
    ) -> None:
        issue = create_project_and_issue(service_url, service_token(provider), "SVC")
        assert issue["key"] == "SVC-1"
        assert issue["reporter"]["username"] == "service-account-flyswatter-service"
        assert issue["reporter"]["is_service_account"] is True

    def test_password_grant_user_creates_a_project_and_an_issue(
        self, provider: DevIdentityProvider, service_url: str
    ) -> None:
        token = user_tokens(provider, "maria")["access_token"]
        issue = create_project_and_issue(service_url, token, "MARIA")
        assert issue["reporter"]["username"] == "maria"
        assert issue["reporter"]["is_service_account"] is False

    def test_client_without_the_write_scope_is_refused_with_403(
        self, provider: DevIdentityProvider, service_url: str
    ) -> None:
        openid = keycloak_client(provider, "flyswatter-readonly-service", READONLY_SECRET)
        token = openid.token(grant_type="client_credentials")["access_token"]
        with httpx.Client(base_url=service_url, headers=bearer(token), timeout=10) as api:
            assert api.get("/api/v1/projects").status_code == 200
            refused = api.post("/api/v1/projects", json={"key": "RO", "name": "Read only"})
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
        assert refused.json()["required_scopes"] == ["projects:write"]

    def test_client_cannot_ask_for_a_scope_it_was_not_given(
        self, provider: DevIdentityProvider
    ) -> None:
        openid = keycloak_client(provider, "flyswatter-readonly-service", READONLY_SECRET)
        with pytest.raises(KeycloakPostError) as refused:
            openid.token(grant_type="client_credentials", scope="openid issues:write")
        assert refused.value.response_code == 400
        assert b"invalid_scope" in refused.value.response_body

    def test_refresh_grant_gives_a_token_the_service_accepts(
        self, provider: DevIdentityProvider, service_url: str
    ) -> None:
        openid = keycloak_client(provider, "flyswatter-cli")
        first = openid.token("rita", DEMO_PASSWORD)
        renewed = openid.refresh_token(first["refresh_token"])
        assert renewed["access_token"] != first["access_token"]
        me = httpx.get(f"{service_url}/api/v1/users/me", headers=bearer(renewed["access_token"]))
        assert me.status_code == 200
        assert me.json()["username"] == "rita"

    def test_refresh_token_of_another_client_is_refused(
        self, provider: DevIdentityProvider
    ) -> None:
        refresh = user_tokens(provider, "rita")["refresh_token"]
        web = keycloak_client(provider, "flyswatter-web")
        with pytest.raises(KeycloakPostError) as refused:
            web.refresh_token(refresh)
        assert refused.value.response_code == 400
        assert b"invalid_grant" in refused.value.response_body

    @pytest.mark.parametrize("kind", ["refresh_token", "id_token"])
    def test_refresh_and_id_tokens_do_not_open_the_api(
        self, provider: DevIdentityProvider, service_url: str, kind: str
    ) -> None:
        token = user_tokens(provider, "maria")[kind]
        response = httpx.get(f"{service_url}/api/v1/users/me", headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


class TestKeycloakCompatibility:
    def test_wrong_client_secret_is_a_keycloak_style_401(
        self, provider: DevIdentityProvider
    ) -> None:
        response = httpx.post(
            provider.token_endpoint,
            data={"grant_type": "client_credentials"},
            auth=("flyswatter-service", "not-the-secret"),
        )
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized_client"
        with pytest.raises(KeycloakAuthenticationError):
            keycloak_client(provider, "flyswatter-service", "wrong").token(
                grant_type="client_credentials"
            )

    def test_wrong_password_is_invalid_grant_401(self, provider: DevIdentityProvider) -> None:
        with pytest.raises(KeycloakAuthenticationError) as refused:
            keycloak_client(provider, "flyswatter-cli").token("maria", "guess")
        assert refused.value.response_code == 401
        assert json.loads(refused.value.response_body) == {
            "error": "invalid_grant",
            "error_description": "Invalid user credentials",
        }

    def test_clients_only_get_the_grants_the_realm_enables(
        self, provider: DevIdentityProvider
    ) -> None:
        # flyswatter-web signs people in through the browser only; no password grant there.
        refused = httpx.post(
            provider.token_endpoint,
            data={
                "grant_type": "password",
                "client_id": "flyswatter-web",
                "username": "maria",
                "password": DEMO_PASSWORD,
            },
        )
        assert refused.status_code == 400
        assert refused.json()["error"] == "unauthorized_client"
        unknown = httpx.post(
            provider.token_endpoint,
            data={"grant_type": "implicit", "client_id": "flyswatter-cli"},
        )
        assert unknown.json()["error"] == "unsupported_grant_type"
        resource_server = httpx.post(
            provider.token_endpoint,
            data={"grant_type": "client_credentials", "client_id": "flyswatter-api"},
        )
        assert resource_server.status_code == 401

    def test_tokens_are_shaped_like_keycloaks(self, provider: DevIdentityProvider) -> None:
        tokens = user_tokens(provider, "admin")
        access = claims_of(tokens["access_token"], provider)
        assert access["iss"] == provider.issuer
        # As Keycloak's: the audience mapper's client, then the built-in account client.
        assert access["aud"] == ["flyswatter-api", "account"]
        assert access["azp"] == "flyswatter-cli"
        assert access["typ"] == "Bearer"
        assert access["sub"] == provider.realm.users["admin"]["id"]
        assert access["preferred_username"] == "admin"
        assert access["email"] == "admin@flyswatter.example"
        assert access["name"] == "Ada Admin"
        assert set(access["scope"].split()) >= {"openid", "projects:write", "issues:write"}
        assert "flyswatter-admin" in access["realm_access"]["roles"]
        assert access["exp"] - access["iat"] == tokens["expires_in"] == 300
        assert access["jti"]
        assert claims_of(tokens["id_token"], provider)["typ"] == "ID"
        assert claims_of(tokens["id_token"], provider)["aud"] == "flyswatter-cli"
        refresh_header = json.loads(
            _b64decode(tokens["refresh_token"].split(".")[0])
        )  # signed with a key that never leaves the provider, as Keycloak does
        assert refresh_header["alg"] == "HS512"

        service = claims_of(service_token(provider), provider)
        assert service["preferred_username"] == "service-account-flyswatter-service"
        assert service["client_id"] == service["azp"] == "flyswatter-service"
        assert service["sub"] == provider.realm.service_account("flyswatter-service").id

    def test_discovery_and_certs_answer_at_keycloaks_paths(
        self, provider: DevIdentityProvider
    ) -> None:
        openid = keycloak_client(provider, "flyswatter-api")
        discovery = openid.well_known()
        assert discovery["issuer"] == provider.issuer
        assert discovery["token_endpoint"] == provider.token_endpoint
        assert discovery["jwks_uri"].endswith("/realms/flyswatter/protocol/openid-connect/certs")
        keys = openid.certs()["keys"]
        assert [key["kid"] for key in keys] == [provider.signing_key["kid"]]
        assert all("d" not in key for key in keys), "private key material published"

    def test_provider_refuses_to_bind_beyond_loopback(self) -> None:
        with pytest.raises(ValueError, match="loopback"):
            BackgroundServer(host="0.0.0.0")  # noqa: S104 - the refusal under test

    def test_serve_never_imports_the_development_provider(self, project_root: Path) -> None:
        code = (
            "import sys, flyswatter.cli, flyswatter.app; "
            "flyswatter.app.create_app(flyswatter.config.Settings(keycloak_url='http://x.test')); "
            "print(any(name.startswith('flyswatter.dev') for name in sys.modules))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert result.stdout.strip() == "False"


class TestNewcomer:
    def test_demo_seed_gives_each_demo_user_its_role_and_can_run_twice(
        self, provider: DevIdentityProvider, service_settings: Settings
    ) -> None:
        asyncio.run(seed_demo_project(service_settings, provider.realm))
        asyncio.run(seed_demo_project(service_settings, provider.realm))
        engine = sa.create_engine(service_settings.sync_database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    sa.text(
                        'SELECT u.username, m.role FROM project_member m JOIN "user" u '
                        "ON u.id = m.user_id JOIN project p ON p.id = m.project_id "
                        "WHERE p.key = :key"
                    ),
                    {"key": DEMO_PROJECT_KEY},
                ).all()
        finally:
            engine.dispose()
        assert dict(rows) == {name: role.value for name, role in DEMO_ROLES.items()}

    def test_printed_commands_get_a_token_and_create_a_project_and_issues(
        self, provider: DevIdentityProvider, service_settings: Settings, service_url: str
    ) -> None:
        system_program("curl", "curl")
        asyncio.run(seed_demo_project(service_settings, provider.realm))
        script = quickstart(service_url, provider)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        keys = re.findall(r'"key":"([A-Z0-9-]+)"', result.stdout)
        assert keys == ["MINE", "MINE-1", "DEMO-1"]

    def test_readme_service_example_files_an_issue(
        self,
        provider: DevIdentityProvider,
        service_settings: Settings,
        service_url: str,
        project_root: Path,
    ) -> None:
        asyncio.run(seed_demo_project(service_settings, provider.realm))
        readme = (project_root / "README.md").read_text(encoding="utf-8")
        blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
        example = next(block for block in blocks if "KeycloakOpenID" in block)
        env = {
            **os.environ,
            "KEYCLOAK_URL": provider.base_url,
            "FLYSWATTER_URL": service_url,
            "FLYSWATTER_SERVICE_CLIENT_SECRET": SERVICE_SECRET,
        }
        result = subprocess.run(
            [sys.executable, "-c", example], capture_output=True, text=True, env=env, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{DEMO_PROJECT_KEY}-1"


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
