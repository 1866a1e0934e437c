"""``GET /api/v1/projects/{key}/events``: a project's events, live, as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from sse_starlette import EventSourceResponse

from flyswatter.auth.scopes import Scope
from flyswatter.db import SessionDep
from flyswatter.errors import TooManyRequests, problem_responses
from flyswatter.events.stream import ProjectStream
from flyswatter.projects.models import Role
from flyswatter.projects.service import ProjectAccess, project_access
from flyswatter.services import ServicesDep

router = APIRouter(tags=["events"])

ProjectForFollowing = Annotated[
    ProjectAccess, Depends(project_access(Role.viewer, Scope.issues_read, "following events"))
]
STREAM_DESCRIPTION = """A `text/event-stream`. Each event: `event:` its type (`issue.created`,
`comment.created`, ...), `id:` its number in the project, `data:` the event (as webhooks receive
it). Comments (`: ping`) are heartbeats. An event `resync` asks the client to reload what it
shows: the stream fell behind (it then ends; reconnect with `Last-Event-ID`) or the events after
`Last-Event-ID` are no longer kept, or the caller may no longer see the project (the stream
then ends). A stream ends when the caller's token expires, or after a while: EventSource then
reconnects with `Last-Event-ID`."""

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": STREAM_DESCRIPTION}
}


@router.get(
    "/projects/{key}/events",
    response_class=EventSourceResponse,
    responses=STREAM_RESPONSE | problem_responses(401, 403, 404, 422, 429),
)
async def follow_events(
    session: SessionDep,
    services: ServicesDep,
    access: ProjectForFollowing,
    last_event_id: Annotated[
        str | None,
        Header(
            max_length=20,
            description="Resume after this event number (EventSource sends it on reconnect).",
        ),
    ] = None,
) -> EventSourceResponse:
    """Follow the project's events as they are committed (members with `issues:read`)."""
    settings, slots = services.settings, services.stream_slots
    principal_key = access.principal.key
    slot = await slots.acquire(principal_key)
    if slot is None:
        raise TooManyRequests(
            f"at most {slots.cap} event streams may be open at once; close one first",
            headers={"Retry-After": str(int(settings.events_heartbeat_seconds))},
        )
    try:
        # The stream reads the outbox with short-lived connections of its own: the request's
        # session must not hold a pooled connection for as long as the stream stays open.
        await session.close()
    except BaseException:
        await slots.release(principal_key, slot)
        raise
    stream = ProjectStream(
        engine=services.read_engine,
        broker=services.event_broker,
        slots=slots,
        settings=settings,
        project_id=access.project_id,
        principal=access.principal,
        slot=slot,
        last_event_id_header=last_event_id,
    )
    return EventSourceResponse(
        stream.events(),
        ping=settings.events_heartbeat_seconds,
        # A client that stops reading is cut off rather than held in memory.
        send_timeout=2 * settings.events_heartbeat_seconds,
        headers={"X-Accel-Buffering": "no"},
    )
