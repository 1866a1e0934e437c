"""The live event stream: Server-Sent Events read by a real HTTP client over a real socket."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from httpx_sse import ServerSentEvent, aconnect_sse

from flyswatter.app import create_app
from flyswatter.config import Settings
from flyswatter.dev.server import BackgroundServer
from flyswatter.events.stream import PAGE, ProjectStream
from flyswatter.services import Flyswatter
from tests.support.api import Api
from tests.support.identity import TokenFactory


@pytest.fixture
def settings(base_settings: Settings, clean_database: str) -> Settings:
    return base_settings.model_copy(
        update={"events_heartbeat_seconds": 0.5, "events_max_streams_per_principal": 2}
    )


@contextmanager
def serving(settings: Settings) -> Iterator[BackgroundServer]:
    """The app under uvicorn in a thread of this process: one process."""
    server = BackgroundServer()
    server.start(create_app(settings))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live(settings: Settings) -> Iterator[BackgroundServer]:
    """Served without Redis: stream slots and fan-out in the process."""
    with serving(settings) as server:
        yield server


@pytest.fixture
def on_redis(settings: Settings, redis_url: str) -> Settings:
    """Stream slots and fan-out in Redis, on a channel (and slot keys) of this test's own."""
    channel = f"flyswatter-test:{uuid.uuid4().hex}"
    return settings.model_copy(update={"redis_url": redis_url, "events_channel": channel})


@pytest.fixture
def live_on_redis(on_redis: Settings) -> Iterator[BackgroundServer]:
    with serving(on_redis) as server:
        yield server


def bearer(tokens: TokenFactory, username: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.user_token(username, **claims)}"}


async def setup_project(http: httpx.AsyncClient, tokens: TokenFactory) -> None:
    owner = bearer(tokens, "otto")
    created = await http.post(
        "/api/v1/projects", json={"key": "LIVE", "name": "Live"}, headers=owner
    )
    assert created.status_code == 201, created.text


async def file_issue(http: httpx.AsyncClient, tokens: TokenFactory, title: str) -> None:
    response = await http.post(
        "/api/v1/projects/LIVE/issues", json={"title": title}, headers=bearer(tokens, "otto")
    )
    assert response.status_code == 201, response.text


@asynccontextmanager
async def follow(
    http: httpx.AsyncClient,
    headers: dict[str, str] | dict[str, str | bytes],
    *,
    patience: float = 0.0,
) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """The project's stream; refused for the caller's stream cap (429), tried again for up
    to ``patience`` seconds, as a client told to wait would."""
    deadline = time.monotonic() + patience
    while True:
        url = "/api/v1/projects/LIVE/events"
        async with aconnect_sse(http, "GET", url, headers=headers) as source:
            if source.response.status_code != 429 or time.monotonic() >= deadline:
                assert source.response.status_code == 200, await source.response.aread()
                assert source.response.headers["content-type"].startswith("text/event-stream")
                yield source.aiter_sse()
                return
        await asyncio.sleep(0.05)


async def next_events(events: AsyncIterator[ServerSentEvent], count: int) -> list[ServerSentEvent]:
    """The next ``count`` events that carry data (heartbeats and comments skipped)."""
    found: list[ServerSentEvent] = []
    with anyio.fail_after(15):
        async for event in events:
            if event.data:
                found.append(event)
                if len(found) == count:
                    break
    return found


async def test_member_follows_events_as_they_commit(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        async with follow(http, bearer(tokens, "otto")) as events:
            await file_issue(http, tokens, "Live one")
            await file_issue(http, tokens, "Live two")
            first, second = await next_events(events, 2)
    assert (first.event, first.id, second.id) == ("issue.created", "1", "2")
    document = json.loads(first.data)
    assert document["data"]["issue"]["title"] == "Live one"
    assert document["sequence"] == 1
    assert document["project_key"] == "LIVE"


async def test_last_event_id_resumes_from_the_outbox(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        for number in range(3):
            await file_issue(http, tokens, f"Missed {number}")
        headers = {**bearer(tokens, "otto"), "Last-Event-ID": "1"}
        async with follow(http, headers) as events:
            missed = await next_events(events, 2)
            await file_issue(http, tokens, "Live")
            (live_event,) = await next_events(events, 1)
    assert [event.id for event in missed] == ["2", "3"]
    assert live_event.id == "4"
    assert json.loads(live_event.data)["data"]["issue"]["title"] == "Live"


async def test_a_stream_resuming_after_a_comment_was_deleted_is_not_sent_its_text(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    owner = bearer(tokens, "otto")
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20, headers=owner) as http:
        await setup_project(http, tokens)
        await file_issue(http, tokens, "Leak")
        comment = await http.post(
            "/api/v1/issues/LIVE-1/comments", json={"body": "the token is s3cr3t"}
        )
        assert comment.status_code == 201, comment.text
        deleted = await http.delete(f"/api/v1/comments/{comment.json()['id']}")
        assert deleted.status_code == 204
        async with follow(http, {**owner, "Last-Event-ID": "1"}) as events:
            replayed = await next_events(events, 2)
    assert [event.event for event in replayed] == ["comment.created", "comment.deleted"]
    assert "s3cr3t" not in "".join(event.data for event in replayed)
    assert json.loads(replayed[0].data)["data"]["comment"] is None


async def test_unknown_last_event_id_is_told_to_resync(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        await file_issue(http, tokens, "Only")
        headers = {**bearer(tokens, "otto"), "Last-Event-ID": "99"}
        async with follow(http, headers) as events:
            (told,) = await next_events(events, 1)
            await file_issue(http, tokens, "After")
            (after,) = await next_events(events, 1)
    assert told.event == "resync"
    assert told.id == ""
    assert json.loads(told.data)["reason"] == "unknown_event_id"
    assert after.id == "2"


async def test_a_last_event_id_of_other_digits_is_told_to_resync(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    """ "²" (latin-1 0xB2) is a digit to str.isdigit(), not to int(): not a number here."""
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        await file_issue(http, tokens, "Only")
        headers: dict[str, str | bytes] = {**bearer(tokens, "otto"), "Last-Event-ID": b"\xb2"}
        async with follow(http, headers) as events:
            (told,) = await next_events(events, 1)
    assert told.event == "resync"
    assert json.loads(told.data)["reason"] == "unknown_event_id"


async def test_a_member_removed_while_following_gets_no_more_events(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        owner, viewer = bearer(tokens, "otto"), bearer(tokens, "vera")
        vera = (await http.get("/api/v1/users/me", headers=viewer)).json()["id"]
        member = f"/api/v1/projects/LIVE/members/{vera}"
        assert (await http.put(member, json={"role": "viewer"}, headers=owner)).status_code == 201
        async with follow(http, viewer) as events:
            await file_issue(http, tokens, "Seen")
            (seen,) = await next_events(events, 1)
            assert (await http.delete(member, headers=owner)).status_code == 204
            await file_issue(http, tokens, "Filed after the removal")
            told = await next_events(events, 2)
    assert json.loads(seen.data)["data"]["issue"]["title"] == "Seen"
    # The stream ends after telling why: nothing of the later issue reaches the viewer.
    assert [event.event for event in told] == ["resync"]
    assert json.loads(told[0].data)["reason"] == "access_withdrawn"


async def test_a_stream_ends_when_its_token_expires(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        expiring = bearer(tokens, "otto", exp=int(time.time()) + 2)
        async with follow(http, expiring) as events:
            with anyio.fail_after(10):
                left = [event async for event in events if event.data]
    assert left == []


async def test_pruned_history_is_told_to_resync(
    live: BackgroundServer, tokens: TokenFactory, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        for number in range(3):
            await file_issue(http, tokens, f"Old {number}")
        engine = sa.create_engine(settings.sync_database_url)
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM event WHERE sequence < 3")
        engine.dispose()
        headers = {**bearer(tokens, "otto"), "Last-Event-ID": "0"}
        async with follow(http, headers) as events:
            told, kept = await next_events(events, 2)
    assert told.event == "resync"
    assert json.loads(told.data)["reason"] == "history_pruned"
    assert kept.id == "3"


async def test_outsiders_and_missing_scopes_are_refused(
    live: BackgroundServer, tokens: TokenFactory
) -> None:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        url = "/api/v1/projects/LIVE/events"
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers=bearer(tokens, "stranger"))).status_code == 404
        narrow = bearer(tokens, "otto", scopes=["projects:read"])
        assert (await http.get(url, headers=narrow)).status_code == 403


@pytest.mark.parametrize("served", ["live", "live_on_redis"])
async def test_streams_per_principal_are_capped(
    served: str, request: pytest.FixtureRequest, tokens: TokenFactory
) -> None:
    live: BackgroundServer = request.getfixturevalue(served)
    async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
        await setup_project(http, tokens)
        headers = bearer(tokens, "otto")
        async with follow(http, headers), follow(http, headers):
            refused = await http.get("/api/v1/projects/LIVE/events", headers=headers)
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert "Retry-After" in refused.headers
        # Closed streams give their slots back, once the server has seen them close: it
        # learns of a close from the connection, a moment after the client drops it. Well
        # before a slot left behind would expire (6.5 s here).
        async with follow(http, headers, patience=3) as events:
            await file_issue(http, tokens, "Again")
            assert len(await next_events(events, 1)) == 1


async def test_a_client_that_falls_behind_is_told_to_resync(
    base_settings: Settings, clean_database: str, api: Api
) -> None:
    settings = base_settings.model_copy(update={"events_stream_buffer": 2})
    async with in_process(settings, api) as (app, writer):
        events = (await stream_of(app, "otto", api.tokens)).events()
        assert (await anext(events)).comment == "stream open"
        # The client reads nothing while five events commit.
        for number in range(5):
            await writer.post("/api/v1/projects/LIVE/issues", json={"title": f"T{number}"})
        await asyncio.sleep(0.1)
        told = await anext(events)
        await events.aclose()
    assert told.event == "resync"
    assert json.loads(str(told.data)) == {
        "reason": "too_slow",
        "last_event_id": 0,
        "detail": "the stream fell behind; reconnect with Last-Event-ID",
    }


@asynccontextmanager
async def in_process(settings: Settings, api: Api) -> AsyncIterator[tuple[Flyswatter, Api]]:
    """The app started in this test's event loop, with otto's project LIVE, and otto."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            writer = Api(http, api.tokens).as_user("otto")
            await writer.post("/api/v1/projects", json={"key": "LIVE", "name": "Live"})
            yield app, writer


async def stream_of(app: Flyswatter, username: str, tokens: TokenFactory) -> ProjectStream:
    """The user's stream of LIVE as the route would make it, holding a slot, not yet read."""
    services = app.services
    principal = await services.token_verifier.verify(tokens.user_token(username))
    slot = await services.stream_slots.acquire(principal.key)
    assert slot is not None
    return ProjectStream(
        engine=services.read_engine,
        broker=services.event_broker,
        slots=services.stream_slots,
        settings=services.settings,
        project_id=await project_id_of(app, "LIVE"),
        principal=principal,
        slot=slot,
        last_event_id_header=None,
    )


async def project_id_of(app: Flyswatter, key: str) -> int:
    async with app.services.engine.connect() as connection:
        result = await connection.execute(
            sa.text("SELECT id FROM project WHERE key = :k"), {"k": key}
        )
        return int(result.scalar_one())


@pytest.mark.parametrize("table", ["event_sequence", "project_member", "event"])
async def test_a_stream_cut_off_mid_read_gives_back_its_connection_and_slot(
    table: str, on_redis: Settings, api: Api
) -> None:
    """A client that goes away cancels its stream, and anyio cancels again at every later
    await: the read under way finishes and hands its connection back to the pool intact,
    and the slot is given back at once rather than held until it expires."""
    async with in_process(on_redis, api) as (app, _):
        stream = await stream_of(app, "otto", api.tokens)
        services = app.services
        pool = services.engine.pool
        discarded: list[object] = []
        sa.event.listen(pool, "invalidate", lambda connection, *_: discarded.append(connection))
        # The stream's task, cancelled as sse_starlette cancels it when the client leaves:
        # here in the middle of a statement that reads the table.
        with anyio.CancelScope() as client_left:

            def leave_mid_read(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                if re.search(rf"\b{table}\b", statement):
                    client_left.cancel()

            sa.event.listen(services.engine.sync_engine, "before_cursor_execute", leave_mid_read)
            try:
                async for _ in stream.events():
                    pass
            finally:
                sa.event.remove(
                    services.engine.sync_engine, "before_cursor_execute", leave_mid_read
                )
        assert client_left.cancelled_caught
        # Back in the pool, and fit for use: not discarded as one cut off mid-statement is.
        assert pool.checkedout() == 0
        assert discarded == []
        redis = services.stream_slots.redis
        assert redis is not None
        assert await redis.zcard(services.stream_slots.prefix + stream.principal.key) == 0


async def store_outbox_events(app: Flyswatter, project_id: int, count: int) -> None:
    """``count`` committed events of the project, written straight to the outbox: a history
    to catch up on, longer than one page of it."""
    async with app.services.engine.begin() as connection:
        actor = (await connection.execute(sa.text('SELECT id FROM "user"'))).scalar_one()
        await connection.execute(
            sa.text(
                "INSERT INTO event (uid, project_id, sequence, type, actor_id, occurred_at,"
                " payload) VALUES (:uid, :project, :sequence, 'issue.created', :actor,"
                " CURRENT_TIMESTAMP, '{}')"
            ),
            [
                {"uid": uuid.uuid4().hex, "project": project_id, "sequence": n, "actor": actor}
                for n in range(1, count + 1)
            ],
        )
        await connection.execute(
            sa.text("UPDATE event_sequence SET last_sequence = :n WHERE project_id = :project"),
            {"n": count, "project": project_id},
        )


async def catching_up(app: Flyswatter, api: Api, **principal: Any) -> ProjectStream:
    """Otto's stream of LIVE resuming from its first event, with PAGE + 50 to catch up on."""
    stream = await stream_of(app, "otto", api.tokens)
    await store_outbox_events(app, stream.project_id, PAGE + 50)
    return replace(
        stream, last_event_id_header="0", principal=replace(stream.principal, **principal)
    )


async def data_events(events: AsyncIterator[Any], count: int) -> list[Any]:
    return [event for _ in range(count) if (event := await anext(events)).data is not None]


async def test_a_long_catch_up_ends_when_its_token_expires(settings: Settings, api: Api) -> None:
    async with in_process(settings, api) as (app, _):
        stream = await catching_up(app, api, expires_at=time.time() + 1)
        events = stream.events()
        assert (await anext(events)).comment == "stream open"
        first_page = await data_events(events, PAGE)
        await asyncio.sleep(1.1)
        rest = [event async for event in events]
    assert [event.id for event in first_page] == [str(n) for n in range(1, PAGE + 1)]
    assert rest == []


async def test_a_long_catch_up_stops_once_access_is_withdrawn(settings: Settings, api: Api) -> None:
    async with in_process(settings, api) as (app, writer):
        stream = await catching_up(app, api)
        events = stream.events()
        await anext(events)
        await data_events(events, PAGE)
        assert (await writer.delete("/api/v1/projects/LIVE")).status_code == 204
        rest = [event async for event in events]
    assert [event.event for event in rest] == ["resync"]
    assert json.loads(str(rest[0].data))["reason"] == "access_withdrawn"


async def test_a_long_catch_up_keeps_its_slot_alive(on_redis: Settings, api: Api) -> None:
    async with in_process(on_redis, api) as (app, _):
        stream = await catching_up(app, api)
        slots = app.services.stream_slots
        assert slots.redis is not None
        key = slots.prefix + stream.principal.key
        events = stream.events()
        await anext(events)
        await data_events(events, PAGE)
        expiry_during_first_page = await slots.redis.zscore(key, stream.slot)
        await asyncio.sleep(0.05)
        (next_page_event,) = await data_events(events, 1)
        expiry_after = await slots.redis.zscore(key, stream.slot)
        await events.aclose()
    assert next_page_event.id == str(PAGE + 1)
    assert expiry_during_first_page is not None
    assert expiry_after is not None
    assert expiry_after > expiry_during_first_page


async def test_a_stream_whose_token_expires_while_events_keep_coming_ends(
    settings: Settings, api: Api
) -> None:
    async with in_process(settings, api) as (app, writer):
        stream = await stream_of(app, "otto", api.tokens)
        stream = replace(stream, principal=replace(stream.principal, expires_at=time.time() + 1))
        events = stream.events()
        assert (await anext(events)).comment == "stream open"
        waiting = asyncio.ensure_future(anext(events))
        for number in range(3):
            await writer.post("/api/v1/projects/LIVE/issues", json={"title": f"T{number}"})
        first = await waiting
        # Two events wait in the stream's queue while the token expires.
        await asyncio.sleep(1.1)
        rest = [event async for event in events]
    assert first.id == "1"
    assert rest == []
