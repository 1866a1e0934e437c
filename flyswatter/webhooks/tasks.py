"""The deliverer's Celery tasks: send what is due, prune what is past its retention.

Registered on the job system's Celery app (``flyswatter.jobs.worker.make_celery``), so the
same ``flyswatter worker`` runs them, its beat sends them, and ``flyswatter dev`` runs them on
its in-process worker. Beat sends ``deliver`` every ``FLYSWATTER_WEBHOOK_SWEEP_INTERVAL_SECONDS``;
a run claims and sends batches until nothing is due (or its batch budget is spent, leaving the
rest to the next run). Runs may overlap, on one worker or many: claims skip each other's rows.
A message that waited longer than one interval is dropped (``expires``): the next one does the
same work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flyswatter.config import Settings
from flyswatter.observability.metrics import create_webhook_series
from flyswatter.webhooks.delivery import deliver_due, prune
from flyswatter.webhooks.models import AttemptOutcome

if TYPE_CHECKING:
    from flyswatter.jobs.tasks import JobRuntime
    from flyswatter.jobs.worker import JobsCelery

DELIVER_WEBHOOKS = "flyswatter.webhooks.deliver"
PRUNE_EVENTS = "flyswatter.webhooks.prune_events"
# Batches one run sends at most; the next run goes on where it stopped.
BATCHES_PER_RUN = 10
PRUNE_INTERVAL_SECONDS = 3600.0


def webhook_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    interval = settings.webhook_sweep_interval_seconds
    return {
        "deliver-webhooks": {
            "task": DELIVER_WEBHOOKS,
            "schedule": interval,
            "options": {"expires": interval},
        },
        "prune-events": {
            "task": PRUNE_EVENTS,
            "schedule": PRUNE_INTERVAL_SECONDS,
            "options": {"expires": PRUNE_INTERVAL_SECONDS},
        },
    }


def register_webhook_tasks(app: JobsCelery, runtime: JobRuntime) -> None:
    settings = app.flyswatter_settings
    create_webhook_series(outcome.value for outcome in AttemptOutcome)

    @app.task(name=DELIVER_WEBHOOKS, shared=False, lazy=False, acks_late=True)
    def deliver() -> dict[str, int]:
        return dict(deliver_due(runtime.engine, settings, batches=BATCHES_PER_RUN))

    @app.task(name=PRUNE_EVENTS, shared=False, lazy=False, acks_late=True)
    def prune_events() -> int:
        return prune(runtime.engine, settings)

    app.conf.beat_schedule = {**app.conf.beat_schedule, **webhook_beat_schedule(settings)}
