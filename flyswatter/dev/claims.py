"""The claims of the tokens the development identity provider issues, as Keycloak's
protocol mappers (in the realm file) shape them, and what a token is about (``Grant``)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flyswatter.dev.realm import DevRealm, Identity

# Keycloak gives every realm a built-in ``account`` client and puts these of its roles into
# the realm's default role; they show in tokens as resource_access.account and aud "account".
ACCOUNT_CLIENT = "account"
ACCOUNT_DEFAULT_ROLES = ("manage-account", "manage-account-links", "view-profile")


def mapper_flag(mapper: Mapping[str, Any], name: str) -> bool:
    return str(mapper.get("config", {}).get(name, "false")).lower() == "true"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mappers(realm: DevRealm, client: Mapping[str, Any], scopes: list[str]) -> list[dict[str, Any]]:
    mappers = list(client.get("protocolMappers", []))
    for name in scopes:
        mappers.extend(realm.client_scopes[name].get("protocolMappers", []))
    return mappers


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user's session (Keycloak's ``sid``), which refresh tokens continue."""

    id: str
    user_id: str
    # Set by an interactive login only: Keycloak's password grant leaves ``auth_time`` out.
    auth_time: int | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token response is about: who, which client scopes, in which session."""

    identity: Identity
    scopes: list[str]
    openid: bool
    session: Session | None = None
    nonce: str | None = None
    client_host: str = "127.0.0.1"


def access_claims(
    realm: DevRealm, issuer: str, client: Mapping[str, Any], grant: Grant, now: int
) -> dict[str, Any]:
    client_id = str(client["clientId"])
    claims: dict[str, Any] = {
        "exp": now + realm.access_token_lifespan,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "iss": issuer,
        "typ": "Bearer",
        "azp": client_id,
    }
    if grant.session is not None:
        claims["sid"] = grant.session.id
    audiences: list[str] = []
    resolved: list[str] = []
    for mapper in mappers(realm, client, grant.scopes):
        kind = mapper.get("protocolMapper")
        config = mapper.get("config", {})
        if not mapper_flag(mapper, "access.token.claim"):
            continue
        if kind == "oidc-sub-mapper":
            claims["sub"] = grant.identity.id
        elif kind == "oidc-audience-mapper" and config.get("included.client.audience"):
            audiences.append(config["included.client.audience"])
        elif kind == "oidc-usermodel-realm-role-mapper":
            claims["realm_access"] = {"roles": list(grant.identity.realm_roles)}
        elif kind == "oidc-usermodel-client-role-mapper" and client.get("fullScopeAllowed", True):
            if realm.default_role in grant.identity.realm_roles:
                claims["resource_access"] = {ACCOUNT_CLIENT: {"roles": list(ACCOUNT_DEFAULT_ROLES)}}
        elif kind == "oidc-audience-resolve-mapper":
            # Keycloak names every client whose roles the token carries; here: account.
            if realm.default_role in grant.identity.realm_roles:
                resolved.append(ACCOUNT_CLIENT)
        elif kind == "oidc-acr-mapper":
            claims["acr"] = "1"
        elif kind == "oidc-allowed-origins-mapper" and client.get("webOrigins"):
            claims["allowed-origins"] = list(client["webOrigins"])
        else:
            claims.update(_user_claim(mapper, grant))
    unique = list(dict.fromkeys(audiences + resolved))
    if unique:
        claims["aud"] = unique[0] if len(unique) == 1 else unique
    claims["scope"] = " ".join(["openid"] * grant.openid + token_scope_names(realm, grant.scopes))
    return claims


def _user_claim(mapper: Mapping[str, Any], grant: Grant) -> dict[str, Any]:
    kind = mapper.get("protocolMapper")
    config = mapper.get("config", {})
    identity = grant.identity
    claim = config.get("claim.name")
    if kind == "oidc-full-name-mapper":
        name = " ".join(part for part in (identity.first_name, identity.last_name) if part)
        return {"name": name} if name else {}
    if kind == "oidc-usersessionmodel-note-mapper" and claim:
        note = _session_note(grant, str(config.get("user.session.note")))
        return {} if note is None else {str(claim): note}
    if kind not in ("oidc-usermodel-attribute-mapper", "oidc-usermodel-property-mapper"):
        return {}
    attribute = config.get("user.attribute")
    values: dict[str, Any] = {
        "username": identity.username,
        "email": identity.email,
        "emailVerified": identity.email_verified,
        "firstName": identity.first_name,
        "lastName": identity.last_name,
    }
    value = values.get(str(attribute))
    if value is None or not claim:
        return {}
    return {str(claim): value}


def _session_note(grant: Grant, note: str) -> str | int | None:
    """The user-session notes Keycloak keeps: the login time, and for client credentials
    the client and the address it called from."""
    if note == "AUTH_TIME":
        return grant.session.auth_time if grant.session is not None else None
    if grant.identity.service_account_client_id is None:
        return None
    notes = {
        "client_id": grant.identity.service_account_client_id,
        "clientHost": grant.client_host,
        "clientAddress": grant.client_host,
    }
    return notes.get(note)


def token_scope_names(realm: DevRealm, scopes: list[str]) -> list[str]:
    return [
        name
        for name in scopes
        if realm.client_scopes[name].get("attributes", {}).get("include.in.token.scope", "true")
        == "true"
    ]


def id_claims(
    client_id: str, grant: Grant, access: Mapping[str, Any], access_token: str
) -> dict[str, Any]:
    digest = hashlib.sha256(access_token.encode()).digest()
    claims = {
        key: access[key]
        for key in (
            "exp",
            "iat",
            "iss",
            "sub",
            "sid",
            "auth_time",
            "preferred_username",
            "email",
            "email_verified",
            "name",
            "given_name",
            "family_name",
            "acr",
            "client_id",
            "clientHost",
            "clientAddress",
        )
        if key in access
    }
    claims.update(
        {
            "jti": str(uuid.uuid4()),
            "aud": client_id,
            "typ": "ID",
            "azp": client_id,
            "at_hash": b64url(digest[: len(digest) // 2]),
        }
    )
    if grant.nonce is not None:
        claims["nonce"] = grant.nonce
    return claims
