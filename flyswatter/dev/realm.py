"""The realm file Keycloak imports, read as the development identity provider needs it:
its placeholders resolved, its clients, scopes and users, the identities tokens name."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REALM_FILE = Path(__file__).resolve().parent.parent.parent / "keycloak" / "flyswatter-realm.json"

_PLACEHOLDER = re.compile(r"\$\{([^{}]+)\}")


def resolve_placeholders(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``${NAME}`` and ``${NAME:default}`` from the environment, as Keycloak's import does.

    A placeholder with neither a value nor a default stays as written (Keycloak leaves its
    own message keys such as ``${profileScopeConsentText}`` alone the same way).
    """
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        key, has_default, default = match.group(1).partition(":")
        for name in (key, key.removeprefix("env.")):
            if name in env:
                return env[name]
        return default if has_default else match.group(0)

    return _PLACEHOLDER.sub(replace, text)


def load_realm(path: Path = REALM_FILE, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    realm = json.loads(resolve_placeholders(path.read_text(encoding="utf-8"), environ))
    if not isinstance(realm, dict) or not realm.get("realm"):
        raise ValueError(f"{path} is not a Keycloak realm representation")
    return realm


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom a token is about: a realm user or a client's service account."""

    id: str
    username: str
    realm_roles: tuple[str, ...]
    email: str | None = None
    email_verified: bool = False
    first_name: str | None = None
    last_name: str | None = None
    service_account_client_id: str | None = None


@dataclass(slots=True)
class DevRealm:
    """The parts of a realm representation the token endpoint needs."""

    name: str
    clients: dict[str, dict[str, Any]]
    client_scopes: dict[str, dict[str, Any]]
    users: dict[str, dict[str, Any]]
    access_token_lifespan: int
    session_idle_timeout: int
    default_role: str
    # Realm role -> the realm roles it contains; tokens list a user's roles with these expanded.
    composites: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_representation(cls, realm: Mapping[str, Any]) -> DevRealm:
        name = str(realm["realm"])
        default_role = realm.get("defaultRole", {}).get("name") or f"default-roles-{name}"
        return cls(
            name=name,
            clients={c["clientId"]: c for c in realm.get("clients", [])},
            client_scopes={s["name"]: s for s in realm.get("clientScopes", [])},
            users={u["username"]: u for u in realm.get("users", [])},
            access_token_lifespan=int(realm.get("accessTokenLifespan", 300)),
            session_idle_timeout=int(realm.get("ssoSessionIdleTimeout", 1800)),
            default_role=default_role,
            composites={
                str(role["name"]): list(role.get("composites", {}).get("realm", []))
                for role in realm.get("roles", {}).get("realm", [])
            },
        )

    def _expanded(self, roles: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        pending = list(roles)
        while pending:
            role = pending.pop(0)
            if role not in seen:
                seen[role] = None
                pending.extend(self.composites.get(role, []))
        return list(seen)

    def identity(self, user: Mapping[str, Any]) -> Identity:
        roles = self._expanded([self.default_role, *user.get("realmRoles", [])])
        return Identity(
            id=str(user["id"]),
            username=str(user["username"]),
            realm_roles=tuple(dict.fromkeys(roles)),
            email=user.get("email"),
            email_verified=bool(user.get("emailVerified", False)),
            first_name=user.get("firstName"),
            last_name=user.get("lastName"),
            service_account_client_id=user.get("serviceAccountClientId"),
        )

    def service_account(self, client_id: str) -> Identity:
        for user in self.users.values():
            if user.get("serviceAccountClientId") == client_id:
                return self.identity(user)
        # Keycloak creates the service account user itself when the file does not list it;
        # a name-derived id keeps ``sub`` stable across restarts of the development provider.
        return Identity(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/service-account/{client_id}")),
            # Keycloak lowers the case of every username, this one included.
            username=f"service-account-{client_id.lower()}",
            realm_roles=tuple(self._expanded([self.default_role])),
            service_account_client_id=client_id,
        )

    def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if str(u.get("id")) == user_id), None)

    def demo_users(self) -> Iterator[Identity]:
        """Every user of the file, service accounts included."""
        for user in self.users.values():
            yield self.identity(user)
