"""``/api/v1/projects/{key}/webhooks``: subscriptions, their delivery log and redelivery."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from sqlalchemy import update

from flyswatter.db import MAX_ROW_ID, SessionDep, utcnow
from flyswatter.errors import NotFound, problem_responses
from flyswatter.http.headers import api_path
from flyswatter.http.pagination import KeysetDep, Page
from flyswatter.projects.service import ProjectAccess, managing
from flyswatter.services import ServicesDep
from flyswatter.webhooks.models import (
    DeliveryPublic,
    DeliveryState,
    SecretRotation,
    Webhook,
    WebhookCreate,
    WebhookPublic,
    WebhookUpdate,
    WebhookWithSecret,
)
from flyswatter.webhooks.service import (
    DELIVERIES,
    DELIVERY,
    WEBHOOK,
    check_webhook_url,
    hold_project,
    load_webhook,
    public_deliveries,
    webhook_public,
    webhook_with_secret,
)
from flyswatter.webhooks.signing import new_secret

router = APIRouter(prefix="/projects/{key}/webhooks", tags=["webhooks"])

ProjectForWebhooks = Annotated[ProjectAccess, Depends(managing("webhooks"))]
# Held shared until the commit, as by the writers of labels and milestones: the project's
# deletion or a maintainer's removal waits for the webhook writes in flight, and the writes
# after it see it. Creating and changing a webhook check its URL first, which resolves the
# host, and take the lock after (``hold_project``): no lock is held over a DNS lookup.
ProjectForWebhookWrites = Annotated[ProjectAccess, Depends(managing("webhooks", lock="share"))]
WebhookIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Webhook id.", examples=[1])]
DeliveryIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Delivery id.", examples=[1])]
AUTH_ERRORS = problem_responses(401, 403, 404, 422, 429)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookWithSecret,
    responses=AUTH_ERRORS,
)
async def create_webhook(
    body: WebhookCreate,
    services: ServicesDep,
    response: Response,
    session: SessionDep,
    access: ProjectForWebhooks,
) -> WebhookWithSecret:
    """Subscribe a URL to the project's events (maintainers). The answer shows the signing
    secret; it is never shown again (rotate it to get a new one)."""
    await check_webhook_url(services.webhook_targets, body.url)
    access = await hold_project(session, access)
    secret = new_secret()
    webhook = Webhook.model_validate(
        body,
        update={
            "project_id": access.project_id,
            "event_types": list(dict.fromkeys(body.event_types)),
            "secret_sealed": services.webhook_secrets.seal(secret),
            "created_by": access.principal.subject,
        },
    )
    session.add(webhook)
    await session.flush()
    # Built before the commit: nothing that can fail runs after it.
    assert webhook.id is not None
    location = api_path("projects", access.project.key, "webhooks", webhook.id)
    created = webhook_with_secret(webhook, secret)
    await session.commit()
    response.headers["Location"] = location
    return created


@router.get("", response_model=Page[WebhookPublic], responses=problem_responses(400) | AUTH_ERRORS)
async def list_webhooks(
    session: SessionDep, access: ProjectForWebhooks, keyset: KeysetDep
) -> Page[WebhookPublic]:
    """The project's webhooks, oldest first (maintainers)."""
    statement = WEBHOOK.select().where(WEBHOOK.c.project_id == access.project_id)
    if (after := keyset.after("id", (int,))) is not None:
        statement = statement.where(WEBHOOK.c.id > after[0])
    connection = await session.connection()
    rows = list(await connection.execute(statement.order_by(WEBHOOK.c.id).limit(keyset.fetch)))
    return await keyset.page(
        rows,
        sort="id",
        key=lambda row: [row.id],
        build=lambda shown: [
            WebhookPublic.model_validate(row, from_attributes=True) for row in shown
        ],
    )


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=AUTH_ERRORS)
async def get_webhook(
    webhook_id: WebhookIdPath, session: SessionDep, access: ProjectForWebhooks
) -> WebhookPublic:
    """One webhook, with its failure count and, if the service disabled it, why."""
    return webhook_public(await load_webhook(session, access, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses=AUTH_ERRORS)
async def update_webhook(
    webhook_id: WebhookIdPath,
    body: WebhookUpdate,
    services: ServicesDep,
    session: SessionDep,
    access: ProjectForWebhooks,
) -> WebhookPublic:
    """Change the URL, event types, description or ``active``; ``active: true`` re-enables a
    webhook the service disabled, and its pending deliveries resume."""
    changes = body.model_dump(exclude_unset=True)
    if "url" in changes:
        await check_webhook_url(services.webhook_targets, changes["url"])
    access = await hold_project(session, access)
    webhook = await load_webhook(session, access, webhook_id, for_update=True)
    if "event_types" in changes:
        changes["event_types"] = list(dict.fromkeys(changes["event_types"]))
    if changes.get("active") is True:
        changes.update(consecutive_failures=0, disabled_reason=None, disabled_at=None)
    if changes:
        webhook.sqlmodel_update(changes)
        webhook.updated_at = utcnow()
        session.add(webhook)
        await session.commit()
    return webhook_public(webhook)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=AUTH_ERRORS)
async def delete_webhook(
    webhook_id: WebhookIdPath, session: SessionDep, access: ProjectForWebhookWrites
) -> None:
    """Delete the webhook with its delivery log; nothing more is sent to it."""
    webhook = await load_webhook(session, access, webhook_id, for_update=True)
    await session.delete(webhook)
    await session.commit()


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret, responses=AUTH_ERRORS)
async def rotate_secret(
    webhook_id: WebhookIdPath,
    services: ServicesDep,
    session: SessionDep,
    access: ProjectForWebhookWrites,
    body: SecretRotation | None = None,
) -> WebhookWithSecret:
    """A new signing secret, shown once. During the overlap (a day unless asked otherwise)
    deliveries carry a signature with each secret, so receivers can switch at their pace.

    One previous secret is kept: rotating again before ``previous_secret_expires_at`` ends
    the oldest secret at once, and only the secret this rotation replaces keeps signing
    beside the new one (for an overlap of its own). Wait for the overlap to end before
    rotating again, unless the oldest secret should stop now."""
    webhook = await load_webhook(session, access, webhook_id, for_update=True)
    overlap = (
        body.overlap_seconds
        if body is not None and body.overlap_seconds is not None
        else services.settings.webhook_secret_overlap_seconds
    )
    now = utcnow()
    webhook.previous_secret_sealed = webhook.secret_sealed if overlap > 0 else None
    webhook.previous_secret_expires_at = now + timedelta(seconds=overlap) if overlap > 0 else None
    secret = new_secret()
    webhook.secret_sealed = services.webhook_secrets.seal(secret)
    webhook.updated_at = now
    session.add(webhook)
    await session.commit()
    return webhook_with_secret(webhook, secret)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[DeliveryPublic],
    responses=problem_responses(400) | AUTH_ERRORS,
)
async def list_deliveries(
    webhook_id: WebhookIdPath, session: SessionDep, access: ProjectForWebhooks, keyset: KeysetDep
) -> Page[DeliveryPublic]:
    """The delivery log, newest first: each event sent, its state and every attempt
    (status, duration, the start of the receiver's answer)."""
    webhook = await load_webhook(session, access, webhook_id)
    query = DELIVERIES.where(DELIVERY.c.webhook_id == webhook.id)
    if (before := keyset.after("id", (int,))) is not None:
        query = query.where(DELIVERY.c.id < before[0])
    connection = await session.connection()
    rows = list(await connection.execute(query.order_by(DELIVERY.c.id.desc()).limit(keyset.fetch)))
    return await keyset.page(
        rows,
        sort="id",
        key=lambda row: [row.id],
        build=lambda shown: public_deliveries(session, shown),
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryPublic,
    responses=AUTH_ERRORS,
)
async def redeliver(
    webhook_id: WebhookIdPath,
    delivery_id: DeliveryIdPath,
    session: SessionDep,
    access: ProjectForWebhookWrites,
) -> DeliveryPublic:
    """Send the event again, now, under the same ``webhook-id`` (one more attempt)."""
    webhook = await load_webhook(session, access, webhook_id)
    now = utcnow()
    connection = await session.connection()
    changed = await connection.execute(
        update(DELIVERY)
        .where(DELIVERY.c.id == delivery_id, DELIVERY.c.webhook_id == webhook.id)
        .values(state=DeliveryState.pending.value, next_attempt_at=now, updated_at=now)
    )
    if changed.rowcount == 0:
        raise NotFound(f"delivery {delivery_id} not found for webhook {webhook_id}")
    row = (await connection.execute(DELIVERIES.where(DELIVERY.c.id == delivery_id))).one()
    (public,) = await public_deliveries(session, [row])
    await session.commit()
    return public
