"""The shared metrics directory of ``flyswatter serve`` with several workers.

prometheus_client picks its storage when it is first imported: with
``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its samples to files there and
``/metrics`` (in any worker) adds them all up. So this module must not import
prometheus_client: ``serve`` calls ``prepare_multiprocess_dir`` before any worker starts.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger("flyswatter.metrics")

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """Set up (or clear) the directory the workers share; None when one process needs none.

    An operator-given directory (``PROMETHEUS_MULTIPROC_DIR``, e.g. a tmpfs volume) is used
    and emptied of the previous run's samples, which would otherwise be added to this run's;
    without one, a fresh temporary directory is made.
    """
    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if not configured:
        if workers <= 1:
            return None
        directory = Path(tempfile.mkdtemp(prefix="flyswatter-metrics-"))
        os.environ[MULTIPROC_DIR_ENV] = str(directory)
        # The workers' samples mean nothing once the server that summed them is gone.
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        return directory
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    # Only prometheus_client's own files: the variable may point at a shared folder by mistake.
    stale = list(directory.glob("*.db"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("metrics: cleared %d sample file(s) of a previous run", len(stale))
    return directory
