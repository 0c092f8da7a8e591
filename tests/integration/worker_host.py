"""The host name a test's Celery worker reports for the tasks it runs.

Airflow records a task instance's host through ``[core] hostname_callable``. Two workers on one
machine would both report its name; each worker of the Celery test points that setting here and
gets the name it was started with, as two workers on two machines would report two names.
A module of its own so the task processes that call it import nothing else.
"""

from __future__ import annotations

import os

WORKER_HOST = "TSAD_TEST_WORKER_HOST"


def name() -> str:
    """The worker's name from ``TSAD_TEST_WORKER_HOST`` (set on that worker's process only)."""
    return os.environ[WORKER_HOST]
