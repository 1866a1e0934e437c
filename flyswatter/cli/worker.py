"""``flyswatter worker``: the Celery worker for jobs and webhook deliveries."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flyswatter.cli.common import positive_int, settings_or_exit


def cmd_worker(args: argparse.Namespace) -> None:
    from flyswatter.observability.multiprocess import prepare_multiprocess_dir

    settings = settings_or_exit()
    if settings.redis_url is None:
        sys.exit(
            "flyswatter: refusing to start: FLYSWATTER_REDIS_URL is not set; the worker "
            "takes its jobs from that broker (flyswatter dev runs one in-process instead)"
        )
    # Before prometheus_client is imported: the pool processes write to a shared directory.
    prepare_multiprocess_dir(workers=2)

    from flyswatter.jobs.health import serve_worker_endpoint
    from flyswatter.jobs.worker import QUEUE, make_celery
    from flyswatter.observability.errors import init_error_reporting
    from flyswatter.observability.logs import configure_logging
    from flyswatter.storage.s3 import S3Storage
    from flyswatter.storage.service import StorageUnavailable

    configure_logging(settings.log_format, settings.log_level)
    init_error_reporting(settings, "worker")
    celery = make_celery(settings)
    if settings.storage_backend == "s3" and settings.s3_create_bucket:
        try:
            S3Storage(settings).ensure_bucket()
        except StorageUnavailable as exc:
            # Not fatal: report jobs retry until the storage answers.
            print(f"flyswatter: the bucket could not be checked now: {exc}", file=sys.stderr)
    if settings.worker_metrics_port:
        try:
            serve_worker_endpoint(
                settings.redis_url, settings.worker_metrics_host, settings.worker_metrics_port
            )
        except OSError as exc:
            sys.exit(f"flyswatter: the worker's metrics port cannot bind: {exc.strerror}")
    argv = [
        "worker",
        f"--loglevel={settings.log_level.upper()}",
        f"--concurrency={args.concurrency}",
        f"--queues={QUEUE}",
        f"--hostname={args.hostname}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.beat:
        argv.append("--beat")
    celery.worker_main(argv)


def add_worker_command(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="Celery worker for jobs (reports) and webhook deliveries; broker: "
        "FLYSWATTER_REDIS_URL",
    )
    worker.add_argument(
        "--concurrency", type=positive_int, default=2, help="worker processes (default: 2)"
    )
    worker.add_argument(
        "--beat", action="store_true", help="also run the periodic tasks (one worker only)"
    )
    worker.add_argument("--hostname", default="flyswatter@%h", help="the worker's node name")
    worker.set_defaults(handler=cmd_worker)
