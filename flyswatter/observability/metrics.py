"""Prometheus metrics. Names start with ``flyswatter_``; HTTP metrics use route templates.

In ``serve`` with several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set before any worker
imports prometheus_client, so every metric here is written to the shared directory and
``/metrics`` aggregates all workers.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# ``*_created`` series double the series count and no dashboard or alert reads them.
disable_created_metrics()

HTTP_REQUESTS = Counter(
    "flyswatter_http_requests",
    "HTTP requests handled, by method, route template and status",
    ["method", "route", "status"],
)
# Latency by route, not by status: each label set costs 16 series (buckets, sum, count), and
# multiplied by every status a route answers they made /metrics several times larger and
# slower to merge across workers; the dashboards read latency per route, and the request
# counter above keeps the statuses.
HTTP_LATENCY = Histogram(
    "flyswatter_http_request_duration_seconds",
    "Time to handle an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_PROGRESS = Gauge(
    "flyswatter_http_requests_in_progress",
    "HTTP requests being handled now",
    ["method", "route"],
    # Summed over live workers; a dead worker's share disappears with it.
    multiprocess_mode="livesum",
)
RATE_LIMITED = Counter(
    "flyswatter_rate_limited_requests",
    "Requests refused with 429, by limit kind (read/write)",
    ["kind"],
)
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "flyswatter_rate_limit_storage_errors",
    "Times the rate limiter lost its shared storage (Redis) and fell back to per-process limits",
)
AUTH_FAILURES = Counter(
    "flyswatter_auth_failures",
    "Requests refused for authentication, by reason",
    ["reason"],
)
JWKS_REFRESHES = Counter(
    "flyswatter_jwks_refreshes",
    "Fetches of the realm's signing keys, by outcome",
    ["outcome"],
)
ISSUES_CREATED = Counter("flyswatter_issues_created", "Issues created")
ISSUE_TRANSITIONS = Counter(
    "flyswatter_issue_transitions",
    "Issue status transitions, by target status",
    ["to"],
)
COMMENTS_CREATED = Counter("flyswatter_comments_created", "Comments created")
DATABASE_ERRORS = Counter(
    "flyswatter_database_errors",
    "Requests that failed on a database error, by kind",
    ["kind"],
)

# Jobs (Celery workers). Written by the worker processes; see flyswatter.jobs.metrics.
JOBS_REQUESTED = Counter("flyswatter_jobs_requested", "Jobs requested, by kind", ["kind"])
JOBS_FINISHED = Counter(
    "flyswatter_jobs_finished",
    "Jobs that reached a final state, by kind and state (succeeded/failed/cancelled)",
    ["kind", "state"],
)
JOB_RETRIES = Counter(
    "flyswatter_job_retries", "Job attempts that met a transient fault and were retried", ["kind"]
)
JOB_QUEUE_WAIT = Histogram(
    "flyswatter_job_queue_wait_seconds",
    "Time from a job's request to its first start by a worker, by kind",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
JOB_RUN_TIME = Histogram(
    "flyswatter_job_run_seconds",
    "Time a successful job attempt ran, by kind",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)


def create_job_series(kinds: Iterable[str]) -> None:
    """Zero-valued series for every job kind and final state, so that dashboards and alerts
    see a flat zero, not "no data", before the first job of a kind finishes or retries."""
    for kind in kinds:
        JOBS_REQUESTED.labels(kind)
        JOB_RETRIES.labels(kind)
        JOB_QUEUE_WAIT.labels(kind)
        JOB_RUN_TIME.labels(kind)
        for state in ("succeeded", "failed", "cancelled"):
            JOBS_FINISHED.labels(kind, state)


def create_webhook_series(outcomes: Iterable[str]) -> None:
    """Zero-valued delivery series for every outcome, as for jobs: a flat zero before the
    first delivery, not "no data"."""
    for outcome in outcomes:
        WEBHOOK_DELIVERIES.labels(outcome)
        WEBHOOK_DELIVERY_LATENCY.labels(outcome)
    WEBHOOK_RETRY_BACKLOG_AGE.set(0)


def count_jwks_refresh(outcome: str) -> None:
    """``TokenVerifier``'s ``on_refresh`` hook."""
    JWKS_REFRESHES.labels(outcome).inc()


EVENTS_WRITTEN = Counter(
    "flyswatter_events_written",
    "Events written to the outbox (committed), by type",
    ["type"],
)
WEBHOOK_DELIVERIES = Counter(
    "flyswatter_webhook_deliveries",
    "Webhook delivery attempts, by outcome (succeeded, http_error, timeout, ...)",
    ["outcome"],
)
WEBHOOK_DELIVERY_LATENCY = Histogram(
    "flyswatter_webhook_delivery_duration_seconds",
    "Time from sending a webhook to the receiver's answer (or the failure), by outcome",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
WEBHOOK_RETRY_BACKLOG_AGE = Gauge(
    "flyswatter_webhook_retry_backlog_age_seconds",
    "Age of the oldest webhook delivery still waiting for a retry (0 when none waits)",
    # Each sweep measures the whole backlog: the latest measurement of a live process holds.
    multiprocess_mode="livemostrecent",
)
EVENT_STREAMS_OPEN = Gauge(
    "flyswatter_event_streams_open",
    "Live event streams (Server-Sent Events) open now",
    multiprocess_mode="livesum",
)
