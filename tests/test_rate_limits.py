"""Rate limits: per-principal write and read budgets, shared through Redis, failing open."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

import flyswatter.ratelimit.limiter as limiter_module
from flyswatter.app import create_app
from flyswatter.config import Settings
from flyswatter.ratelimit.limiter import SweptMemoryStorage, build_limiter
from tests.support.api import Api
from tests.support.identity import JwksServer, TokenFactory
from tests.support.servers import RedisServer, ServedFlyswatter, free_port, served_database

PROJECTS = "/api/v1/projects"

AppFactory = Callable[..., AbstractAsyncContextManager[Api]]


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unique(name: str) -> str:
    """A username no other test (or earlier run sharing the Redis) has spent budget for."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def project_body(index: int) -> dict[str, str]:
    return {"key": f"RL{index}", "name": f"Limited {index}"}


@pytest.fixture
def limited_app(settings: Settings, tokens: TokenFactory) -> AppFactory:
    """An app with rate limits on (the suite's default is off), with its own client."""

    @asynccontextmanager
    async def start(**overrides: object) -> AsyncIterator[Api]:
        limited = settings.model_copy(
            update={
                "rate_limit_enabled": True,
                "rate_limit_writes": "3/hour",
                "rate_limit_reads": "5/hour",
                **overrides,
            }
        )
        app = create_app(limited)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                yield Api(c, tokens)

    return start


async def test_write_budget_used_up_is_a_429_problem_with_retry_after(
    limited_app: AppFactory,
) -> None:
    async with limited_app() as api:
        alice = api.as_user(unique("alice"))
        for index in range(3):
            assert (await alice.post(PROJECTS, json=project_body(index))).status_code == 201
        before = counter("flyswatter_rate_limited_requests_total", kind="write")

        refused = await alice.post(PROJECTS, json=project_body(9))

    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "urn:flyswatter:problem:rate-limited"
    assert problem["status"] == 429
    assert problem["request_id"] == refused.headers["x-request-id"]
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= int(time.time())
    assert counter("flyswatter_rate_limited_requests_total", kind="write") == before + 1


async def test_successful_responses_count_down_the_remaining_budget(
    limited_app: AppFactory,
) -> None:
    async with limited_app() as api:
        alice = api.as_user(unique("alice"))
        remaining = [(await alice.get(PROJECTS)).headers["x-ratelimit-remaining"] for _ in range(3)]
    assert remaining == ["4", "3", "2"]


async def test_one_principal_exhausting_its_budget_does_not_affect_another(
    limited_app: AppFactory,
) -> None:
    async with limited_app() as api:
        alice, bob = api.as_user(unique("alice")), api.as_user(unique("bob"))
        robot = api.as_service(unique("robot"))
        for index in range(3):
            assert (await alice.post(PROJECTS, json=project_body(index))).status_code == 201
        assert (await alice.post(PROJECTS, json=project_body(3))).status_code == 429

        assert (await bob.post(PROJECTS, json=project_body(4))).status_code == 201
        assert (await robot.post(PROJECTS, json=project_body(5))).status_code == 201


async def test_a_service_account_is_limited_by_client_id_across_its_tokens(
    limited_app: AppFactory, tokens: TokenFactory
) -> None:
    async with limited_app() as api:
        client_id = unique("robot")
        for index in range(3):
            fresh = api.as_service(client_id)  # a new token each time, same client
            assert (await fresh.post(PROJECTS, json=project_body(index))).status_code == 201
        assert (
            await api.as_service(client_id).post(PROJECTS, json=project_body(3))
        ).status_code == 429


async def test_reads_are_not_counted_against_writes(limited_app: AppFactory) -> None:
    async with limited_app() as api:
        alice = api.as_user(unique("alice"))
        for _ in range(5):
            assert (await alice.get(PROJECTS)).status_code == 200
        assert (await alice.get(PROJECTS)).status_code == 429

        created = await alice.post(PROJECTS, json=project_body(1))
        assert created.status_code == 201
        assert created.headers["x-ratelimit-limit"] == "3"
        assert created.headers["x-ratelimit-remaining"] == "2"


async def test_writes_are_not_counted_against_reads(limited_app: AppFactory) -> None:
    async with limited_app() as api:
        alice = api.as_user(unique("alice"))
        for index in range(3):
            assert (await alice.post(PROJECTS, json=project_body(index))).status_code == 201
        assert (await alice.post(PROJECTS, json=project_body(3))).status_code == 429
        assert (await alice.get(PROJECTS)).status_code == 200


async def test_failed_authentication_is_limited_by_client_address(
    limited_app: AppFactory, tokens: TokenFactory
) -> None:
    async with limited_app() as api:
        garbage = {"Authorization": "Bearer not-a-token"}
        for _ in range(5):
            assert (await api.client.get(PROJECTS, headers=garbage)).status_code == 401
        before = counter("flyswatter_rate_limited_requests_total", kind="read")

        flood = await api.client.get(PROJECTS, headers=garbage)
        no_token = await api.client.get(PROJECTS)
        # A valid token from the same address spends its own budget, not the address's.
        alice = await api.as_user(unique("alice")).get(PROJECTS)

    assert flood.status_code == 429
    assert flood.headers["content-type"] == "application/problem+json"
    assert flood.json()["type"] == "urn:flyswatter:problem:rate-limited"
    assert "retry-after" in flood.headers
    assert "www-authenticate" not in flood.headers
    assert no_token.status_code == 429
    assert alice.status_code == 200
    assert counter("flyswatter_rate_limited_requests_total", kind="read") == before + 2


async def test_the_429_for_a_spent_address_carries_cors_headers_and_preflights_are_free(
    settings: Settings,
) -> None:
    origin = "https://ui.example"
    limited = settings.model_copy(
        update={"rate_limit_enabled": True, "rate_limit_reads": "2/hour", "cors_origins": [origin]}
    )
    app = create_app(limited)
    # An address of its own: no earlier run sharing the Redis has spent this budget.
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "GET"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            early = [await c.options(PROJECTS, headers=preflight) for _ in range(3)]
            statuses = [
                (await c.get(PROJECTS, headers={"Origin": origin})).status_code for _ in range(2)
            ]
            refused = await c.get(PROJECTS, headers={"Origin": origin})
            late = await c.options(PROJECTS, headers=preflight)

    # Preflights are answered before the limits and spend nothing, even once it is used up.
    assert {response.status_code for response in [*early, late]} == {200}
    assert all(response.headers["access-control-allow-origin"] == origin for response in early)
    assert all("x-request-id" in response.headers for response in [*early, late])
    assert statuses == [401, 401]
    # A browser on an allowed origin can read the 429 and its Retry-After.
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == origin
    assert "retry-after" in refused.headers["access-control-expose-headers"].lower()
    assert "retry-after" in refused.headers
    assert "x-request-id" in refused.headers


async def test_limits_off_leave_requests_and_headers_alone(limited_app: AppFactory) -> None:
    async with limited_app(rate_limit_enabled=False) as api:
        alice = api.as_user(unique("alice"))
        responses = [await alice.get(PROJECTS) for _ in range(8)]
    assert {response.status_code for response in responses} == {200}
    assert "x-ratelimit-limit" not in responses[-1].headers


async def test_two_app_instances_sharing_redis_spend_one_budget(
    limited_app: AppFactory, redis_url: str
) -> None:
    alice_name = unique("alice")
    async with limited_app(redis_url=redis_url) as one, limited_app(redis_url=redis_url) as two:
        statuses = []
        for index, api in enumerate([one, two, one, two, one]):
            response = await api.as_user(alice_name).post(PROJECTS, json=project_body(index))
            statuses.append(response.status_code)
    assert statuses == [201, 201, 201, 429, 429]


async def test_unreachable_redis_fails_open_to_per_process_limits(
    limited_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = free_port()
    closed = f"redis://127.0.0.1:{closed_port}/0"
    errors_before = counter("flyswatter_rate_limit_storage_errors_total")
    with caplog.at_level(logging.WARNING, logger="flyswatter.ratelimit"):
        async with limited_app(redis_url=closed) as api:
            alice = api.as_user(unique("alice"))
            started = time.monotonic()
            statuses = [
                (await alice.post(PROJECTS, json=project_body(index))).status_code
                for index in range(4)
            ]
            elapsed = time.monotonic() - started

    # Requests are served, the budget still holds in this process, and the outage is visible.
    assert statuses == [201, 201, 201, 429]
    assert elapsed < 5
    # One failed round trip, then local limits until the retry interval has passed.
    assert counter("flyswatter_rate_limit_storage_errors_total") == errors_before + 1
    # One warning line in all (slowapi's own fallback warning is not written twice).
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings if "Redis unreachable" in r.getMessage()] == [
        warnings[0].getMessage()
    ]
    assert len(warnings) == 1
    assert f"127.0.0.1:{closed_port}" in warnings[0].getMessage()  # where it was looked for
    assert closed not in caplog.text


@pytest.mark.slow
async def test_write_limit_holds_across_two_serving_processes_sharing_redis(
    settings: Settings,
    database_url: str,
    jwks_server: JwksServer,
    tokens: TokenFactory,
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
) -> None:
    budget, sent = 5, 16
    with served_database(database_url, postgres_url) as served_url:
        # Two processes, each addressed on its own port, so which one answers is not up to
        # the kernel: each receives more than the whole budget, and only a shared count
        # holds the pair to it.
        services = [
            ServedFlyswatter(
                database_url=served_url,
                jwks_server=jwks_server,
                log_path=tmp_path / f"serve-{index}.log",
                redis_url=redis_url,
                workers=1,
                rate_limit_writes=f"{budget}/hour",
            )
            for index in range(2)
        ]
        with services[0] as first, services[1] as second:
            token = tokens.user_token(unique("alice"))

            async def create(index: int) -> int:
                served = (first, second)[index % 2]
                async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as http:
                    response = await http.post(
                        PROJECTS,
                        json={"key": f"WX{index}", "name": "Shared budget"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                return response.status_code

            statuses = await asyncio.gather(*(create(index) for index in range(sent)))

    assert sorted(statuses) == [201] * budget + [429] * (sent - budget), statuses


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path)
    yield redis
    redis.stop()


async def test_limits_are_shared_again_once_redis_is_back(
    limited_app: AppFactory, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice_name = unique("alice")
    with caplog.at_level(logging.INFO, logger="flyswatter.ratelimit"):
        async with limited_app(redis_url=private_redis.url) as api:
            alice = api.as_user(alice_name)
            # Redis not there yet: spent in this process's memory.
            assert (await alice.post(PROJECTS, json=project_body(0))).status_code == 201
            await asyncio.to_thread(private_redis.start)
            # slowapi pings the storage again when a request comes after its back-off (1, 2,
            # 4 ... s since the last ping); reads spend another budget than the writes below.
            deadline = time.monotonic() + 70
            while not any("Redis is back" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the limiter never went back to Redis"
                await alice.get(PROJECTS)
                await asyncio.sleep(0.25)
            # Back on Redis: its counter starts from nothing, the local one is left behind.
            responses = [
                await alice.post(PROJECTS, json=project_body(index)) for index in range(1, 5)
            ]
    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    assert responses[0].headers["x-ratelimit-remaining"] == "2"


async def test_redis_lost_between_the_check_and_the_headers_falls_back_with_one_warning(
    limited_app: AppFactory,
    private_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis that dies (or times out) after a request's check but before its headers are read:
    slowapi's header code logged an ERROR with a traceback for every such response, left the
    headers out, and never fell back, so the outage went uncounted and unannounced."""
    private_redis.start()
    real_check = limiter_module.check

    def check_then_lose_redis(limiter: Any, request: Any) -> None:
        real_check(limiter, request)
        monkeypatch.setattr(limiter_module, "check", real_check)
        private_redis.stop()

    errors_before = counter("flyswatter_rate_limit_storage_errors_total")
    with caplog.at_level(logging.INFO):
        async with limited_app(redis_url=private_redis.url) as api:
            alice = api.as_user(unique("alice"))
            monkeypatch.setattr(limiter_module, "check", check_then_lose_redis)
            first = await alice.get(PROJECTS)
            later = [await alice.get(PROJECTS) for _ in range(6)]

    assert first.status_code == 200
    # Headers from the in-memory fallback, which counts every request from here on (the
    # first was spent in Redis): the budget that will be enforced next.
    assert first.headers["x-ratelimit-limit"] == "5"
    assert first.headers["x-ratelimit-remaining"] == "5"
    assert "x-ratelimit-reset" in first.headers
    assert [r.status_code for r in later] == [200] * 5 + [429]
    assert later[-1].headers["retry-after"].isdigit()
    assert counter("flyswatter_rate_limit_storage_errors_total") == errors_before + 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"rate limits: Redis unreachable at 127.0.0.1:{private_redis.port}; workers limit on "
        "their own until it is back"
    ]


async def test_memory_and_redis_storage_decide_and_count_down_alike(
    limited_app: AppFactory, redis_url: str
) -> None:
    answers: dict[str, list[tuple[int, str]]] = {}
    # Each run creates its own projects (keys RL0.., RL10..): the database is shared.
    for offset, (storage, overrides) in enumerate(
        (("memory", {}), ("redis", {"redis_url": redis_url}))
    ):
        async with limited_app(rate_limit_writes="5/hour", **overrides) as api:
            alice = api.as_user(unique("alice"))
            answers[storage] = []
            for index in range(7):
                response = await alice.post(PROJECTS, json=project_body(10 * offset + index))
                answers[storage].append(
                    (response.status_code, response.headers["x-ratelimit-remaining"])
                )
    expected = [(201, "4"), (201, "3"), (201, "2"), (201, "1"), (201, "0")] + [(429, "0")] * 2
    assert answers == {"memory": expected, "redis": expected}


async def test_equal_write_and_read_limits_still_keep_two_budgets(
    limited_app: AppFactory,
) -> None:
    async with limited_app(rate_limit_writes="3/hour", rate_limit_reads="3/hour") as api:
        alice = api.as_user(unique("alice"))
        for index in range(3):
            assert (await alice.post(PROJECTS, json=project_body(index))).status_code == 201
        reads = [(await alice.get(PROJECTS)).status_code for _ in range(4)]
    assert reads == [200, 200, 200, 429]


async def test_only_a_429_carries_the_limit_retry_after(limited_app: AppFactory) -> None:
    async with limited_app() as api:
        response = await api.as_user(unique("alice")).get(PROJECTS)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "4"
    assert "retry-after" not in response.headers


def test_the_slowapi_internals_the_limiter_builds_on_are_still_there() -> None:
    """slowapi's middleware checks limits through ``Limiter`` methods that are not public API;
    the service calls them where the principal is known. An upgrade that renames or reshapes
    them fails here, not at the first request."""
    limiter = build_limiter(Settings(rate_limit_enabled=True))
    assert list(inspect.signature(limiter._check_request_limit).parameters) == [
        "request",
        "endpoint_func",
        "in_middleware",
    ]
    # The headers are read as slowapi's ``_inject_asgi_headers`` reads them.
    assert limiter._headers_enabled is True
    assert list(inspect.signature(limiter.limiter.get_window_stats).parameters) == [
        "item",
        "identifiers",
    ]
    assert limiter._storage_dead is False
    assert limiter._storage is not None
    assert [limit.scope for group in limiter._application_limits for limit in group] == [
        "write",
        "read",
    ]


def test_the_memory_storage_sweeps_inline_and_starts_no_thread_per_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """limits' memory storage starts a timer thread 10 ms after each hit; this one sweeps on
    the hit that finds a sweep due, and the counters still expire."""
    monkeypatch.setattr(SweptMemoryStorage, "SWEEP_INTERVAL_SECONDS", 0.05)
    limiter = build_limiter(Settings(rate_limit_enabled=True))
    storage = limiter._storage
    assert isinstance(storage, SweptMemoryStorage)
    timers: list[threading.Timer] = []

    class CountedTimer(threading.Timer):
        def start(self) -> None:
            timers.append(self)
            super().start()

    monkeypatch.setattr(threading, "Timer", CountedTimer)
    for _ in range(50):
        storage.incr("busy", expiry=10)
        time.sleep(0.002)
    storage.incr("forgotten", expiry=0.01)
    assert timers == []
    time.sleep(0.06)
    storage.incr("busy", expiry=10)  # the hit that finds the sweep due
    assert "forgotten" not in storage.storage
    assert storage.get("busy") == 51


def test_the_fallback_for_a_redis_outage_counts_in_the_same_memory_storage() -> None:
    limiter = build_limiter(Settings(rate_limit_enabled=True, redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(limiter._fallback_storage, SweptMemoryStorage)
    assert limiter._fallback_limiter is not None
    assert limiter._fallback_limiter.storage is limiter._fallback_storage
