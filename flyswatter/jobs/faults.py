"""Which faults of a job's run are transient (retried, with backoff), and the words they are
reported in: never a driver's or a library's own text."""

from __future__ import annotations

from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from flyswatter.errors import database_error_summary
from flyswatter.storage.service import StorageUnavailable


def transient_reason(exc: BaseException) -> str | None:
    """A reason a person can read when ``exc`` is a transient fault; None otherwise."""
    if isinstance(exc, StorageUnavailable):
        return f"object storage unavailable: {exc}"
    if isinstance(exc, OperationalError | PoolTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return f"database unavailable ({database_error_summary(exc)})"
    if isinstance(exc, BrokerError):
        return f"message broker unavailable ({type(exc).__name__})"
    return None


class TransientFault(Exception):
    """What a retry is handed instead of the fault itself: Celery logs the exception it retries
    with (its repr, at INFO), and a driver error's repr carries the driver's own text, which
    may quote values. This one carries ``transient_reason``'s words only."""
