"""The Celery application: broker, reliability settings, the periodic schedule, and workers.

Job state lives in the database; the broker only carries "work on job X" messages and
Celery keeps no results. Messages are acknowledged after the task ran (``acks_late``), so a
worker that dies mid-task leaves its message unacknowledged: Redis hands it out again once
the visibility timeout has passed, and the task, being idempotent, picks the job up again.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.beat import EmbeddedService, Scheduler
from celery.worker import WorkController
from celery.worker import state as worker_state

from flyswatter.config import Settings

logger = logging.getLogger("flyswatter.jobs")

QUEUE = "flyswatter"
BUILD_REPORT = "flyswatter.jobs.build_report"
REQUEUE_STALE_JOBS = "flyswatter.jobs.requeue_stale_jobs"
EXPIRE_ARTIFACTS = "flyswatter.jobs.expire_artifacts"
REMOVE_DELETED_OBJECTS = "flyswatter.jobs.remove_deleted_objects"
REMOVE_ORPHANED_OBJECTS = "flyswatter.jobs.remove_orphaned_objects"
IN_MEMORY_BROKER = "memory://localhost/"


class SweepScheduler(Scheduler):
    """Beat's schedule in memory, every entry due as soon as beat starts.

    Celery's persistent default keeps the last runs in a shelve file, which every beat on the
    host would share: it has no lock, and concurrent beats can corrupt it. Nothing
    needs the record: every periodic task is a sweep that finds its own work. Running each at
    start means a worker restarted more often than a long interval (the hourly pruning) still
    runs it.
    """

    def setup_schedule(self) -> None:
        long_ago = datetime.min.replace(tzinfo=UTC)
        self.merge_inplace(
            {
                name: {**entry, "last_run_at": long_ago}
                for name, entry in self.app.conf.beat_schedule.items()
            }
        )


class JobsCelery(Celery):
    """A Celery app that carries the settings its tasks run with."""

    flyswatter_settings: Settings


def broker_url(settings: Settings) -> str:
    """Redis when configured; otherwise kombu's in-memory transport, for one process only."""
    return settings.redis_url or IN_MEMORY_BROKER


def make_celery(settings: Settings, *, broker: str | None = None) -> JobsCelery:
    app = JobsCelery("flyswatter", broker=broker or broker_url(settings), set_as_current=False)
    app.flyswatter_settings = settings
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        # A task whose worker process died is put back rather than lost or marked failed.
        task_reject_on_worker_lost=True,
        # One message at a time per process: an unacknowledged message waiting behind a long
        # report would otherwise sit in a prefetch buffer, out of other workers' reach.
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.job_visibility_timeout_seconds,
            "socket_connect_timeout": 3,
            "socket_timeout": 10,
        },
        # Publishing from the API gives up quickly: the periodic sweep republishes jobs that
        # stayed queued, so a broker outage never holds a request.
        broker_connection_timeout=3,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        beat_scheduler=SweepScheduler,
        # No results are kept, so beat has no result cleanup to run.
        result_expires=None,
        beat_schedule={
            "requeue-stale-jobs": {
                "task": REQUEUE_STALE_JOBS,
                "schedule": max(5.0, settings.job_requeue_after_seconds / 2),
            },
            "expire-artifacts": {
                "task": EXPIRE_ARTIFACTS,
                "schedule": float(settings.artifact_sweep_interval_seconds),
            },
            "remove-deleted-objects": {
                "task": REMOVE_DELETED_OBJECTS,
                "schedule": float(settings.artifact_sweep_interval_seconds),
            },
            # The objects whose write was recorded and whose row never came, once past their
            # grace (hours): nothing is gained by looking more often than for the others.
            "remove-orphaned-objects": {
                "task": REMOVE_ORPHANED_OBJECTS,
                "schedule": float(settings.artifact_sweep_interval_seconds),
            },
        },
    )
    from flyswatter.jobs.tasks import JobRuntime, register_tasks
    from flyswatter.webhooks.tasks import register_webhook_tasks

    # One engine per process for every task: the jobs' and the webhook deliverer's.
    runtime = JobRuntime(settings)
    register_tasks(app, runtime)
    register_webhook_tasks(app, runtime)
    return app


def publish_job(app: Celery, job_public_id: str) -> bool:
    """Send the job's message; False (logged) when the broker cannot take it now."""
    try:
        app.send_task(
            BUILD_REPORT,
            args=[job_public_id],
            queue=QUEUE,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception as exc:
        logger.warning(
            "job %s stays queued: the broker did not take it (%s); the sweep republishes it",
            job_public_id,
            type(exc).__name__,
        )
        return False
    return True


class InProcessWorker:
    """A real Celery worker (consumer, solo pool, optional beat) on a thread of this process.

    For ``flyswatter dev`` and the tests: with the in-memory broker, the API process and its
    worker share kombu's queues; nothing is eager, every message goes through the transport.
    """

    def __init__(self, app: Celery, *, beat: bool = False) -> None:
        self.app = app
        self.beat = beat
        self._started = threading.Event()
        self.worker: WorkController = app.WorkController(
            pool_cls="solo",
            concurrency=1,
            hostname=f"inprocess-{id(self):x}@localhost",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=lambda _consumer: self._started.set(),
        )
        # Beat on a thread too (Celery's worker would fork it, away from in-memory queues).
        # Celery's embedded service would take its persistent default, not the app's setting.
        self.beat_service = (
            EmbeddedService(app, thread=True, scheduler_cls=SweepScheduler) if beat else None
        )
        self._thread = threading.Thread(target=self._run, name="celery-worker", daemon=True)

    def _run(self) -> None:
        self.worker.start()

    def start(self, timeout: float = 20.0) -> None:
        # Tasks are looked up in the current app, on the consumer's thread and on the timer
        # thread that runs retries: make this app the process' default.
        self.app.set_default()
        self._thread.start()
        if self.beat_service is not None:
            self.beat_service.start()
        if not self._started.wait(timeout):
            raise RuntimeError("the in-process Celery worker did not start")

    def stop(self, timeout: float = 20.0) -> None:
        if self.beat_service is not None:
            self.beat_service.stop()
        # What Celery's own test worker does: the consumer loop ends at its next tick.
        worker_state.should_terminate = 0
        self._thread.join(timeout)
        worker_state.should_terminate = None
        self.worker.stop(in_sighandler=False)

    def __enter__(self) -> InProcessWorker:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
