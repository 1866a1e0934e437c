"""Webhook logic for the API: the webhook-or-404 lookup, target checks, the delivery log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio.to_thread
from sqlalchemy import bindparam, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import tables
from flyswatter.errors import UnprocessableEntity
from flyswatter.events.models import Event
from flyswatter.projects.models import Role
from flyswatter.projects.service import ProjectAccess, load_project_access, load_project_row
from flyswatter.webhooks.models import (
    AttemptPublic,
    DeliveryPublic,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookPublic,
    WebhookWithSecret,
)
from flyswatter.webhooks.targets import RefusedTarget, TargetPolicy, check_target

WEBHOOK, DELIVERY, _ATTEMPT, _EVENT = tables(
    Webhook, WebhookDelivery, WebhookDeliveryAttempt, Event
)

# Each column under its public name: a row is a delivery's public shape but for its attempts.
DELIVERY_COLUMNS = (
    DELIVERY.c.id,
    _EVENT.c.uid.label("event_id"),
    _EVENT.c.type.label("event_type"),
    DELIVERY.c.state,
    DELIVERY.c.attempts,
    DELIVERY.c.next_attempt_at,
    DELIVERY.c.created_at,
    DELIVERY.c.updated_at,
)
DELIVERIES = select(*DELIVERY_COLUMNS).join(_EVENT, _EVENT.c.id == DELIVERY.c.event_id)
_ATTEMPTS_OF = (
    select(_ATTEMPT)
    .where(_ATTEMPT.c.delivery_id.in_(bindparam("ids", expanding=True)))
    .order_by(_ATTEMPT.c.delivery_id, _ATTEMPT.c.id)
)


async def check_webhook_url(policy: TargetPolicy, url: str) -> None:
    """422 for a URL the deliverer would refuse; resolving the host runs off the event loop."""
    try:
        await anyio.to_thread.run_sync(check_target, url, policy)
    except RefusedTarget as refused:
        raise UnprocessableEntity(
            f"this webhook URL is refused: {refused.message}", loc=("body", "url")
        ) from None


async def hold_project(session: AsyncSession, access: ProjectAccess) -> ProjectAccess:
    """The project again, its row held shared until the commit (``managing(lock="share")``),
    with the caller's standing read anew: a deletion or a removal that committed while the
    URL was checked shows now (404 or 403), and one that comes after waits for this write."""
    held = await load_project_access(session, access.principal, access.project.key, lock="share")
    held.require(Role.maintainer, "managing webhooks")
    return held


async def load_webhook(
    session: AsyncSession, access: ProjectAccess, webhook_id: int, *, for_update: bool = False
) -> Webhook:
    return await load_project_row(
        session, access, Webhook, webhook_id, noun="webhook", for_update=for_update
    )


def webhook_public(webhook: Webhook) -> WebhookPublic:
    return WebhookPublic.model_validate(webhook)


def webhook_with_secret(webhook: Webhook, secret: str) -> WebhookWithSecret:
    """The answer to a creation or a rotation: the only one that holds the secret."""
    return WebhookWithSecret.model_validate(webhook, update={"secret": secret})


async def public_deliveries(session: AsyncSession, rows: Sequence[Any]) -> list[DeliveryPublic]:
    """Deliveries with every attempt at them: one more statement for the whole page."""
    attempts: dict[int, list[AttemptPublic]] = {}
    if rows:
        connection = await session.connection()
        for attempt in await connection.execute(_ATTEMPTS_OF, {"ids": [row.id for row in rows]}):
            attempts.setdefault(attempt.delivery_id, []).append(
                AttemptPublic.model_validate(attempt, from_attributes=True)
            )
    return [
        DeliveryPublic.model_validate(
            row, from_attributes=True, update={"attempt_log": attempts.get(row.id, [])}
        )
        for row in rows
    ]
