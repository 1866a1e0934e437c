"""Webhook signing secrets at rest: encrypted, never stored as they are.

A signing secret cannot be kept as a hash, as the service signs with it; it is encrypted with
Fernet (cryptography's AES-128-CBC with HMAC-SHA256, so a changed ciphertext is refused, not
decrypted to garbage) under ``FLYSWATTER_WEBHOOK_SECRET_KEYS``. The first key encrypts and
every listed key decrypts (``MultiFernet``): to change keys, put the new one first and keep
the old one until every webhook's secret was rotated. Unset, one key is derived from the
database URL, as the cursor key is: a copy of the database alone does not reveal the
secrets, anyone who also knows the URL could; production sets keys of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, MultiFernet

from flyswatter.config import Settings


def derived_key(database_url: str) -> bytes:
    digest = hmac.new(
        f"database:{database_url}".encode(), b"flyswatter webhook secret key", hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest)


class SecretBox:
    """Seals signing secrets for the database and opens them for signing."""

    def __init__(self, keys: list[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        keys = [key.get_secret_value().encode() for key in settings.webhook_secret_keys]
        return cls(keys or [derived_key(settings.database_url)])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        """The secret; ``cryptography.fernet.InvalidToken`` if no configured key sealed it."""
        return self._fernet.decrypt(sealed.encode()).decode()
