"""Fan-out of committed events to the live streams of every worker process and replica.

With ``FLYSWATTER_REDIS_URL`` each commit's events are published on one Redis pub/sub
channel and every process' single subscriber hands them to its own streams; without Redis
(one process) they are handed over in-process. Either way the message is only a nudge with
the event attached: the outbox is the record, and a stream that sees a gap in a project's
numbers, or hears nothing for a heartbeat, reads the outbox. So a lost message (Redis down,
a process killed after its commit) delays events, never loses them.

Each stream's queue is bounded: a client that cannot keep up is marked as overflowed and told
to resync, instead of the process buffering without limit for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import time
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from flyswatter.config import Settings

logger = logging.getLogger("flyswatter.events")

RESUBSCRIBE_SECONDS = 1.0
SUBSCRIBE_WAIT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class LiveEvent:
    project_id: int
    sequence: int
    type: str
    document: str


@dataclass(eq=False)
class Subscription:
    project_id: int
    queue: asyncio.Queue[LiveEvent]
    overflowed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: LiveEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            # Drop what was waiting: the client resumes from the outbox.
            while not self.queue.empty():
                self.queue.get_nowait()
        self.wake.set()


class EventBroker:
    """One per app (process): announces this process' commits, feeds its streams."""

    def __init__(self, settings: Settings) -> None:
        self.channel = settings.events_channel
        self.buffer = settings.events_stream_buffer
        self.redis: Redis | None = (
            Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
            if settings.redis_url
            else None
        )
        self._subscriptions: dict[int, set[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def announce(self, written: Sequence[Any]) -> None:
        """Called on the event loop after a commit, with the events it wrote."""
        events = [
            LiveEvent(item.project_id, item.sequence, item.type, item.document) for item in written
        ]
        if self.redis is None:
            for event in events:
                self._dispatch(event)
            return
        task = asyncio.get_running_loop().create_task(self._publish(events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, events: list[LiveEvent]) -> None:
        assert self.redis is not None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(
                        self.channel,
                        json.dumps(
                            {
                                "project_id": event.project_id,
                                "sequence": event.sequence,
                                "type": event.type,
                                "document": event.document,
                            }
                        ),
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # The streams read these from the outbox at their next heartbeat.
            logger.warning("events: could not publish to Redis (%s)", type(exc).__name__)

    def _dispatch(self, event: LiveEvent) -> None:
        for subscription in self._subscriptions.get(event.project_id, ()):
            subscription.offer(event)

    async def _listen(self) -> None:
        assert self.redis is not None
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._listening.set()
                    async for message in pubsub.listen():
                        self._dispatch_message(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._listening.clear()
                logger.warning("events: Redis subscription lost (%s)", type(exc).__name__)
                await asyncio.sleep(RESUBSCRIBE_SECONDS)

    def _dispatch_message(self, message: dict[str, Any]) -> None:
        try:
            payload = json.loads(message["data"])
            event = LiveEvent(
                int(payload["project_id"]),
                int(payload["sequence"]),
                str(payload["type"]),
                str(payload["document"]),
            )
        except (KeyError, TypeError, ValueError):
            logger.warning("events: ignored a malformed message on %s", self.channel)
            return
        self._dispatch(event)

    async def ready(self) -> None:
        """Wait (briefly) until the Redis subscription is in place; streams work without."""
        if self.redis is None:
            return
        self._start_listener()
        try:
            await asyncio.wait_for(self._listening.wait(), SUBSCRIBE_WAIT_SECONDS)
        except TimeoutError:
            logger.warning("events: Redis subscription not ready; streams poll the outbox")

    def _start_listener(self) -> None:
        if self.redis is not None and (self._listener is None or self._listener.done()):
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    @asynccontextmanager
    async def subscribe(self, project_id: int) -> AsyncIterator[Subscription]:
        self._start_listener()
        subscription = Subscription(project_id, asyncio.Queue(maxsize=self.buffer))
        self._subscriptions.setdefault(project_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(project_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[project_id]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()


# Claims a stream slot for a principal: drops expired slots, refuses past the cap, adds
# this one with its expiry as score. KEYS[1] the principal's set; ARGV now, ttl, cap, id.
_ACQUIRE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('zadd', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
redis.call('expire', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


class StreamSlots:
    """The cap on open streams per principal, shared through Redis by every process.

    A slot expires unless its stream refreshes it (every heartbeat), so slots of a process
    that died free themselves. Without Redis, or when it cannot be reached, the count is this
    process' own.
    """

    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self.cap = settings.events_max_streams_per_principal
        self.ttl = 3 * settings.events_heartbeat_seconds + 5
        self.prefix = f"{settings.events_channel}:streams:"
        self.redis = redis
        self._local: dict[str, set[str]] = {}

    async def acquire(self, principal_key: str) -> str | None:
        slot = uuid.uuid4().hex
        if self.redis is not None:
            try:
                granted = await self.redis.eval(
                    _ACQUIRE, 1, self.prefix + principal_key, time(), self.ttl, self.cap, slot
                )
                return slot if int(granted) else None
            except (RedisError, OSError) as exc:
                logger.warning("events: stream slots fall back to local (%s)", type(exc).__name__)
        local = self._local.setdefault(principal_key, set())
        if len(local) >= self.cap:
            return None
        local.add(slot)
        return slot

    async def refresh(self, principal_key: str, slot: str) -> None:
        if self.redis is not None and slot not in self._local.get(principal_key, ()):
            try:
                await self.redis.zadd(
                    self.prefix + principal_key, {slot: time() + self.ttl}, xx=True
                )
            except (RedisError, OSError):
                return

    async def release(self, principal_key: str, slot: str) -> None:
        local = self._local.get(principal_key)
        if local is not None and slot in local:
            local.discard(slot)
            if not local:
                del self._local[principal_key]
            return
        if self.redis is not None:
            # Release is cleanup, mostly of a stream whose client has gone: sse_starlette
            # cancels that stream, and anyio cancels again at every await that follows, so
            # unshielded the removal would be cut short and the slot held until it expires.
            # The client's socket timeout bounds the wait.
            with anyio.CancelScope(shield=True):
                try:
                    await self.redis.zrem(self.prefix + principal_key, slot)
                except (RedisError, OSError):
                    return
