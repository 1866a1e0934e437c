"""Against a real Keycloak: the realm as imported, and every sign-in flow end to end.

``flyswatter serve`` runs as in production (its issuer, audience and JWKS from Keycloak), on a
PostgreSQL database of its own. The Keycloak comes from ``tests/support/keycloak_server.py``:
CI starts it; by hand run ``.venv/bin/python -m tests.support.keycloak_server`` and export the
URL it prints.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import keycloak_server
from tests.support.keycloak_flows import (
    DEMO_USERS,
    READONLY_SECRET,
    SERVICE_SECRET,
    authorization_code,
    bearer,
    client_credentials,
    password_grant,
    refresh_grant,
)
from tests.support.servers import ServedFlyswatter, scratch_database

KEYCLOAK_URL = os.environ.get(keycloak_server.URL_ENV)
if not KEYCLOAK_URL:
    pytest.skip(
        f"needs a Keycloak: run `.venv/bin/python -m tests.support.keycloak_server` and set "
        f"{keycloak_server.URL_ENV} to the URL it prints",
        allow_module_level=True,
    )

from keycloak import KeycloakAdmin  # noqa: E402 - only with a Keycloak to talk to

pytestmark = pytest.mark.keycloak

ISSUER = f"{KEYCLOAK_URL}/realms/{keycloak_server.REALM}"
# The users and roles README.md ("Authentication with Keycloak") promises.
README_REALM_ADMINS = {"admin"}
ROLE = "flyswatter-admin"
OTHER_CLIENT = "flyswatter-test-other-app"
OTHER_SECRET = "other-app-secret"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def header_of(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


@pytest.fixture(scope="module")
def keycloak_url() -> str:
    assert KEYCLOAK_URL is not None
    assert keycloak_server.realm_is_served(KEYCLOAK_URL), (
        f"{keycloak_server.URL_ENV}={KEYCLOAK_URL} does not serve the {keycloak_server.REALM} realm"
    )
    return KEYCLOAK_URL


@pytest.fixture(scope="module")
def admin(keycloak_url: str) -> KeycloakAdmin:
    return KeycloakAdmin(
        server_url=keycloak_url,
        username=keycloak_server.ADMIN_USERNAME,
        password=keycloak_server.admin_password(),
        realm_name=keycloak_server.REALM,
        user_realm_name="master",
        timeout=30,
    )


@pytest.fixture(scope="module")
def clients(admin: KeycloakAdmin) -> dict[str, dict[str, Any]]:
    return {client["clientId"]: client for client in admin.get_clients()}


@pytest.fixture(scope="module")
def app_url(clients: dict[str, dict[str, Any]]) -> str:
    """Where Swagger UI must run: the base URL the realm import resolved for flyswatter-web."""
    (redirect_uri,) = clients["flyswatter-web"]["redirectUris"]
    assert redirect_uri.endswith("/docs/oauth2-redirect"), redirect_uri
    return redirect_uri.removesuffix("/docs/oauth2-redirect")


@pytest.fixture(scope="module")
def served(
    keycloak_url: str,
    app_url: str,
    postgres_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServedFlyswatter]:
    """``flyswatter serve`` with a production configuration pointing at Keycloak."""
    port = urlsplit(app_url).port
    assert port is not None
    with scratch_database(postgres_url) as database_url:
        service = ServedFlyswatter(
            database_url=database_url,
            keycloak_url=keycloak_url,
            log_path=tmp_path_factory.mktemp("serve") / "serve.log",
            redis_url=redis_url,
            workers=1,
            port=port,
            # Key rotation below waits this long between refetches.
            jwks_refresh_min_interval_seconds="1",
        )
        with service:
            yield service


@pytest.fixture(scope="module")
def api(served: ServedFlyswatter) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        yield client


def service_token(keycloak_url: str, client_id: str = "flyswatter-service") -> str:
    secret = SERVICE_SECRET if client_id == "flyswatter-service" else READONLY_SECRET
    return str(client_credentials(keycloak_url, client_id, secret)["access_token"])


class TestRealmImport:
    def test_import_logged_no_warning(self) -> None:
        log = Path(os.environ.get(keycloak_server.LOG_ENV, keycloak_server.DEFAULT_LOG))
        assert log.exists(), f"set {keycloak_server.LOG_ENV} to the Keycloak server's log"
        text = log.read_text(errors="replace")
        start = text.rfind("Importing from directory")
        end = text.find("Import finished successfully", start)
        assert start >= 0, "the log shows no realm import"
        assert end > start, "the realm import did not finish"
        complaints = [
            line
            for line in text[start:end].splitlines()
            if re.search(r"\b(WARN|ERROR)\b|Unrecognized field|unknown", line, re.IGNORECASE)
        ]
        assert not complaints, complaints

    def test_clients_have_the_flows_the_readme_describes(
        self, clients: dict[str, dict[str, Any]], app_url: str
    ) -> None:
        api, web, cli = (
            clients["flyswatter-api"],
            clients["flyswatter-web"],
            clients["flyswatter-cli"],
        )
        assert api["bearerOnly"] is True
        assert web["publicClient"] is True
        assert web["standardFlowEnabled"] is True
        assert web["attributes"]["pkce.code.challenge.method"] == "S256"
        assert web["redirectUris"] == [f"{app_url}/docs/oauth2-redirect"]
        assert web["webOrigins"] == [app_url]
        assert cli["publicClient"] is True
        assert cli["directAccessGrantsEnabled"] is True
        for name in ("flyswatter-service", "flyswatter-readonly-service"):
            service = clients[name]
            assert service["publicClient"] is False
            assert service["serviceAccountsEnabled"] is True
            assert service["directAccessGrantsEnabled"] is False

    def test_client_scopes_and_the_audience_mapper_exist(
        self, admin: KeycloakAdmin, clients: dict[str, dict[str, Any]]
    ) -> None:
        scopes = {scope["name"]: scope for scope in admin.get_client_scopes()}
        expected = {"basic", "profile", "email", "roles", "web-origins", "acr"}
        expected |= {"projects:read", "projects:write", "issues:read", "issues:write"}
        assert expected | {"flyswatter-audience"} <= set(scopes)
        (mapper,) = admin.get_mappers_from_client_scope(scopes["flyswatter-audience"]["id"])
        assert mapper["protocolMapper"] == "oidc-audience-mapper"
        assert mapper["config"]["included.client.audience"] == "flyswatter-api"
        assert mapper["config"]["access.token.claim"] == "true"
        readonly = admin.get_client_default_client_scopes(
            clients["flyswatter-readonly-service"]["id"]
        )
        granted = {scope["name"] for scope in readonly}
        assert {"projects:read", "issues:read", "flyswatter-audience"} <= granted
        assert not {"projects:write", "issues:write"} & granted

    def test_demo_users_and_realm_roles_exist(self, admin: KeycloakAdmin) -> None:
        assert ROLE in {role["name"] for role in admin.get_realm_roles()}
        users = {user["username"]: user for user in admin.get_users({"briefRepresentation": False})}
        assert set(DEMO_USERS) <= set(users)
        for username in DEMO_USERS:
            roles = {role["name"] for role in admin.get_realm_roles_of_user(users[username]["id"])}
            assert (ROLE in roles) == (username in README_REALM_ADMINS), username

    def test_service_accounts_belong_to_their_clients(
        self, admin: KeycloakAdmin, clients: dict[str, dict[str, Any]]
    ) -> None:
        for name in ("flyswatter-service", "flyswatter-readonly-service"):
            account = admin.get_client_service_account_user(clients[name]["id"])
            assert account["username"] == f"service-account-{name}"


class TestServiceAccounts:
    def test_service_files_an_issue_and_is_recognised_as_a_service(
        self, keycloak_url: str, api: httpx.Client
    ) -> None:
        headers = bearer(service_token(keycloak_url))
        me = api.get("/api/v1/users/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["is_service_account"] is True
        assert me.json()["client_id"] == "flyswatter-service"
        assert me.json()["username"] == "service-account-flyswatter-service"
        project = api.post("/api/v1/projects", headers=headers, json={"key": "SVC", "name": "S"})
        assert project.status_code == 201, project.text
        issue = api.post("/api/v1/projects/SVC/issues", headers=headers, json={"title": "Boom"})
        assert issue.status_code == 201, issue.text
        activity = api.get(f"/api/v1/issues/{issue.json()['key']}/activity", headers=headers)
        assert activity.status_code == 200, activity.text
        first = activity.json()["items"][0]
        assert first["actor"]["is_service_account"] is True
        assert first["client_id"] == "flyswatter-service"

    def test_readonly_service_reads_and_is_refused_writes_with_insufficient_scope(
        self, keycloak_url: str, api: httpx.Client
    ) -> None:
        headers = bearer(service_token(keycloak_url, "flyswatter-readonly-service"))
        assert api.get("/api/v1/projects", headers=headers).status_code == 200
        write = api.post("/api/v1/projects", headers=headers, json={"key": "RO", "name": "R"})
        assert write.status_code == 403, write.text
        assert 'error="insufficient_scope"' in write.headers["www-authenticate"]


class TestPeople:
    @pytest.mark.parametrize("username", DEMO_USERS)
    def test_password_grant_signs_in_each_demo_user_with_the_readme_roles(
        self, keycloak_url: str, api: httpx.Client, username: str
    ) -> None:
        token = password_grant(keycloak_url, username)["access_token"]
        me = api.get("/api/v1/users/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["username"] == username
        assert body["is_service_account"] is False
        assert body["is_admin"] is (username in README_REALM_ADMINS)
        assert {"projects:read", "projects:write", "issues:read", "issues:write"} <= set(
            body["scopes"]
        )

    def test_realm_admin_acts_as_maintainer_in_a_project_it_is_not_in(
        self, keycloak_url: str, api: httpx.Client
    ) -> None:
        maria = bearer(password_grant(keycloak_url, "maria")["access_token"])
        created = api.post("/api/v1/projects", headers=maria, json={"key": "MAR", "name": "M"})
        assert created.status_code == 201, created.text
        admin = bearer(password_grant(keycloak_url, "admin")["access_token"])
        renamed = api.patch("/api/v1/projects/MAR", headers=admin, json={"name": "Renamed"})
        assert renamed.status_code == 200, renamed.text
        victor = bearer(password_grant(keycloak_url, "victor")["access_token"])
        assert api.get("/api/v1/projects/MAR", headers=victor).status_code == 404

    def test_authorization_code_with_pkce_signs_maria_in(
        self, keycloak_url: str, api: httpx.Client, app_url: str
    ) -> None:
        tokens = authorization_code(keycloak_url, "maria", f"{app_url}/docs/oauth2-redirect")
        me = api.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "maria"

    def test_refreshed_access_token_is_accepted(self, keycloak_url: str, api: httpx.Client) -> None:
        first = password_grant(keycloak_url, "dev")
        refreshed = refresh_grant(keycloak_url, first["refresh_token"], "flyswatter-cli")
        assert refreshed["access_token"] != first["access_token"]
        me = api.get("/api/v1/users/me", headers=bearer(refreshed["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "dev"


@pytest.fixture(scope="module")
def other_client(admin: KeycloakAdmin) -> Iterator[str]:
    """A client of the same realm whose tokens are not meant for Flyswatter."""
    client_uuid = admin.create_client(
        {
            "clientId": OTHER_CLIENT,
            "publicClient": False,
            "secret": OTHER_SECRET,
            "serviceAccountsEnabled": True,
            "standardFlowEnabled": False,
            "defaultClientScopes": ["basic", "roles", "issues:read", "projects:read"],
        }
    )
    yield OTHER_CLIENT
    admin.delete_client(client_uuid)


class TestRefusedTokens:
    def test_token_of_a_client_without_the_audience_mapper_is_401(
        self, keycloak_url: str, api: httpx.Client, other_client: str
    ) -> None:
        token = client_credentials(keycloak_url, other_client, OTHER_SECRET)["access_token"]
        assert "flyswatter-api" not in (claims_of(token).get("aud") or [])
        refused = api.get("/api/v1/projects", headers=bearer(token))
        assert refused.status_code == 401, refused.text
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    def test_id_and_refresh_tokens_are_401(self, keycloak_url: str, api: httpx.Client) -> None:
        tokens = password_grant(keycloak_url, "rita", scope="openid")
        assert claims_of(tokens["id_token"])["typ"] == "ID"
        assert claims_of(tokens["refresh_token"])["typ"] == "Refresh"
        for name in ("id_token", "refresh_token"):
            refused = api.get("/api/v1/users/me", headers=bearer(tokens[name]))
            assert refused.status_code == 401, (name, refused.text)


def _jwks_refreshes(api: httpx.Client) -> float:
    metrics = api.get("/metrics").text
    found = re.search(
        r'^flyswatter_jwks_refreshes_total\{outcome="success"\} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0.0


def _forged_token_with_unknown_key() -> str:
    """Any token naming a key the service does not know makes it refetch the JWKS."""

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header = segment({"alg": "RS256", "typ": "JWT", "kid": f"unknown-{time.time_ns()}"})
    return f"{header}.{segment({'sub': 'nobody'})}.c2ln"


class TestKeyRotation:
    """A new RS256 key through the admin API, then the old one withdrawn."""

    def test_new_key_is_accepted_after_one_refetch_and_the_disabled_key_is_refused(
        self, keycloak_url: str, admin: KeycloakAdmin, api: httpx.Client
    ) -> None:
        old_token = password_grant(keycloak_url, "maria")["access_token"]
        old_kid = header_of(old_token)["kid"]
        assert api.get("/api/v1/users/me", headers=bearer(old_token)).status_code == 200
        realm_id = admin.get_realm(keycloak_server.REALM)["id"]
        old_provider = next(
            key["providerId"] for key in admin.get_keys()["keys"] if key.get("kid") == old_kid
        )
        new_provider = admin.create_component(
            {
                "name": "rotated-rsa",
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm_id,
                "config": {
                    "priority": ["1000"],
                    "enabled": ["true"],
                    "active": ["true"],
                    "algorithm": ["RS256"],
                    "keySize": ["2048"],
                },
            }
        )
        old_component = admin.get_component(old_provider)
        try:
            before = _jwks_refreshes(api)
            new_token = password_grant(keycloak_url, "maria")["access_token"]
            assert header_of(new_token)["kid"] != old_kid
            assert api.get("/api/v1/users/me", headers=bearer(new_token)).status_code == 200
            second = password_grant(keycloak_url, "dev")["access_token"]
            assert api.get("/api/v1/users/me", headers=bearer(second)).status_code == 200
            assert _jwks_refreshes(api) == before + 1
            # Still published while enabled: tokens it signed keep working.
            assert api.get("/api/v1/users/me", headers=bearer(old_token)).status_code == 200

            disabled = {**old_component["config"], "enabled": ["false"], "active": ["false"]}
            admin.update_component(old_provider, {**old_component, "config": disabled})
            time.sleep(1.1)  # past the service's refetch interval
            forged = api.get("/api/v1/users/me", headers=bearer(_forged_token_with_unknown_key()))
            assert forged.status_code == 401
            assert _jwks_refreshes(api) == before + 2
            refused = api.get("/api/v1/users/me", headers=bearer(old_token))
            assert refused.status_code == 401, refused.text
            assert api.get("/api/v1/users/me", headers=bearer(new_token)).status_code == 200
        finally:
            admin.update_component(old_provider, old_component)
            admin.delete_component(new_provider)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array of " + ("/".join(sorted({_json_type(item) for item in value})) or "nothing")
    if isinstance(value, dict):
        return "object"
    return "null"


def shape(value: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Claim name (dotted into objects) -> JSON type."""
    found = {}
    for name, item in value.items():
        path = f"{prefix}{name}"
        found[path] = _json_type(item)
        if isinstance(item, dict):
            found.update(shape(item, f"{path}."))
    return found


def token_shapes(response: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The shape of the token response's body and of each token in it."""
    shapes = {"response": shape({k: v for k, v in response.items() if not k.endswith("token")})}
    for name in ("access_token", "id_token", "refresh_token"):
        if name in response:
            shapes[name] = shape(claims_of(response[name]))
            shapes[f"{name} header"] = shape(header_of(response[name]))
    return shapes


def differences(keycloak: dict[str, Any], stand_in: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(part, claim, how) for every claim whose presence or JSON type differs."""
    found = set()
    expected, actual = token_shapes(keycloak), token_shapes(stand_in)
    for part in expected.keys() | actual.keys():
        want, got = expected.get(part, {}), actual.get(part, {})
        for claim in want.keys() | got.keys():
            if claim not in got:
                found.add((part, claim, "only in Keycloak's"))
            elif claim not in want:
                found.add((part, claim, "only in the stand-in's"))
            elif want[claim] != got[claim]:
                found.add((part, claim, f"Keycloak: {want[claim]}, stand-in: {got[claim]}"))
    return found


# Every difference between the development identity provider's tokens and Keycloak's, with
# why it stays. An entry that no longer differs fails the test too, so the list stays true.
JUSTIFIED_DIFFERENCES: dict[str, dict[tuple[str, str, str], str]] = {
    "client_credentials": {},
    "password": {},
    "authorization_code": {},
    "refresh_token": {},
}


@pytest.fixture(scope="module")
def stand_in(app_url: str) -> Iterator[str]:
    """The development identity provider, with the realm resolved as Keycloak resolved it."""
    from flyswatter.dev.server import start_dev_identity_provider

    provider, server = start_dev_identity_provider(environ={"FLYSWATTER_BASE_URL": app_url})
    yield provider.base_url
    server.stop()


class TestStandInSpeaksKeycloaksDialect:
    """The same client and user, each grant, from Keycloak and from the stand-in."""

    @staticmethod
    def grant(name: str, base_url: str, app_url: str) -> dict[str, Any]:
        if name == "client_credentials":
            return dict(client_credentials(base_url, "flyswatter-service", SERVICE_SECRET))
        if name == "password":
            return dict(password_grant(base_url, "maria", scope="openid"))
        redirect_uri = f"{app_url}/docs/oauth2-redirect"
        tokens = dict(authorization_code(base_url, "maria", redirect_uri))
        if name == "authorization_code":
            return tokens
        return dict(refresh_grant(base_url, tokens["refresh_token"], "flyswatter-web"))

    @pytest.mark.parametrize("grant_name", list(JUSTIFIED_DIFFERENCES))
    def test_claim_names_and_types_match_keycloaks(
        self, keycloak_url: str, stand_in: str, app_url: str, grant_name: str
    ) -> None:
        keycloak = self.grant(grant_name, keycloak_url, app_url)
        ours = self.grant(grant_name, stand_in, app_url)
        found = differences(keycloak, ours)
        justified = set(JUSTIFIED_DIFFERENCES[grant_name])
        assert found - justified == set(), "differences nobody has justified"
        assert justified - found == set(), "justified differences that are gone"


class TestBrowser:
    def test_maria_signs_in_from_docs_on_keycloaks_page_and_files_an_issue(
        self, keycloak_url: str, api: httpx.Client, app_url: str
    ) -> None:
        from tests.support.browser import sign_in_as_maria_and_file_an_issue

        maria = bearer(password_grant(keycloak_url, "maria")["access_token"])
        created = api.post("/api/v1/projects", headers=maria, json={"key": "WEB", "name": "W"})
        assert created.status_code == 201, created.text
        sign_in_as_maria_and_file_an_issue(app_url, keycloak_url, "WEB")
