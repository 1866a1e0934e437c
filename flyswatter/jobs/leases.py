"""A running job's lease, renewed while its run works and fenced by the claim's attempt."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Engine, and_, update
from sqlmodel import col

from flyswatter.db import utcnow
from flyswatter.jobs.faults import transient_reason
from flyswatter.jobs.models import Job, JobState

if TYPE_CHECKING:
    from flyswatter.jobs.tasks import Claim

logger = logging.getLogger("flyswatter.jobs")


class LeaseKeeper:
    """A claim's lease, renewed while its run works: every third of the lease, each time in a
    short transaction of its own, on a thread (the run is busy in long calls meanwhile).

    Renewal is fenced by the claim's attempt, not by the clock: one that comes late (the
    database was slow) still holds the job if no other run took it meanwhile; one that finds
    a newer attempt, or the job finished, stops and marks the claim ``lost``. On leaving with
    an exception the lease is released, so that the task's retry may claim the job at once.
    """

    def __init__(self, engine: Engine, public_id: str, claim: Claim, lease_seconds: int) -> None:
        self.engine = engine
        self.public_id = public_id
        self.claim = claim
        self.lease = timedelta(seconds=lease_seconds)
        self.lost = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name=f"job-lease-{public_id}", daemon=True
        )

    def _held(self) -> ColumnElement[bool]:
        return and_(
            col(Job.id) == self.claim.job_id,
            col(Job.state) == JobState.running,
            col(Job.attempts) == self.claim.attempts,
        )

    def _renew_until_stopped(self) -> None:
        while not self._stopped.wait(self.lease.total_seconds() / 3):
            try:
                with self.engine.begin() as connection:
                    renewed = connection.execute(
                        update(Job)
                        .where(self._held())
                        .values(lease_expires_at=utcnow() + self.lease)
                    )
            except Exception as exc:
                # The next renewal may get through before the lease lapses; if it does not,
                # the fencing keeps a newer run's outcome safe from this one.
                why = transient_reason(exc) or type(exc).__name__
                logger.warning("job %s: lease not renewed (%s)", self.public_id, why)
                continue
            if renewed.rowcount != 1:
                self.lost.set()
                return

    def _release(self) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    update(Job).where(self._held()).values(lease_expires_at=utcnow())
                )
        except Exception as exc:
            why = transient_reason(exc) or type(exc).__name__
            logger.warning("job %s: lease not released, it lapses (%s)", self.public_id, why)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()
        if exc_info[1] is not None:
            self._release()
