"""The benchmark's baselines, run under the same server (uvicorn, one process) as the service.

B1 is the transport limit: a bare Starlette JSON endpoint. B2 is the database limit: a
minimal Starlette endpoint that verifies the token exactly as Flyswatter does, then runs
exactly the SQL Flyswatter ran for the same request (recorded from the service, see
``bench.record_service_sql``) through a psycopg pool, and returns the rows as JSON.
B3 is the live-stream limit (``bench.sse``): the same Server-Sent Events library as the
service (sse-starlette), an endpoint that streams whatever is posted to every open stream
from a queue per stream, with no token check, database or broker in between.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flyswatter.auth.tokens import TokenRejected, TokenVerifier
from flyswatter.config import Settings
from flyswatter.db import utcnow


async def bare_json(request: Request) -> Response:
    return JSONResponse({"status": "ok", "items": [], "next_cursor": None})


b1_app = Starlette(routes=[Route("/json", bare_json)])


def _b2_app() -> Starlette:
    recorded: dict[str, dict[str, Any]] = {}
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings = Settings()
        sql_file = Path(os.environ["BENCH_B2_SQL"])
        recorded.update(json.loads(await asyncio.to_thread(sql_file.read_text)))
        url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
        pool = AsyncConnectionPool(url, min_size=4, max_size=10, open=False)
        await pool.open()
        verifier = TokenVerifier(settings)
        await verifier.refresh_keys(force=True)
        state.update(pool=pool, verifier=verifier)
        yield
        await pool.close()
        await verifier.close()

    async def replay(request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        try:
            await state["verifier"].verify(authorization.removeprefix("Bearer "))
        except TokenRejected:
            return JSONResponse({"detail": "invalid token"}, status_code=401)
        scenario = recorded[request.path_params["scenario"]]
        rows: list[Any] = []
        # What the replayed statements hand out, put in place of the recorded values: the
        # issue number (UPDATE project ... RETURNING) and the event number (the upsert of
        # event_sequence ... RETURNING), both unique per project.
        allocated: dict[str, int] = {}
        async with state["pool"].connection() as connection:
            # As the service: reads in autocommit (no BEGIN/ROLLBACK), writes in a transaction.
            await connection.set_autocommit(not scenario["rollback"])
            for statement, parameters in scenario["statements"]:
                if isinstance(parameters, list):
                    # An executemany (the history, inserted at commit in one statement).
                    async with connection.cursor() as many:
                        await many.executemany(statement, parameters)
                    continue
                parameters = {
                    **parameters,
                    **{k: v for k, v in allocated.items() if k in parameters},
                }
                if "uid" in parameters:
                    # An event's unique id, drawn anew for each event as the service does.
                    parameters["uid"] = str(uuid.uuid4())
                cursor = await connection.execute(statement, parameters)
                if cursor.description is not None:
                    fetched = await cursor.fetchall()
                    rows.append(fetched)
                    head = statement.lstrip().upper()
                    if head.startswith("UPDATE PROJECT"):
                        allocated["number"] = fetched[0][0]
                    elif head.startswith("INSERT INTO EVENT_SEQUENCE"):
                        allocated["sequence"] = fetched[0][0]
            if scenario["rollback"]:
                # Writes are replayed with the service's own values (its issue number, ...),
                # so they are rolled back rather than committed twice.
                await connection.rollback()
        return Response(json.dumps(rows, default=str), media_type="application/json")

    return Starlette(
        routes=[Route("/b2/{scenario}", replay, methods=["GET", "POST"])], lifespan=lifespan
    )


b2_app = _b2_app()


def _b3_app() -> Starlette:
    streams: set[asyncio.Queue[tuple[int, str]]] = set()
    numbers = iter(range(1, 1 << 62))

    async def follow(request: Request) -> Response:
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        streams.add(queue)

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                yield ServerSentEvent(comment="stream open")
                while True:
                    number, document = await queue.get()
                    yield ServerSentEvent(data=document, event="issue.created", id=str(number))
            finally:
                streams.discard(queue)

        return EventSourceResponse(events(), ping=15)

    async def publish(request: Request) -> Response:
        # Stamped as the service stamps its events: the writer's time, before the answer.
        event = {**await request.json(), "timestamp": utcnow().isoformat()}
        document = json.dumps(event)
        number = next(numbers)
        for queue in streams:
            queue.put_nowait((number, document))
        return JSONResponse({"sequence": number}, status_code=201)

    return Starlette(routes=[Route("/events", follow), Route("/events", publish, methods=["POST"])])


b3_app = _b3_app()
