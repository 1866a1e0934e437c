"""The mirror of Keycloak identities that Flyswatter has seen."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow


class UserIdentity(SQLModel):
    """What anyone who sees a user's work sees of them."""

    username: str = Field(max_length=255, index=True)
    name: str | None = Field(default=None, max_length=255)
    is_service_account: bool = False


class UserBase(UserIdentity):
    email: str | None = Field(default=None, max_length=320)
    # For service accounts: the Keycloak client whose credentials the service uses.
    client_id: str | None = Field(default=None, max_length=255)


class User(UserBase, table=True):
    # Keycloak's ``sub``; Flyswatter never invents user ids and never stores passwords.
    id: str = Field(primary_key=True, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class UserSummary(UserIdentity):
    """A user as issues, comments and history name them."""

    id: str


class UserPublic(UserBase):
    id: str
    created_at: datetime


class UserMe(UserPublic):
    """The caller, with what its token grants in this request."""

    scopes: list[str]
    realm_roles: list[str]
    is_admin: bool
