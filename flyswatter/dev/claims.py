"""The claims of the tokens the development identity provider issues, as Keycloak's
protocol mappers (in the realm file) shape them."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from flyswatter.dev.realm import DevRealm, Identity


def mapper_flag(mapper: Mapping[str, Any], name: str) -> bool:
    return str(mapper.get("config", {}).get(name, "false")).lower() == "true"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mappers(realm: DevRealm, client: Mapping[str, Any], scopes: list[str]) -> list[dict[str, Any]]:
    mappers = list(client.get("protocolMappers", []))
    for name in scopes:
        mappers.extend(realm.client_scopes[name].get("protocolMappers", []))
    return mappers


def access_claims(
    realm: DevRealm,
    issuer: str,
    client: Mapping[str, Any],
    identity: Identity,
    scopes: list[str],
    openid: bool,
    now: int,
    session_id: str,
) -> dict[str, Any]:
    client_id = str(client["clientId"])
    is_service_account = identity.service_account_client_id is not None
    claims: dict[str, Any] = {
        "exp": now + realm.access_token_lifespan,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "iss": issuer,
        "typ": "Bearer",
        "azp": client_id,
    }
    if not is_service_account:
        claims["sid"] = session_id
    audiences: list[str] = []
    for mapper in mappers(realm, client, scopes):
        kind = mapper.get("protocolMapper")
        config = mapper.get("config", {})
        if not mapper_flag(mapper, "access.token.claim"):
            continue
        if kind == "oidc-sub-mapper":
            claims["sub"] = identity.id
        elif kind == "oidc-audience-mapper" and config.get("included.client.audience"):
            audiences.append(config["included.client.audience"])
        elif kind == "oidc-usermodel-realm-role-mapper":
            claims["realm_access"] = {"roles": list(identity.realm_roles)}
        elif kind == "oidc-acr-mapper":
            claims["acr"] = "1"
        elif kind == "oidc-allowed-origins-mapper" and client.get("webOrigins"):
            claims["allowed-origins"] = list(client["webOrigins"])
        else:
            claims.update(user_claim(mapper, identity, now))
    if audiences:
        unique = list(dict.fromkeys(audiences))
        claims["aud"] = unique[0] if len(unique) == 1 else unique
    if is_service_account:
        claims["client_id"] = client_id
    claims["scope"] = " ".join(["openid"] * openid + token_scope_names(realm, scopes))
    return claims


def user_claim(mapper: Mapping[str, Any], identity: Identity, now: int) -> dict[str, Any]:
    kind = mapper.get("protocolMapper")
    config = mapper.get("config", {})
    if kind == "oidc-full-name-mapper":
        name = " ".join(part for part in (identity.first_name, identity.last_name) if part)
        return {"name": name} if name else {}
    if kind == "oidc-usersessionmodel-note-mapper" and config.get("claim.name") == "auth_time":
        return {} if identity.service_account_client_id else {"auth_time": now}
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
    claim = config.get("claim.name")
    if value is None or not claim:
        return {}
    return {str(claim): value}


def token_scope_names(realm: DevRealm, scopes: list[str]) -> list[str]:
    return [
        name
        for name in scopes
        if realm.client_scopes[name].get("attributes", {}).get("include.in.token.scope", "true")
        == "true"
    ]


def id_claims(
    client_id: str,
    identity: Identity,
    access: Mapping[str, Any],
    access_token: str,
    now: int,
    session_id: str,
) -> dict[str, Any]:
    digest = hashlib.sha256(access_token.encode()).digest()
    claims = {
        key: access[key]
        for key in (
            "exp",
            "iat",
            "iss",
            "sub",
            "preferred_username",
            "email",
            "email_verified",
            "name",
            "given_name",
            "family_name",
            "auth_time",
            "acr",
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
    if identity.service_account_client_id is None:
        claims["sid"] = session_id
    return claims
