"""The live stream across ``flyswatter serve --workers 2``: events fan out through Redis.

Streams are opened until both workers hold at least one (seen from each worker's own
sockets), then issues are filed over fresh connections, which land on either worker: every
stream must receive every event, in order, whichever worker committed it.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.support.identity import JwksServer, TokenFactory
from tests.support.servers import ServedFlyswatter, served_database

pytestmark = pytest.mark.slow

MAX_STREAMS = 40


@pytest.fixture(scope="module")
def served(
    database_url: str,
    postgres_url: str,
    redis_url: str,
    migrated_database: str,
    jwks_server: JwksServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServedFlyswatter]:
    root = tmp_path_factory.mktemp("served-events")
    with (
        served_database(database_url, postgres_url) as url,
        ServedFlyswatter(
            database_url=url,
            jwks_server=jwks_server,
            redis_url=redis_url,
            log_path=root / "serve.log",
            # A channel of this run's own on the shared Redis.
            events_channel=f"flyswatter-test:{uuid.uuid4().hex}",
            # Longer than the test waits: events arrive through pub/sub, not the outbox poll.
            events_heartbeat_seconds="120",
            events_max_streams_per_principal=str(MAX_STREAMS),
            rate_limit_enabled="false",
        ) as server,
    ):
        yield server


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    return inodes


def established_clients(pid: int, port: int) -> int:
    """Connections to ``port`` that worker ``pid`` holds open (from /proc/net/tcp)."""
    inodes = socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


async def data_events(source: AsyncIterator[ServerSentEvent], count: int) -> list[ServerSentEvent]:
    found: list[ServerSentEvent] = []
    with anyio.fail_after(30):
        async for event in source:
            if event.data:
                found.append(event)
                if len(found) == count:
                    return found
    return found


async def test_every_stream_on_either_worker_receives_every_event_in_order(
    served: ServedFlyswatter, jwks_server: JwksServer
) -> None:
    tokens = TokenFactory(jwks_server)
    headers = {"Authorization": f"Bearer {tokens.user_token('fanny')}"}
    key = "S" + uuid.uuid4().hex[:6].upper()
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as http:
        created = await http.post(
            "/api/v1/projects", json={"key": key, "name": "Fan-out"}, headers=headers
        )
        assert created.status_code == 201, created.text
        async with AsyncExitStack() as streams:
            sources = []
            workers = served.worker_pids()
            assert len(workers) == 2
            while len(sources) < MAX_STREAMS:
                # Each stream on a connection of its own, so the kernel may hand it to either.
                client = await streams.enter_async_context(
                    httpx.AsyncClient(base_url=served.base_url, timeout=30)
                )
                source = await streams.enter_async_context(
                    aconnect_sse(client, "GET", f"/api/v1/projects/{key}/events", headers=headers)
                )
                assert source.response.status_code == 200
                sources.append(source.aiter_sse())
                # Paced: a worker that is still starting cannot take connections yet.
                await anyio.sleep(0.25)
                held = [established_clients(pid, served.port) for pid in workers]
                if all(held):
                    break
            assert all(held), f"streams did not spread over both workers: {held}"
            for number in range(6):
                # A fresh connection per write, so the writes land on both workers too.
                async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as writer:
                    response = await writer.post(
                        f"/api/v1/projects/{key}/issues",
                        json={"title": f"Fan-out {number}"},
                        headers=headers,
                    )
                    assert response.status_code == 201, response.text
            received = [await data_events(source, 6) for source in sources]
    for events in received:
        assert [event.id for event in events] == ["1", "2", "3", "4", "5", "6"]
        titles = [json.loads(event.data)["data"]["issue"]["title"] for event in events]
        assert titles == [f"Fan-out {number}" for number in range(6)]
