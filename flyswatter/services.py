"""The application's long-lived objects, typed: settings always, the rest while it runs.

``create_app`` returns a ``Flyswatter``, a FastAPI application that carries its ``Settings``
and, between the lifespan's start and end, its ``Services``. Routes ask for them with
``ServicesDep``; pure ASGI middleware, which has no dependencies, uses ``services_of``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, FastAPI, Request

if TYPE_CHECKING:
    from slowapi import Limiter
    from sqlalchemy.ext.asyncio import AsyncEngine

    from flyswatter.auth.tokens import TokenVerifier
    from flyswatter.config import Settings
    from flyswatter.events.broker import EventBroker, StreamSlots
    from flyswatter.jobs.service import JobQueue
    from flyswatter.storage.service import Storage
    from flyswatter.users.service import UserMirror
    from flyswatter.webhooks.secret_box import SecretBox
    from flyswatter.webhooks.targets import TargetPolicy


@dataclass(frozen=True, slots=True)
class Services:
    """What every request may use, made by the lifespan and closed by it."""

    settings: Settings
    engine: AsyncEngine
    # The same pool in autocommit, for requests that only read (see db.read_only_engine).
    read_engine: AsyncEngine
    token_verifier: TokenVerifier
    user_mirror: UserMirror
    # The rate limiter (flyswatter.ratelimit): its budgets and where its counters live.
    limiter: Limiter
    # Publishes jobs to the broker.
    jobs: JobQueue
    # Where attachments and reports keep their files: a local folder or an S3 bucket.
    storage: Storage
    # Which webhook URLs may be called (the SSRF guard's rules).
    webhook_targets: TargetPolicy
    # Encrypts webhook signing secrets for the database.
    webhook_secrets: SecretBox
    # Fan-out of committed events to this process' live streams, and the cap on them.
    event_broker: EventBroker
    stream_slots: StreamSlots


class Flyswatter(FastAPI):
    """The FastAPI application with typed settings and services instead of ``app.state``."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.running: Services | None = None

    @property
    def services(self) -> Services:
        if self.running is None:
            raise RuntimeError("the application's lifespan has not started")
        return self.running


def services_of(app: Any) -> Services:
    """The services of a running app (a middleware's ``scope["app"]``, a ``request.app``)."""
    return cast(Flyswatter, app).services


def settings_of(app: FastAPI) -> Settings:
    return cast(Flyswatter, app).settings


async def get_services(request: Request) -> Services:
    return services_of(request.app)


ServicesDep = Annotated[Services, Depends(get_services)]
