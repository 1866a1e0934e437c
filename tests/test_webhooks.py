"""Webhooks: subscriptions per project, signed deliveries to a real receiver, retries, the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from ipaddress import ip_address

import anyio
import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine
from sqlmodel import col

from flyswatter.config import Settings
from flyswatter.db import create_sync_engine, utcnow
from flyswatter.services import services_of
from flyswatter.webhooks import delivery
from flyswatter.webhooks.attempts import Claim
from flyswatter.webhooks.delivery import (
    attempt_seconds,
    backoff_seconds,
    deliver_due,
    lease_seconds,
    prune,
)
from flyswatter.webhooks.models import WebhookDelivery
from flyswatter.webhooks.secret_box import SecretBox
from flyswatter.webhooks.targets import IPAddress, TargetPolicy
from tests.support.api import Api, AuthedClient, walk_pages
from tests.webhook_receiver import WebhookReceiver, running_receiver

# A public address, so that creation passes the target check without DNS.
PUBLIC_URL = "https://93.184.215.14/hooks/flyswatter"


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


async def maintainer(api: Api) -> AuthedClient:
    owner = api.as_user("mona")
    assert (
        await owner.post("/api/v1/projects", json={"key": "HOOK", "name": "H"})
    ).status_code == 201
    return owner


async def subscribe(owner: AuthedClient, receiver: WebhookReceiver, **fields: object) -> dict:
    response = await owner.post(
        "/api/v1/projects/HOOK/webhooks", json={"url": receiver.url, **fields}
    )
    assert response.status_code == 201, response.text
    receiver.secrets.append(response.json()["secret"])
    return dict(response.json())


def drain(engine: Engine, settings: Settings, rounds: int = 50) -> None:
    """Run the deliverer until nothing is due any more (retries here wait milliseconds)."""
    for _ in range(rounds):
        deliver_due(engine, settings, batches=10)
        with engine.connect() as connection:
            pending = connection.exec_driver_sql(
                "SELECT count(*) FROM webhook_delivery WHERE state = 'pending'"
            ).scalar_one()
        if not pending:
            return
        time.sleep(0.06)


class TestSubscriptions:
    async def test_webhooks_and_their_deliveries_page_with_link_headers(self, api: Api) -> None:
        owner = await maintainer(api)
        for index in range(3):
            response = await owner.post(
                "/api/v1/projects/HOOK/webhooks", json={"url": f"{PUBLIC_URL}/{index}"}
            )
            assert response.status_code == 201, response.text
        for title in ("one", "two", "three"):
            assert (
                await owner.post("/api/v1/projects/HOOK/issues", json={"title": title})
            ).status_code == 201
        url = "/api/v1/projects/HOOK/webhooks"
        hooks = (await owner.get(url, params={"limit": 200})).json()["items"]
        assert len(hooks) == 3
        assert await walk_pages(owner, f"{url}?limit=1") == hooks
        deliveries_url = f"{url}/{hooks[0]['id']}/deliveries"
        deliveries = (await owner.get(deliveries_url, params={"limit": 200})).json()["items"]
        assert len(deliveries) == 3
        assert await walk_pages(owner, f"{deliveries_url}?limit=1") == deliveries

    async def test_maintainer_creates_a_webhook_and_sees_the_secret_once(self, api: Api) -> None:
        owner = await maintainer(api)
        created = await owner.post(
            "/api/v1/projects/HOOK/webhooks",
            json={"url": PUBLIC_URL, "event_types": ["issue.created"], "description": "CI"},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["secret"].startswith("whsec_")
        assert created.headers["Location"] == f"/api/v1/projects/HOOK/webhooks/{body['id']}"
        shown = await owner.get(created.headers["Location"])
        assert shown.status_code == 200
        assert "secret" not in shown.json()
        listed = (await owner.get("/api/v1/projects/HOOK/webhooks")).json()
        assert [hook["id"] for hook in listed["items"]] == [body["id"]]
        assert all("secret" not in hook for hook in listed["items"])
        assert body["secret"] not in json.dumps(listed)

    async def test_secrets_are_stored_encrypted_and_never_logged(
        self, api: Api, settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        owner = await maintainer(api)
        with caplog.at_level(logging.DEBUG):
            created = await owner.post("/api/v1/projects/HOOK/webhooks", json={"url": PUBLIC_URL})
            hook_id = created.json()["id"]
            rotated = await owner.post(f"/api/v1/projects/HOOK/webhooks/{hook_id}/rotate-secret")
        first, second = created.json()["secret"], rotated.json()["secret"]
        with engine.connect() as connection:
            row = connection.execute(
                sa.text("SELECT * FROM webhook WHERE id = :id"), {"id": hook_id}
            ).one()
        stored = " ".join(str(value) for value in row)
        assert first not in stored
        assert second not in stored
        assert first[len("whsec_") :] not in stored
        box = SecretBox.from_settings(settings)
        assert box.open(row.secret_sealed) == second
        assert box.open(row.previous_secret_sealed) == first
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert caplog.records
        assert first not in logged
        assert second not in logged

    def test_secrets_sealed_with_an_older_key_open_while_it_is_listed(
        self, settings: Settings
    ) -> None:
        old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        sealed = SecretBox.from_settings(
            settings.model_copy(update={"webhook_secret_keys": [SecretStr(old_key)]})
        ).seal("whsec_x")
        rotated = settings.model_copy(
            update={"webhook_secret_keys": [SecretStr(new_key), SecretStr(old_key)]}
        )
        assert SecretBox.from_settings(rotated).open(sealed) == "whsec_x"
        alone = settings.model_copy(update={"webhook_secret_keys": [SecretStr(new_key)]})
        with pytest.raises(InvalidToken):
            SecretBox.from_settings(alone).open(sealed)

    def test_a_secret_key_that_is_not_a_fernet_key_is_refused_without_showing_it(self) -> None:
        with pytest.raises(ValidationError) as refused:
            Settings(webhook_secret_keys=["not-a-key-but-a-secret"])
        # What the command line prints of a refused setting: the message, not the input.
        message = refused.value.errors()[0]["msg"]
        assert "key 1 is not a Fernet key" in message
        assert "not-a-key-but-a-secret" not in message

    async def test_webhooks_are_managed_by_maintainers_only(self, api: Api) -> None:
        owner = await maintainer(api)
        developer = api.as_user("devon")
        developer_id = await developer.sign_in()
        await owner.put(f"/api/v1/projects/HOOK/members/{developer_id}", json={"role": "developer"})
        refused = await developer.post("/api/v1/projects/HOOK/webhooks", json={"url": PUBLIC_URL})
        assert refused.status_code == 403
        assert (await developer.get("/api/v1/projects/HOOK/webhooks")).status_code == 403

    async def test_patch_changes_fields_and_delete_removes(self, api: Api) -> None:
        owner = await maintainer(api)
        hook = (await owner.post("/api/v1/projects/HOOK/webhooks", json={"url": PUBLIC_URL})).json()
        url = f"/api/v1/projects/HOOK/webhooks/{hook['id']}"
        changed = await owner.patch(
            url, json={"active": False, "event_types": ["comment.created"], "description": "x"}
        )
        assert changed.status_code == 200
        assert changed.json()["active"] is False
        assert changed.json()["event_types"] == ["comment.created"]
        assert (await owner.delete(url)).status_code == 204
        assert (await owner.get(url)).status_code == 404

    async def test_unknown_event_type_is_422(self, api: Api) -> None:
        owner = await maintainer(api)
        response = await owner.post(
            "/api/v1/projects/HOOK/webhooks", json={"url": PUBLIC_URL, "event_types": ["nope"]}
        )
        assert response.status_code == 422

    async def test_another_projects_webhook_is_not_found(self, api: Api) -> None:
        owner = await maintainer(api)
        hook = (await owner.post("/api/v1/projects/HOOK/webhooks", json={"url": PUBLIC_URL})).json()
        assert (
            await owner.post("/api/v1/projects", json={"key": "OTHER", "name": "O"})
        ).status_code == 201
        response = await owner.get(f"/api/v1/projects/OTHER/webhooks/{hook['id']}")
        assert response.status_code == 404


class TestDelivery:
    async def test_delivery_is_signed_and_verified_by_the_receiver(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        owner = await maintainer(api)
        await subscribe(owner, receiver)
        created = await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Signed"})
        assert created.status_code == 201
        drain(engine, settings)
        (delivery,) = receiver.wait_for(1)
        assert delivery.verified_with == [0], receiver.rejected
        event = delivery.event
        assert event["type"] == "issue.created"
        assert event["data"]["issue"]["key"] == "HOOK-1"
        assert delivery.webhook_id == event["id"]
        assert delivery.headers["content-type"] == "application/json"

    async def test_only_subscribed_types_are_delivered(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        owner = await maintainer(api)
        await subscribe(owner, receiver, event_types=["comment.created"])
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Quiet"})
        await owner.post("/api/v1/issues/HOOK-1/comments", json={"body": "loud"})
        drain(engine, settings)
        assert [r.event["type"] for r in receiver.wait_for(1)] == ["comment.created"]

    async def test_failing_receiver_is_retried_with_the_same_id_until_it_recovers(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        owner = await maintainer(api)
        hook = await subscribe(owner, receiver)
        receiver.statuses = [500, 503, 200]
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Flaky"})
        drain(engine, settings)
        received = receiver.wait_for(3)
        assert len({r.webhook_id for r in received}) == 1
        assert all(r.verified_with == [0] for r in received)
        # A fresh timestamp (and so signature) on each attempt; the body stays the same.
        assert len({r.body for r in received}) == 1
        log = (await owner.get(f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries")).json()
        (delivery,) = log["items"]
        assert delivery["state"] == "succeeded"
        assert delivery["attempts"] == 3
        assert delivery["event_id"] == received[0].webhook_id
        attempts = delivery["attempt_log"]
        assert [a["status_code"] for a in attempts] == [500, 503, 200]
        assert [a["outcome"] for a in attempts] == ["http_error", "http_error", "succeeded"]
        assert attempts[-1]["response_excerpt"] == '{"seen": 2}'
        assert all(a["duration_ms"] > 0 for a in attempts)
        webhook = (await owner.get(f"/api/v1/projects/HOOK/webhooks/{hook['id']}")).json()
        assert webhook["consecutive_failures"] == 0

    async def test_hanging_receiver_times_out_and_is_retried(
        self, api: Api, settings: Settings, engine: Engine
    ) -> None:
        with running_receiver(hang_seconds=3, hang_requests=1) as receiver:
            owner = await maintainer(api)
            hook = await subscribe(owner, receiver)
            await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Slow"})
            drain(engine, settings)
            received = receiver.wait_for(2)
        assert received[0].webhook_id == received[1].webhook_id
        log = (await owner.get(f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries")).json()
        attempts = log["items"][0]["attempt_log"]
        assert attempts[0]["outcome"] == "timeout"
        assert attempts[0]["status_code"] is None
        assert 900 <= attempts[0]["duration_ms"] < 3000
        assert attempts[1]["outcome"] == "succeeded"

    async def test_delivery_gives_up_after_the_last_attempt(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        settings = settings.model_copy(update={"webhook_max_attempts": 3})
        owner = await maintainer(api)
        hook = await subscribe(owner, receiver)
        receiver.statuses = [500] * 10
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Doomed"})
        drain(engine, settings)
        assert len(receiver.wait_for(3)) == 3
        log = (await owner.get(f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries")).json()
        assert log["items"][0]["state"] == "failed"
        assert log["items"][0]["next_attempt_at"] is None

    async def test_endpoint_is_disabled_after_a_run_of_failures_and_re_enabled_by_patch(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        settings = settings.model_copy(update={"webhook_disable_after_failures": 3})
        owner = await maintainer(api)
        hook = await subscribe(owner, receiver)
        url = f"/api/v1/projects/HOOK/webhooks/{hook['id']}"
        receiver.statuses = [500] * 3
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Down"})
        drain(engine, settings, rounds=10)
        webhook = (await owner.get(url)).json()
        assert webhook["active"] is False
        assert "3 failed attempts in a row" in webhook["disabled_reason"]
        assert "HTTP 500" in webhook["disabled_reason"]
        assert len(receiver.received) == 3
        # While disabled nothing is sent; re-enabled, the pending delivery goes out.
        enabled = await owner.patch(url, json={"active": True})
        assert enabled.json()["disabled_reason"] is None
        assert enabled.json()["active"] is True
        drain(engine, settings)
        assert receiver.wait_for(4)[-1].webhook_id == receiver.received[0].webhook_id

    async def test_redeliver_sends_the_event_again_with_the_same_id(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        owner = await maintainer(api)
        hook = await subscribe(owner, receiver)
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Again"})
        drain(engine, settings)
        log = (await owner.get(f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries")).json()
        delivery_id = log["items"][0]["id"]
        again = await owner.post(
            f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries/{delivery_id}/redeliver"
        )
        assert again.status_code == 202
        assert again.json()["state"] == "pending"
        drain(engine, settings)
        first, second = receiver.wait_for(2)
        assert first.webhook_id == second.webhook_id
        missing = await owner.post(
            f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries/999/redeliver"
        )
        assert missing.status_code == 404

    async def test_a_deleted_comment_is_not_sent_again_by_a_pending_delivery_or_a_redelivery(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        owner = await maintainer(api)
        hook = await subscribe(owner, receiver, event_types=["comment.created"])
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Leak"})
        sent = await owner.post("/api/v1/issues/HOOK-1/comments", json={"body": "key=AKIA123"})
        drain(engine, settings)
        # Pending when the comment goes (the receiver was down, say): sent without its text.
        pending = await owner.post("/api/v1/issues/HOOK-1/comments", json={"body": "key=AKIA456"})
        for comment in (sent, pending):
            deleted = await owner.delete(f"/api/v1/comments/{comment.json()['id']}")
            assert deleted.status_code == 204
        deliveries = f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries"
        first = (await owner.get(deliveries)).json()["items"][-1]
        again = await owner.post(f"{deliveries}/{first['id']}/redeliver")
        assert again.status_code == 202
        drain(engine, settings)
        received = receiver.wait_for(3)
        assert received[0].event["data"]["comment"]["body"] == "key=AKIA123"
        for later in received[1:]:
            assert later.verified_with == [0], receiver.rejected
            assert later.event["type"] == "comment.created"
            assert later.event["data"]["comment"] is None
            assert "AKIA" not in json.dumps(later.event)
        assert received[1].webhook_id != received[2].webhook_id

    async def test_rotated_secret_signs_beside_the_old_one_during_the_overlap(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        owner = await maintainer(api)
        hook = await subscribe(owner, receiver)
        rotated = await owner.post(f"/api/v1/projects/HOOK/webhooks/{hook['id']}/rotate-secret")
        assert rotated.status_code == 200
        new_secret = rotated.json()["secret"]
        assert new_secret != hook["secret"]
        assert rotated.json()["previous_secret_expires_at"]
        receiver.secrets.append(new_secret)
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Both"})
        drain(engine, settings)
        (delivery,) = receiver.wait_for(1)
        assert delivery.verified_with == [0, 1]
        assert len(delivery.signature.split(" ")) == 2
        # Without overlap the old secret stops at once.
        again = await owner.post(
            f"/api/v1/projects/HOOK/webhooks/{hook['id']}/rotate-secret",
            json={"overlap_seconds": 0},
        )
        receiver.secrets.append(again.json()["secret"])
        await owner.post("/api/v1/issues/HOOK-1/comments", json={"body": "only new"})
        drain(engine, settings)
        assert receiver.wait_for(2)[1].verified_with == [2]

    async def test_a_rotation_during_the_overlap_ends_the_oldest_secret_at_once(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        """The webhook keeps one previous secret: rotating again while the first overlap
        runs keeps the secret it replaces signing (for a new overlap) and drops the one
        before it, whose receivers fail from then on (as the rotation's docs say). Keeping
        both needs a third secret column."""
        owner = await maintainer(api)
        hook = await subscribe(owner, receiver)
        rotate = f"/api/v1/projects/HOOK/webhooks/{hook['id']}/rotate-secret"
        for _ in range(2):
            rotated = await owner.post(rotate, json={"overlap_seconds": 3600})
            assert rotated.status_code == 200
            receiver.secrets.append(rotated.json()["secret"])
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Twice"})
        drain(engine, settings)
        (delivery,) = receiver.wait_for(1)
        assert delivery.verified_with == [1, 2]
        assert len(delivery.signature.split(" ")) == 2

    async def test_old_events_and_their_delivery_logs_are_pruned(
        self, api: Api, settings: Settings, engine: Engine, receiver: WebhookReceiver
    ) -> None:
        owner = await maintainer(api)
        await subscribe(owner, receiver)
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Old"})
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "New"})
        drain(engine, settings)
        old = utcnow() - timedelta(days=settings.event_retention_days + 1)
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE event SET occurred_at = :old WHERE sequence = 1"),
                {"old": old.replace(tzinfo=None) if engine.dialect.name == "sqlite" else old},
            )
        assert prune(engine, settings) == 1
        with engine.connect() as connection:
            counts = [
                connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
                for table in ("event", "webhook_delivery", "webhook_delivery_attempt")
            ]
        assert counts == [1, 1, 1]


def deliveries(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT state, attempts FROM webhook_delivery ORDER BY id"
        ).all()
    return [(row[0], row[1]) for row in rows]


def attempt_log(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT outcome, response_excerpt FROM webhook_delivery_attempt ORDER BY id"
        ).all()
    return [(row[0], row[1]) for row in rows]


async def while_in_flight(
    engine: Engine,
    settings: Settings,
    receiver: WebhookReceiver,
    requests: int,
    action: Callable[[], Awaitable[None]],
) -> Counter[str]:
    """One run of the deliverer, with ``action`` done once the receiver holds ``requests``
    requests unanswered (its gate shut), and the gate opened after it."""
    assert receiver.gate is not None
    patient = settings.model_copy(update={"webhook_timeout_seconds": 30.0})
    with ThreadPoolExecutor(max_workers=1) as pool:
        run = asyncio.wrap_future(pool.submit(deliver_due, engine, patient, batches=10))
        await anyio.to_thread.run_sync(receiver.wait_for, requests)
        try:
            await action()
        finally:
            receiver.gate.set()
        return await run


class TestWhileADeliveryIsInFlight:
    async def test_a_webhook_deleted_meanwhile_leaves_the_other_deliveries_recorded(
        self, api: Api, settings: Settings, engine: Engine
    ) -> None:
        with running_receiver(gate=threading.Event()) as receiver:
            owner = await maintainer(api)
            doomed = await subscribe(owner, receiver)
            await subscribe(owner, receiver)
            await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Both"})

            async def delete_the_first() -> None:
                url = f"/api/v1/projects/HOOK/webhooks/{doomed['id']}"
                assert (await owner.delete(url)).status_code == 204

            outcomes = await while_in_flight(engine, settings, receiver, 2, delete_the_first)
        assert outcomes == {"succeeded": 2}
        # The deleted webhook's delivery went with it; the other one is settled and logged.
        assert deliveries(engine) == [("succeeded", 1)]
        assert [outcome for outcome, _ in attempt_log(engine)] == ["succeeded"]

    async def test_a_redelivery_asked_for_meanwhile_is_sent_after_the_attempt(
        self, api: Api, settings: Settings, engine: Engine
    ) -> None:
        with running_receiver(gate=threading.Event()) as receiver:
            owner = await maintainer(api)
            hook = await subscribe(owner, receiver)
            await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Again"})
            log = f"/api/v1/projects/HOOK/webhooks/{hook['id']}/deliveries"
            (delivery,) = (await owner.get(log)).json()["items"]

            async def redeliver() -> None:
                again = await owner.post(f"{log}/{delivery['id']}/redeliver")
                assert again.status_code == 202, again.text

            # The attempt in flight does not settle what was asked for after it: the same
            # run's next batch sends it again.
            outcomes = await while_in_flight(engine, settings, receiver, 1, redeliver)
            first, second = receiver.wait_for(2)
        assert outcomes == {"succeeded": 2}
        assert first.webhook_id == second.webhook_id
        assert deliveries(engine) == [("succeeded", 2)]

    async def test_an_answer_with_nul_bytes_is_recorded(
        self, api: Api, settings: Settings, engine: Engine
    ) -> None:
        # PostgreSQL text cannot hold NUL: the excerpt keeps a replacement character instead.
        with running_receiver(answer=b'{"ok": true}\x00') as receiver:
            owner = await maintainer(api)
            await subscribe(owner, receiver)
            await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Nul"})
            assert deliver_due(engine, settings) == {"succeeded": 1}
        assert attempt_log(engine) == [("succeeded", '{"ok": true}\ufffd')]
        assert deliveries(engine) == [("succeeded", 1)]

    async def test_a_delivery_that_cannot_be_recorded_costs_the_others_nothing(
        self,
        api: Api,
        settings: Settings,
        engine: Engine,
        receiver: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        owner = await maintainer(api)
        failing = await subscribe(owner, receiver)
        await subscribe(owner, receiver)
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Half"})
        recorded = delivery.record

        def record(engine: Engine, settings: Settings, claim: Claim, result: object) -> None:
            if claim.webhook_id == failing["id"]:
                raise sa.exc.OperationalError(
                    "INSERT INTO webhook_delivery_attempt", {}, Exception("connection lost")
                )
            recorded(engine, settings, claim, result)  # type: ignore[arg-type]

        monkeypatch.setattr(delivery, "record", record)
        with caplog.at_level(logging.ERROR, logger="flyswatter.webhooks"):
            assert deliver_due(engine, settings) == {"succeeded": 1}
        assert "could not be recorded (OperationalError)" in caplog.text
        assert "INSERT" not in caplog.text
        # Left claimed: it is sent again once its lease runs out.
        assert sorted(deliveries(engine)) == [("pending", 1), ("succeeded", 1)]


def test_backoff_doubles_and_spans_about_a_day(base_settings: Settings) -> None:
    delays = [
        backoff_seconds(base_settings, attempt)
        for attempt in range(1, base_settings.webhook_max_attempts)
    ]
    assert 0.8 * 60 <= delays[0] <= 1.2 * 60
    assert all(delay <= 1.2 * base_settings.webhook_retry_max_delay_seconds for delay in delays)
    assert 0.8 * 86_400 <= sum(delays) <= 1.2 * 2 * 86_400


# What one delivery attempt costs: attempts are counted only when something is sent, and an
# attempt ends within its deadline whatever the receiver does.


def attempts_made(engine: Engine) -> list[tuple[int, str, float]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT number, outcome, duration_ms FROM webhook_delivery_attempt ORDER BY id"
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def lease_runs_out(engine: Engine) -> None:
    """What waiting out the lease does to a delivery, without the wait."""
    with engine.begin() as connection:
        connection.execute(
            sa.update(WebhookDelivery)
            .where(col(WebhookDelivery.state) == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


async def test_a_secret_that_does_not_decrypt_costs_its_deliveries_no_attempts(
    api: Api,
    settings: Settings,
    engine: Engine,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings.model_copy(update={"webhook_max_attempts": 2})
    owner = await maintainer(api)
    hook = await subscribe(owner, receiver)
    await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Waits"})
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
    assert [(number, outcome) for number, outcome, _ in attempts_made(engine)] == [
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
        owner = await maintainer(api)
        hook = await owner.post("/api/v1/projects/HOOK/webhooks", json={"url": url})
        assert hook.status_code == 201, hook.text
        await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Trickled"})
        started = time.monotonic()
        assert deliver_due(engine, settings) == {"timeout": 1}
        took = time.monotonic() - started
    ((number, outcome, duration_ms),) = attempts_made(engine)
    assert (number, outcome) == (1, "timeout")
    assert deadline * 1000 <= duration_ms < (deadline + 1) * 1000
    assert took < deadline + 2
    assert deliveries(engine) == [("pending", 1)]


# Webhook management racing a change of the project's that locks its row (as DELETE
# /projects/{key} and DELETE .../members/{id} do, uncommitted): the write must wait for it,
# then see it. The maintainer is "mona" (``maintainer``).
RACING = {
    "the project's deletion": [
        "SELECT id FROM project WHERE key = 'HOOK' FOR UPDATE",
        "UPDATE project SET deleted_at = CURRENT_TIMESTAMP WHERE key = 'HOOK'",
    ],
    "the maintainer's removal": [
        "SELECT id FROM project WHERE key = 'HOOK' FOR UPDATE",
        "DELETE FROM project_member WHERE user_id = :user",
    ],
}
HOOKS = "/api/v1/projects/HOOK/webhooks"
WEBHOOK_WRITES = {
    "a creation": ("POST", HOOKS, {"url": f"{PUBLIC_URL}/late"}),
    "a change": ("PATCH", HOOKS + "/{hook}", {"url": f"{PUBLIC_URL}/late"}),
    "a deletion": ("DELETE", HOOKS + "/{hook}", None),
    "a rotation": ("POST", HOOKS + "/{hook}/rotate-secret", None),
    "a redelivery": ("POST", HOOKS + "/{hook}/deliveries/{delivery}/redeliver", None),
}


def webhook_state(engine: Engine) -> list[tuple[object, ...]]:
    """Every webhook and delivery column a management write could change."""
    with engine.connect() as connection:
        hooks = connection.exec_driver_sql(
            "SELECT id, url, secret_sealed, previous_secret_sealed, updated_at FROM webhook"
            " ORDER BY id"
        ).all()
        sent = connection.exec_driver_sql(
            "SELECT id, state, next_attempt_at, updated_at FROM webhook_delivery ORDER BY id"
        ).all()
    return [tuple(row) for row in [*hooks, *sent]]


async def answered_after(
    engine: Engine, held: list[str], parameters: dict[str, str], send: Awaitable[httpx.Response]
) -> httpx.Response:
    """The answer to ``send``, sent while another transaction has run ``held`` uncommitted:
    the request must wait on that transaction's locks until it commits."""
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with engine.connect() as other:
        for statement in held:
            other.execute(sa.text(statement), parameters)
        request = asyncio.ensure_future(send)
        for _ in range(200):
            with engine.connect() as connection:
                if request.done() or connection.execute(waiting).scalar_one():
                    break
            await asyncio.sleep(0.05)
        assert not request.done(), "the request did not wait for the other transaction"
        other.commit()
    return await request


@pytest.mark.postgres_only
@pytest.mark.parametrize("racing", RACING.values(), ids=RACING)
@pytest.mark.parametrize("write", WEBHOOK_WRITES.values(), ids=WEBHOOK_WRITES)
async def test_a_webhook_write_racing_the_projects_deletion_or_its_maintainers_removal_is_refused(
    api: Api, engine: Engine, racing: list[str], write: tuple[str, str, dict | None]
) -> None:
    """Without the project lock these writes did not wait for the change in flight, and a
    creation (held up only by its foreign key) committed after it: a webhook made by a
    maintainer already removed, or in a deleted project (which a restore brings back)."""
    owner = await maintainer(api)
    user = await owner.sign_in()
    hook = (await owner.post(HOOKS, json={"url": PUBLIC_URL})).json()
    await owner.post("/api/v1/projects/HOOK/issues", json={"title": "Sent"})
    log = (await owner.get(f"{HOOKS}/{hook['id']}/deliveries")).json()["items"]
    method, path, body = write
    path = path.format(hook=hook["id"], delivery=log[0]["id"])
    before = webhook_state(engine)
    response = await answered_after(
        engine, racing, {"user": user}, owner.request(method, path, json=body)
    )
    assert response.status_code == 404, response.text
    assert webhook_state(engine) == before


@pytest.mark.postgres_only
@pytest.mark.parametrize("racing", ["deletion", "removal"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_project_change_committed_while_the_url_is_checked_refuses_the_write(
    app: FastAPI, api: Api, engine: Engine, racing: str, method: str
) -> None:
    """The URL check resolves the host before any lock is taken (a slow DNS answer must not
    hold the project row); the write then locks the project and reads the caller's standing
    again, so what committed meanwhile refuses it."""
    entered, release = threading.Event(), threading.Event()

    def slow(host: str, port: int) -> list[IPAddress]:
        entered.set()
        release.wait(30)
        return [ip_address("93.184.215.14")]

    owner = await maintainer(api)
    user = await owner.sign_in()
    other = api.as_user("max")
    await owner.put(
        f"/api/v1/projects/HOOK/members/{await other.sign_in()}", json={"role": "maintainer"}
    )
    hook = (await owner.post(HOOKS, json={"url": PUBLIC_URL})).json()
    app.running = replace(  # type: ignore[attr-defined]
        services_of(app), webhook_targets=TargetPolicy(resolver=slow)
    )
    path = HOOKS if method == "POST" else f"{HOOKS}/{hook['id']}"
    before = webhook_state(engine)
    request = asyncio.ensure_future(
        owner.request(method, path, json={"url": "https://slow.example/hook"})
    )
    try:
        assert await anyio.to_thread.run_sync(entered.wait, 30)
        if racing == "deletion":
            changed = await other.delete("/api/v1/projects/HOOK")
        else:
            changed = await other.delete(f"/api/v1/projects/HOOK/members/{user}")
        assert changed.status_code == 204, changed.text
    finally:
        release.set()
    response = await request
    assert response.status_code == 404, response.text
    assert webhook_state(engine) == before
