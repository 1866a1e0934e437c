"""Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

Signed with the specification's reference library, so what is sent is exactly what its
receivers verify. During a secret rotation both secrets sign: the header then carries two
signatures and a receiver holding either secret accepts the message.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks import Webhook as StandardWebhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, in the specification's ``whsec_`` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_secrets(
    secret: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its overlap."""
    if previous and previous_expires_at is not None and previous_expires_at > now:
        return [secret, previous]
    return [secret]


def signed_headers(
    secrets_in_use: list[str], message_id: str, timestamp: datetime, body: str
) -> dict[str, str]:
    signatures = " ".join(
        StandardWebhook(secret).sign(message_id, timestamp, body) for secret in secrets_in_use
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    }
