"""What one delivery attempt costs: attempts are counted only when something is sent, and an
attempt ends within its deadline whatever the receiver does."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine, update

from flyswatter.config import Settings
from flyswatter.db import create_sync_engine, tables, utcnow
from flyswatter.webhooks.delivery import attempt_seconds, deliver_due, lease_seconds
from flyswatter.webhooks.models import WebhookDelivery
from tests.support.api import Api, AuthedClient
from tests.webhook_receiver import WebhookReceiver, running_receiver

(_DELIVERY,) = tables(WebhookDelivery)


@pytest.fixture
def settings(base_settings: Settings, clean_database: str) -> Settings:
    # The receiver listens on loopback, which only the allow list lets through.
    return base_settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allowed_networks": ["127.0.0.1/32"],
            "webhook_timeout_seconds": 1.0,
            "webhook_retry_base_seconds": 0.01,
            "webhook_retry_max_delay_seconds": 0.05,
        }
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_sync_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as receiver:
        yield receiver


async def subscribed(api: Api, url: str) -> tuple[AuthedClient, dict]:
    owner = api.as_user("ada")
    created = await owner.post("/api/v1/projects", json={"key": "ATT", "name": "A"})
    assert created.status_code == 201
    hook = await owner.post("/api/v1/projects/ATT/webhooks", json={"url": url})
    assert hook.status_code == 201, hook.text
    return owner, dict(hook.json())


def deliveries(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT state, attempts FROM webhook_delivery ORDER BY id"
        ).all()
    return [(row[0], row[1]) for row in rows]


def attempt_log(engine: Engine) -> list[tuple[int, str, float]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT number, outcome, duration_ms FROM webhook_delivery_attempt ORDER BY id"
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def lease_runs_out(engine: Engine) -> None:
    """What waiting out the lease does to a delivery, without the wait."""
    with engine.begin() as connection:
        connection.execute(
            update(_DELIVERY)
            .where(_DELIVERY.c.state == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def drain(engine: Engine, settings: Settings) -> None:
    for _ in range(20):
        deliver_due(engine, settings, batches=10)
        if all(state != "pending" for state, _ in deliveries(engine)):
            return
        time.sleep(0.06)


async def test_a_secret_that_does_not_decrypt_costs_its_deliveries_no_attempts(
    api: Api,
    settings: Settings,
    engine: Engine,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings.model_copy(update={"webhook_max_attempts": 2})
    owner, hook = await subscribed(api, receiver.url)
    receiver.secrets.append(hook["secret"])
    await owner.post("/api/v1/projects/ATT/issues", json={"title": "Waits"})
    # Keys that did not seal the secret, as after a mistaken FLYSWATTER_WEBHOOK_SECRET_KEYS.
    wrong_keys = settings.model_copy(
        update={"webhook_secret_keys": [SecretStr(Fernet.generate_key().decode())]}
    )
    with caplog.at_level(logging.ERROR, logger="flyswatter.webhooks"):
        for _ in range(3):
            assert deliver_due(engine, wrong_keys) == {}
            lease_runs_out(engine)
    assert receiver.received == []
    assert deliveries(engine) == [("pending", 0)]
    assert [record.getMessage() for record in caplog.records] == [
        f"webhook {hook['id']}: its signing secret does not decrypt with the configured "
        "FLYSWATTER_WEBHOOK_SECRET_KEYS; its deliveries wait"
    ] * 3
    assert hook["secret"] not in caplog.text
    # The keys configured back: the first failure is the first of its two attempts, not final.
    receiver.statuses = [500]
    drain(engine, settings)
    first, second = receiver.wait_for(2)
    assert first.webhook_id == second.webhook_id
    assert second.verified_with == [0]
    assert [(number, outcome) for number, outcome, _ in attempt_log(engine)] == [
        (1, "http_error"),
        (2, "succeeded"),
    ]
    assert deliveries(engine) == [("succeeded", 2)]


@contextmanager
def trickling_receiver(byte_seconds: float) -> Iterator[str]:
    """A receiver answering one byte at a time, each inside the read timeout: in breach of
    none of httpx's timeouts, it holds an attempt open for as long as its answer lasts."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        # Ends as the sender gives up, or as the test closes the listener.
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10:
                    connection.sendall(bytes([byte]))
                    time.sleep(byte_seconds)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        listener.close()


async def test_a_receiver_trickling_its_answer_times_out_at_the_attempts_deadline(
    api: Api, settings: Settings, engine: Engine
) -> None:
    deadline = attempt_seconds(settings)
    assert deadline <= 2 * settings.webhook_timeout_seconds
    # Another worker's claim waits for the lease: an attempt cut at its deadline is over long
    # before, and is never sent again beside itself.
    assert lease_seconds(settings) >= 2 * deadline
    # About 30 s of answer, far past the lease, without a second's silence.
    with trickling_receiver(byte_seconds=0.8 * settings.webhook_timeout_seconds) as url:
        owner, _ = await subscribed(api, url)
        await owner.post("/api/v1/projects/ATT/issues", json={"title": "Trickled"})
        started = time.monotonic()
        assert deliver_due(engine, settings) == {"timeout": 1}
        took = time.monotonic() - started
    ((number, outcome, duration_ms),) = attempt_log(engine)
    assert (number, outcome) == (1, "timeout")
    assert deadline * 1000 <= duration_ms < (deadline + 1) * 1000
    assert took < deadline + 2
    assert deliveries(engine) == [("pending", 1)]
