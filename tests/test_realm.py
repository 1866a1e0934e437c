"""The realm import (keycloak/flyswatter-realm.json) agrees with the code and with Keycloak.

Keycloak's import rejects unknown fields and silently drops client scopes that are not
declared, so a typo here shows up only as a token without ``sub`` or without a scope. These
tests read the file as Keycloak would and check it against the routes' declared scopes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from flyswatter.app import create_app
from flyswatter.auth.scopes import ADMIN_ROLE, Scope
from flyswatter.config import Settings
from flyswatter.dev.realm import REALM_FILE, load_realm, resolve_placeholders

# Field names of Keycloak's representations (org.keycloak.representations.idm), as the
# admin REST API documents them: RealmRepresentation (the fields a realm file uses), ...
REALM_FIELDS = {
    "id", "realm", "displayName", "displayNameHtml", "notBefore", "defaultSignatureAlgorithm",
    "revokeRefreshToken", "refreshTokenMaxReuse", "accessTokenLifespan",
    "accessTokenLifespanForImplicitFlow", "ssoSessionIdleTimeout", "ssoSessionMaxLifespan",
    "ssoSessionIdleTimeoutRememberMe", "ssoSessionMaxLifespanRememberMe",
    "offlineSessionIdleTimeout", "offlineSessionMaxLifespanEnabled", "offlineSessionMaxLifespan",
    "clientSessionIdleTimeout", "clientSessionMaxLifespan", "clientOfflineSessionIdleTimeout",
    "clientOfflineSessionMaxLifespan", "accessCodeLifespan", "accessCodeLifespanUserAction",
    "accessCodeLifespanLogin", "actionTokenGeneratedByAdminLifespan",
    "actionTokenGeneratedByUserLifespan", "oauth2DeviceCodeLifespan",
    "oauth2DevicePollingInterval", "enabled", "sslRequired", "registrationAllowed",
    "registrationEmailAsUsername", "rememberMe", "verifyEmail", "loginWithEmailAllowed",
    "duplicateEmailsAllowed", "resetPasswordAllowed", "editUsernameAllowed",
    "bruteForceProtected", "permanentLockout", "maxFailureWaitSeconds",
    "minimumQuickLoginWaitSeconds", "waitIncrementSeconds", "quickLoginCheckMilliSeconds",
    "maxDeltaTimeSeconds", "failureFactor", "roles", "groups", "defaultRole", "defaultGroups",
    "passwordPolicy", "otpPolicyType", "otpPolicyAlgorithm", "otpPolicyInitialCounter",
    "otpPolicyDigits", "otpPolicyLookAheadWindow", "otpPolicyPeriod", "users",
    "federatedUsers", "scopeMappings", "clientScopeMappings", "clients", "clientScopes",
    "defaultDefaultClientScopes", "defaultOptionalClientScopes", "browserSecurityHeaders",
    "smtpServer", "loginTheme", "accountTheme", "adminTheme", "emailTheme", "eventsEnabled",
    "eventsExpiration", "eventsListeners", "enabledEventTypes", "adminEventsEnabled",
    "adminEventsDetailsEnabled", "identityProviders", "identityProviderMappers",
    "protocolMappers", "components", "internationalizationEnabled", "supportedLocales",
    "defaultLocale", "authenticationFlows", "authenticatorConfig", "requiredActions",
    "browserFlow", "registrationFlow", "directGrantFlow", "resetCredentialsFlow",
    "clientAuthenticationFlow", "dockerAuthenticationFlow", "attributes", "keycloakVersion",
    "userManagedAccessAllowed", "organizationsEnabled", "verifiableCredentialsEnabled",
    "adminPermissionsEnabled",
}  # fmt: skip
CLIENT_FIELDS = {
    "id", "clientId", "name", "description", "type", "rootUrl", "adminUrl", "baseUrl",
    "surrogateAuthRequired", "enabled", "alwaysDisplayInConsole", "clientAuthenticatorType",
    "secret", "registrationAccessToken", "redirectUris", "webOrigins", "notBefore",
    "bearerOnly", "consentRequired", "standardFlowEnabled", "implicitFlowEnabled",
    "directAccessGrantsEnabled", "serviceAccountsEnabled", "authorizationServicesEnabled",
    "publicClient", "frontchannelLogout", "protocol", "attributes",
    "authenticationFlowBindingOverrides", "fullScopeAllowed", "nodeReRegistrationTimeout",
    "registeredNodes", "protocolMappers", "defaultClientScopes", "optionalClientScopes",
    "authorizationSettings", "access", "origin",
}  # fmt: skip
CLIENT_SCOPE_FIELDS = {"id", "name", "description", "protocol", "attributes", "protocolMappers"}
PROTOCOL_MAPPER_FIELDS = {"id", "name", "protocol", "protocolMapper", "config"}
USER_FIELDS = {
    "id", "username", "firstName", "lastName", "email", "emailVerified", "attributes",
    "userProfileMetadata", "enabled", "self", "origin", "createdTimestamp", "totp",
    "federationLink", "serviceAccountClientId", "credentials", "disableableCredentialTypes",
    "requiredActions", "federatedIdentities", "realmRoles", "clientRoles", "clientConsents",
    "notBefore", "groups", "access",
}  # fmt: skip
CREDENTIAL_FIELDS = {
    "id", "type", "userLabel", "createdDate", "secretData", "credentialData", "priority",
    "value", "temporary", "federationLink",
}  # fmt: skip
ROLE_FIELDS = {
    "id", "name", "description", "composite", "composites", "clientRole", "containerId",
    "attributes",
}  # fmt: skip
ROLES_FIELDS = {"realm", "client"}
COMPOSITES_FIELDS = {"realm", "client"}

FLYSWATTER_SCOPES = {scope.value for scope in Scope}
BUILT_IN_SCOPES = {"basic", "profile", "email", "roles", "web-origins"}
# Who needs which scopes: SSO users and scripts act with all of them (their project roles
# decide the rest), the example service files issues, the read-only service may only read.
CLIENT_NEEDS = {
    "flyswatter-web": FLYSWATTER_SCOPES,
    "flyswatter-cli": FLYSWATTER_SCOPES,
    "flyswatter-service": FLYSWATTER_SCOPES,
    "flyswatter-readonly-service": {Scope.projects_read.value, Scope.issues_read.value},
}


@pytest.fixture(scope="module")
def raw_realm() -> dict[str, Any]:
    """The file as written, placeholders unresolved."""
    return json.loads(REALM_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    """The file as Keycloak imports it with an empty environment."""
    return load_realm(REALM_FILE, environ={})


def _unknown_fields(node: dict[str, Any], allowed: set[str], where: str) -> list[str]:
    return [f"{where}.{name}" for name in node if name not in allowed]


def _check_mappers(mappers: list[dict[str, Any]], where: str) -> list[str]:
    problems = []
    for mapper in mappers:
        name = f"{where}.protocolMappers[{mapper.get('name')}]"
        problems += _unknown_fields(mapper, PROTOCOL_MAPPER_FIELDS, name)
        problems += [
            f"{name}.config.{key} is not a string"
            for key, value in mapper.get("config", {}).items()
            if not isinstance(value, str)
        ]
    return problems


def _string_map_problems(node: dict[str, Any], where: str) -> list[str]:
    return [
        f"{where}.attributes.{key} is not a string"
        for key, value in node.get("attributes", {}).items()
        if not isinstance(value, str)
    ]


def representation_problems(realm: dict[str, Any]) -> list[str]:
    """Every field the realm file uses that Keycloak's representations do not have."""
    problems = _unknown_fields(realm, REALM_FIELDS, "realm")
    roles = realm.get("roles", {})
    problems += _unknown_fields(roles, ROLES_FIELDS, "roles")
    for role in [*roles.get("realm", []), realm.get("defaultRole", {})]:
        problems += _unknown_fields(role, ROLE_FIELDS, f"role[{role.get('name')}]")
        problems += _unknown_fields(role.get("composites", {}), COMPOSITES_FIELDS, "composites")
    for client in realm.get("clients", []):
        where = f"clients[{client.get('clientId')}]"
        problems += _unknown_fields(client, CLIENT_FIELDS, where)
        problems += _string_map_problems(client, where)
        problems += _check_mappers(client.get("protocolMappers", []), where)
    for scope in realm.get("clientScopes", []):
        where = f"clientScopes[{scope.get('name')}]"
        problems += _unknown_fields(scope, CLIENT_SCOPE_FIELDS, where)
        problems += _string_map_problems(scope, where)
        problems += _check_mappers(scope.get("protocolMappers", []), where)
    for user in realm.get("users", []):
        where = f"users[{user.get('username')}]"
        problems += _unknown_fields(user, USER_FIELDS, where)
        for credential in user.get("credentials", []):
            problems += _unknown_fields(credential, CREDENTIAL_FIELDS, f"{where}.credentials")
    return problems


def required_route_scopes() -> set[str]:
    """Every scope some API route requires, as FastAPI derives it from the routes' dependencies."""
    schema = create_app(Settings(keycloak_url="http://127.0.0.1:9")).openapi()
    return {
        scope
        for operations in schema["paths"].values()
        for operation in operations.values()
        for requirement in operation.get("security", [])
        for scope in requirement.get("keycloak", [])
    }


def test_file_uses_only_fields_of_keycloaks_representations(raw_realm: dict[str, Any]) -> None:
    assert representation_problems(raw_realm) == []


def test_the_field_check_catches_a_misspelt_field() -> None:
    broken = {
        "realm": "x",
        "clients": [{"clientId": "a", "redirectUri": []}],
        "clientScopes": [{"name": "s", "protocolMappers": [{"name": "m", "config": {"a": True}}]}],
    }
    assert representation_problems(broken) == [
        "clients[a].redirectUri",
        "clientScopes[s].protocolMappers[m].config.a is not a string",
    ]


def test_every_scope_a_route_requires_exists_in_the_realm(realm: dict[str, Any]) -> None:
    required = required_route_scopes()
    assert required == FLYSWATTER_SCOPES, "the routes and the Scope enum disagree"
    declared = {scope["name"]: scope for scope in realm["clientScopes"]}
    for name in required:
        assert name in declared, f"client scope {name} is missing from the realm"
        attributes = declared[name]["attributes"]
        assert attributes["include.in.token.scope"] == "true", f"{name} would not reach `scope`"


def test_every_scope_reaches_the_clients_that_need_it(realm: dict[str, Any]) -> None:
    clients = {client["clientId"]: client for client in realm["clients"]}
    for client_id, needs in CLIENT_NEEDS.items():
        default = set(clients[client_id]["defaultClientScopes"])
        assert needs <= default, f"{client_id} lacks {sorted(needs - default)}"
    readonly = clients["flyswatter-readonly-service"]
    grantable = set(readonly["defaultClientScopes"]) | set(readonly["optionalClientScopes"])
    assert not grantable & {Scope.projects_write.value, Scope.issues_write.value}


def test_tokens_for_the_api_carry_its_audience_and_a_subject(realm: dict[str, Any]) -> None:
    scopes = {scope["name"]: scope for scope in realm["clientScopes"]}
    audience_scopes = {
        name
        for name, scope in scopes.items()
        for mapper in scope.get("protocolMappers", [])
        if mapper["protocolMapper"] == "oidc-audience-mapper"
        and mapper["config"].get("included.client.audience") == "flyswatter-api"
        and mapper["config"].get("access.token.claim") == "true"
    }
    assert audience_scopes, "no audience mapper puts flyswatter-api into aud"
    sub_mappers = [m["protocolMapper"] for m in scopes["basic"]["protocolMappers"]]
    assert "oidc-sub-mapper" in sub_mappers, "without basic's sub mapper tokens carry no sub"
    for client in realm["clients"]:
        if client.get("bearerOnly"):
            continue
        default = set(client["defaultClientScopes"])
        assert default & audience_scopes, f"{client['clientId']} tokens would lack the audience"
        assert "basic" in default, f"{client['clientId']} tokens would lack sub"


def test_built_in_scopes_are_declared_because_clientscopes_replaces_them(
    realm: dict[str, Any],
) -> None:
    declared = {scope["name"] for scope in realm["clientScopes"]}
    assert declared >= BUILT_IN_SCOPES
    assert set(realm["defaultDefaultClientScopes"]) >= BUILT_IN_SCOPES
    for client in realm["clients"]:
        every = set(client.get("defaultClientScopes", [])) | set(
            client.get("optionalClientScopes", [])
        )
        assert every <= declared, f"{client['clientId']} names undeclared scopes"


def test_clients_have_the_flows_their_users_need(realm: dict[str, Any]) -> None:
    clients = {client["clientId"]: client for client in realm["clients"]}
    api = clients["flyswatter-api"]
    assert api["bearerOnly"]
    assert not api["standardFlowEnabled"]
    assert not api["directAccessGrantsEnabled"]
    assert not api["serviceAccountsEnabled"]
    web = clients["flyswatter-web"]
    assert web["publicClient"]
    assert web["standardFlowEnabled"]
    assert not web["implicitFlowEnabled"]
    assert not web["directAccessGrantsEnabled"]
    assert web["attributes"]["pkce.code.challenge.method"] == "S256"
    assert web["redirectUris"] == ["http://localhost:8000/docs/oauth2-redirect"]
    assert web["webOrigins"] == ["http://localhost:8000"]
    for client_id in ("flyswatter-service", "flyswatter-readonly-service"):
        service = clients[client_id]
        assert service["serviceAccountsEnabled"]
        assert not service["publicClient"]
        assert not service["standardFlowEnabled"]
        assert not service["directAccessGrantsEnabled"]


def test_secrets_come_from_environment_placeholders(raw_realm: dict[str, Any]) -> None:
    placeholder = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:[^}]+\}$")
    secrets = [c["secret"] for c in raw_realm["clients"] if "secret" in c]
    passwords = [
        credential["value"]
        for user in raw_realm["users"]
        for credential in user.get("credentials", [])
    ]
    assert secrets
    assert passwords
    assert all(placeholder.match(value) for value in secrets + passwords)


def test_placeholders_resolve_as_keycloak_resolves_them() -> None:
    text = '"${FLY_SECRET:dev}" "${FLY_SECRET}" "${env.FLY_SECRET}" "${profileScopeConsentText}"'
    assert resolve_placeholders(text, {}) == (
        '"dev" "${FLY_SECRET}" "${env.FLY_SECRET}" "${profileScopeConsentText}"'
    )
    assert resolve_placeholders(text, {"FLY_SECRET": "s3"}) == (
        '"s3" "s3" "s3" "${profileScopeConsentText}"'
    )


def test_demo_users_make_the_role_matrix_visible(realm: dict[str, Any]) -> None:
    users = {user["username"]: user for user in realm["users"]}
    assert {"admin", "maria", "dev", "rita", "victor"} <= set(users)
    assert ADMIN_ROLE in users["admin"]["realmRoles"]
    assert all(ADMIN_ROLE not in users[name]["realmRoles"] for name in ("maria", "rita"))
    assert ADMIN_ROLE in {role["name"] for role in realm["roles"]["realm"]}
    ids = [user["id"] for user in realm["users"]]
    assert len(set(ids)) == len(ids), "demo users need fixed, distinct ids (they are `sub`)"


def test_compose_mounts_the_folder_keycloak_imports(project_root: Path) -> None:
    assert (project_root / "keycloak" / "flyswatter-realm.json") == REALM_FILE
    assert [path.name for path in (project_root / "keycloak").glob("*.json")] == [
        "flyswatter-realm.json"
    ]
