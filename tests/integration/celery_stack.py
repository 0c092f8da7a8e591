"""Airflow on a distributed executor: the stack of :mod:`stack_servers` with CeleryExecutor.

The scheduler sends task instances through Redis (the broker) to ``airflow celery worker``
processes, each its own process group with its own name, and Celery keeps its results in
Airflow's PostgreSQL database. The test's tasks travel on a queue named for the test alone, so
a parallel session on the same Redis never takes them. Workers can be killed (SIGKILL: the
worker, its pool and the task processes) and started again, as a lost machine would be; the
scheduler's task-instance heartbeat timeout is short so that a lost task is noticed in seconds
rather than minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
import worker_host
from stack_servers import AirflowStack, Server

from pipeline.config import project_root

REDIS_URL = os.environ.get("TSAD_TEST_REDIS", "redis://127.0.0.1:6379/13")
# A task instance whose heartbeat is older than this is failed by the scheduler and retried;
# workers heartbeat every second so that a busy machine never trips it on a live task.
HEARTBEAT_TIMEOUT_S = 10


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


@dataclass
class CeleryStack(AirflowStack):
    """Scheduler, dag-processor and api-server as in :class:`AirflowStack`, plus named Celery
    workers; task instances record the name of the worker that ran them as their host."""

    queue: str = field(default_factory=lambda: f"tsad-test-{uuid.uuid4().hex[:10]}")
    workers: dict[str, Server] = field(default_factory=dict)

    def environment(self, port: int, all_admins: bool = False) -> dict[str, str]:
        """The stack's variables with CeleryExecutor, Redis and the database result backend."""
        here = Path(__file__).resolve().parent
        return super().environment(port, all_admins) | {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.database_url}",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # The worker's task processes import this repository and the host name callable.
            "PYTHONPATH": os.pathsep.join([str(project_root()), str(here)]),
        }

    def start_worker(self, name: str, concurrency: int = 1) -> Server:
        """``airflow celery worker`` named ``name``, serving the test's queue only.

        One task at a time by default: with Airflow's prefetch of one message per slot, each
        idle worker takes the next task, so the tasks of a run spread over the workers.
        """
        env = self.environment(self.port) | {
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{worker_host.__name__}.name",
            worker_host.WORKER_HOST: name,
        }
        command = [
            "celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", self.queue,
            "--concurrency", str(concurrency), "--skip-serve-logs",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        worker = self._launch(name, command, self.url, env)
        self.workers[name] = worker
        return worker

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and every process under it, as a machine that vanishes: nothing
        it ran reports back or finishes. The stack no longer counts it among its live servers.

        The whole tree, not the worker's process group: Airflow's supervisor puts each task
        process in a group of its own, which would outlive the group and finish the task.
        """
        worker = self.workers.pop(name)
        self.servers.remove(worker)
        tree = psutil.Process(worker.process.pid).children(recursive=True)
        worker.process.kill()  # first, so that no pool process is started again
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        worker.process.wait()
        psutil.wait_procs(tree, timeout=30)

    def stop(self) -> None:
        """Stop every process, then drop what the test's queue left in Redis."""
        super().stop()
        self.workers.clear()
        drop_queue(self.queue)


def drop_queue(queue: str) -> None:
    """Delete a queue's keys from Redis, and the messages a killed worker left unacknowledged
    on it (Redis would deliver them again after a day), leaving other queues alone."""
    client = redis.Redis.from_url(REDIS_URL)
    with contextlib.closing(client):
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        for tag, message in client.hgetall("unacked").items():
            if json.loads(message)[-1] == queue:  # [message, exchange, routing key]
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
