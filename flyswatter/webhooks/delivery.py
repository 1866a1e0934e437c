"""The webhook deliverer: claim due deliveries, sign, send, record, schedule the retry.

Synchronous, for the Celery worker (``flyswatter.webhooks.tasks``); any number of workers may
run it at once. A claim takes due rows with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (on
SQLite, ``BEGIN IMMEDIATE`` makes the claiming transaction the only writer) and moves their
due time a lease ahead before anything is sent; an attempt is cut at a deadline well inside
the lease. No transaction stays open while a receiver is called: a worker killed
mid-delivery leaves its rows due again once the lease runs out, and the next worker sends
them again, under the same ``webhook-id`` (at least once).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
from cryptography.fernet import InvalidToken
from sqlalchemy import Engine, delete, insert, select, update

from flyswatter.config import Settings
from flyswatter.db import tables, utcnow
from flyswatter.events.models import Event
from flyswatter.observability.metrics import (
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERY_LATENCY,
    WEBHOOK_RETRY_BACKLOG_AGE,
)
from flyswatter.webhooks.attempts import AttemptResult, Claim, send, storable
from flyswatter.webhooks.models import (
    AttemptOutcome,
    DeliveryState,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryAttempt,
)
from flyswatter.webhooks.secret_box import SecretBox
from flyswatter.webhooks.signing import signing_secrets
from flyswatter.webhooks.targets import delivery_client

logger = logging.getLogger("flyswatter.webhooks")

_DELIVERY, _ATTEMPT, _WEBHOOK, _EVENT = tables(
    WebhookDelivery, WebhookDeliveryAttempt, Webhook, Event
)
# Jitter spreads retries of many deliveries that failed together; not a secret.
_jitter = random.Random()  # noqa: S311


def attempt_seconds(settings: Settings) -> float:
    """The most one attempt may take, connecting and reading the answer included. httpx's
    timeouts bound each connect, read and write, not their sum: a receiver trickling its
    answer a byte at a time, each just inside the timeout, would hold the attempt open."""
    return 2 * settings.webhook_timeout_seconds


def lease_seconds(settings: Settings) -> float:
    """How long a claimed delivery stays out of other workers' reach while it is sent: well
    past the attempt's deadline, which cannot cut a slow resolution of the host short, and
    the recording of the outcome comes after it."""
    return 2 * attempt_seconds(settings) + 5


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """The wait after the ``attempts``-th failure: doubling from the base, capped, ±20 %."""
    delay = min(
        settings.webhook_retry_base_seconds * 2 ** (attempts - 1),
        settings.webhook_retry_max_delay_seconds,
    )
    return float(delay * _jitter.uniform(0.8, 1.2))


def claim_due(
    engine: Engine, settings: Settings, box: SecretBox, now: datetime, limit: int
) -> list[Claim]:
    statement = (
        select(
            _DELIVERY.c.id,
            _DELIVERY.c.attempts,
            _DELIVERY.c.next_attempt_at,
            _WEBHOOK.c.id.label("webhook_id"),
            _WEBHOOK.c.url,
            _WEBHOOK.c.secret_sealed,
            _WEBHOOK.c.previous_secret_sealed,
            _WEBHOOK.c.previous_secret_expires_at,
            _EVENT.c.uid,
            _EVENT.c.payload,
        )
        .join(_WEBHOOK, _WEBHOOK.c.id == _DELIVERY.c.webhook_id)
        .join(_EVENT, _EVENT.c.id == _DELIVERY.c.event_id)
        .where(
            _DELIVERY.c.state == DeliveryState.pending.value,
            _DELIVERY.c.next_attempt_at <= now,
            _WEBHOOK.c.active.is_(True),
        )
        .order_by(_DELIVERY.c.next_attempt_at, _DELIVERY.c.id)
        .limit(limit)
        # Rows another worker is claiming right now are skipped, not waited for (SQLite
        # renders no FOR UPDATE; its claiming transaction holds the write lock instead).
        .with_for_update(skip_locked=True, of=_DELIVERY)
    )
    lease_end = now + timedelta(seconds=lease_seconds(settings))
    # Each webhook's secrets, opened once, before anything is claimed: only a delivery that
    # can be signed is claimed and has an attempt counted. None: they do not decrypt.
    opened: dict[int, list[str] | None] = {}
    claims = []
    with engine.begin() as connection:
        rows = list(connection.execute(statement))
        if not rows:
            return []
        for row in rows:
            if row.webhook_id not in opened:
                try:
                    current = box.open(row.secret_sealed)
                    previous = (
                        box.open(row.previous_secret_sealed) if row.previous_secret_sealed else None
                    )
                except InvalidToken:
                    opened[row.webhook_id] = None
                else:
                    opened[row.webhook_id] = signing_secrets(
                        current, previous, row.previous_secret_expires_at, now
                    )
            secrets = opened[row.webhook_id]
            if secrets is None:
                continue
            claims.append(
                Claim(
                    delivery_id=row.id,
                    attempt=row.attempts + 1,
                    webhook_id=row.webhook_id,
                    url=row.url,
                    secrets=secrets,
                    event_uid=row.uid,
                    payload=row.payload,
                    claimed_at=now,
                )
            )
        if claims:
            connection.execute(
                update(_DELIVERY)
                .where(_DELIVERY.c.id.in_([claim.delivery_id for claim in claims]))
                .values(
                    attempts=_DELIVERY.c.attempts + 1,
                    next_attempt_at=lease_end,
                    updated_at=now,
                )
            )
        waiting = [row.id for row in rows if opened[row.webhook_id] is None]
        if waiting:
            # Not claimed, as nothing can be signed: no attempt is counted, so that they still
            # have all of theirs once the key is configured back. Only moved a lease ahead, out
            # of the way of the deliveries that can be sent.
            connection.execute(
                update(_DELIVERY)
                .where(_DELIVERY.c.id.in_(waiting))
                .values(next_attempt_at=lease_end)
            )
    for webhook_id, secrets in opened.items():
        if secrets is None:
            logger.error(
                "webhook %d: its signing secret does not decrypt with the configured "
                "FLYSWATTER_WEBHOOK_SECRET_KEYS; its deliveries wait",
                webhook_id,
            )
    return claims


def record(engine: Engine, settings: Settings, claim: Claim, result: AttemptResult) -> None:
    """Log the attempt, then settle the delivery or schedule its retry; count the webhook's
    failures and disable it after a run of them. Nothing, if the delivery is gone (its
    webhook or its event deleted while it was sent)."""
    now = utcnow()
    succeeded = result.outcome is AttemptOutcome.succeeded
    exhausted = claim.attempt >= settings.webhook_max_attempts
    values: dict[str, object]
    if succeeded:
        values = {"state": DeliveryState.succeeded.value, "next_attempt_at": None}
    elif exhausted:
        values = {"state": DeliveryState.failed.value, "next_attempt_at": None}
    else:
        retry_at = now + timedelta(seconds=backoff_seconds(settings, claim.attempt))
        values = {"next_attempt_at": retry_at}
    with engine.begin() as connection:
        # Locked (on SQLite the transaction is the only writer): a deletion waits for this.
        still_there = connection.execute(
            select(_DELIVERY.c.id).where(_DELIVERY.c.id == claim.delivery_id).with_for_update()
        ).first()
        if still_there is None:
            return
        connection.execute(
            insert(_ATTEMPT).values(
                delivery_id=claim.delivery_id,
                number=claim.attempt,
                outcome=result.outcome.value,
                status_code=result.status_code,
                duration_ms=result.duration_ms,
                response_excerpt=result.excerpt,
                error=result.error,
                started_at=result.started_at,
            )
        )
        # Only while the claim is still this worker's: a redelivery asked for meanwhile (it
        # moves updated_at) or a newer claim wins, and the delivery stays due.
        connection.execute(
            update(_DELIVERY)
            .where(
                _DELIVERY.c.id == claim.delivery_id,
                _DELIVERY.c.attempts == claim.attempt,
                _DELIVERY.c.updated_at == claim.claimed_at,
                _DELIVERY.c.state == DeliveryState.pending.value,
            )
            .values(updated_at=now, **values)
        )
        if succeeded:
            connection.execute(
                update(_WEBHOOK)
                .where(_WEBHOOK.c.id == claim.webhook_id, _WEBHOOK.c.consecutive_failures != 0)
                .values(consecutive_failures=0)
            )
        else:
            failures = connection.execute(
                update(_WEBHOOK)
                .where(_WEBHOOK.c.id == claim.webhook_id)
                .values(consecutive_failures=_WEBHOOK.c.consecutive_failures + 1)
                .returning(_WEBHOOK.c.consecutive_failures)
            ).scalar_one_or_none()
            if failures is not None and failures >= settings.webhook_disable_after_failures:
                connection.execute(
                    update(_WEBHOOK)
                    .where(_WEBHOOK.c.id == claim.webhook_id, _WEBHOOK.c.active.is_(True))
                    .values(
                        active=False,
                        disabled_at=now,
                        updated_at=now,
                        disabled_reason=storable(
                            f"disabled after {failures} failed attempts in a row; the last: "
                            f"{result.error}"
                        )[:500],
                    )
                )
    WEBHOOK_DELIVERIES.labels(outcome=result.outcome.value).inc()
    WEBHOOK_DELIVERY_LATENCY.labels(outcome=result.outcome.value).observe(result.duration_ms / 1000)


def deliver_due(
    engine: Engine,
    settings: Settings,
    *,
    client: httpx.Client | None = None,
    batches: int = 1,
) -> Counter[str]:
    """Send up to ``batches`` batches of due deliveries; the outcomes, counted."""
    outcomes: Counter[str] = Counter()
    own_client = client is None
    http = client or delivery_client(settings)
    box = SecretBox.from_settings(settings)
    try:
        for _ in range(batches):
            claims = claim_due(engine, settings, box, utcnow(), settings.webhook_batch_size)
            if not claims:
                break

            def attempt(claim: Claim) -> AttemptOutcome | None:
                result = send(claim, http, attempt_seconds(settings))
                try:
                    record(engine, settings, claim, result)
                except Exception as exc:
                    # One delivery's failure must not cost the batch the others' records. Its
                    # lease runs out and it is sent again. The type only: never the SQL.
                    logger.error(
                        "webhook %d: delivery %d could not be recorded (%s); it is due again",
                        claim.webhook_id,
                        claim.delivery_id,
                        type(exc).__name__,
                    )
                    return None
                return result.outcome

            with ThreadPoolExecutor(max_workers=len(claims)) as pool:
                results = pool.map(attempt, claims)
                outcomes.update(outcome.value for outcome in results if outcome is not None)
    finally:
        if own_client:
            http.close()
    observe_backlog(engine)
    return outcomes


def observe_backlog(engine: Engine) -> None:
    """The age of the oldest delivery waiting for a retry, as a gauge."""
    with engine.connect() as connection:
        oldest = connection.execute(
            select(_DELIVERY.c.created_at)
            .where(_DELIVERY.c.state == DeliveryState.pending.value, _DELIVERY.c.attempts > 0)
            .order_by(_DELIVERY.c.created_at)
            .limit(1)
        ).scalar_one_or_none()
    WEBHOOK_RETRY_BACKLOG_AGE.set(0 if oldest is None else (utcnow() - oldest).total_seconds())


def prune(engine: Engine, settings: Settings) -> int:
    """Delete events past their retention; their deliveries and attempt logs go with them."""
    cutoff = utcnow() - timedelta(days=settings.event_retention_days)
    with engine.begin() as connection:
        pruned = connection.execute(delete(_EVENT).where(_EVENT.c.occurred_at < cutoff))
    return int(pruned.rowcount or 0)
