"""RQ queues: their names in one place, the Redis connection, and the embedded worker.

With `REDIS_URL` set, queues live in that Redis and `tidings worker` processes serve them.
Without it (dev/demo), queues live in an in-process fakeredis server and `start_embedded_worker`
runs a thread that serves them: the same RQ code path, minus the separate process.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable

import fakeredis
import redis
from rq import Callback, Queue, SimpleWorker
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

log = logging.getLogger(__name__)


class QueueName(enum.StrEnum):
    """Every queue Tidings uses, highest priority first (a worker drains them in this order)."""

    SEND = "tidings-send"
    DEFAULT = "tidings-default"
    IMPORTS = "tidings-imports"


_connection: redis.Redis | None = None
_fake_server: fakeredis.FakeServer | None = None


def configure(redis_url: str | None) -> redis.Redis:
    """Set the process-wide Redis connection (fakeredis when `redis_url` is empty)."""
    global _connection, _fake_server
    if redis_url:
        _connection = redis.Redis.from_url(redis_url)
    else:
        if _fake_server is None:
            _fake_server = fakeredis.FakeServer()
        _connection = fakeredis.FakeRedis(server=_fake_server)
    return _connection


def connection() -> redis.Redis:
    if _connection is None:
        raise RuntimeError("scheduler.queues.configure() has not been called")
    return _connection


def is_embedded() -> bool:
    return isinstance(connection(), fakeredis.FakeRedis)


def get_queue(name: QueueName) -> Queue:
    return Queue(name.value, connection=connection(), serializer=JSONSerializer)


def all_queues() -> list[Queue]:
    return [get_queue(name) for name in QueueName]


def enqueue(name: QueueName, func: str | Callable, *args, job_id: str | None = None,
            on_failure: str | None = None, **options):
    """Queue a job by dotted path; arguments must be ids and primitives (JSON serializer).

    `on_failure`: dotted path of a function RQ calls when the job raises.
    """
    if on_failure:
        options["on_failure"] = Callback(on_failure)
    return get_queue(name).enqueue(func, *args, job_id=job_id, **options)


class ThreadWorker(SimpleWorker):
    """A SimpleWorker that can run in a non-main thread (no signal handlers, timer timeouts)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):  # signals only work in the main thread
        pass


def make_worker(*, in_thread: bool = False) -> SimpleWorker:
    cls = ThreadWorker if in_thread else SimpleWorker
    return cls(all_queues(), connection=connection(), serializer=JSONSerializer)


def start_embedded_worker() -> threading.Thread:
    """Serve the in-process queues from a daemon thread (only when no REDIS_URL is set)."""

    def run():
        worker = make_worker(in_thread=True)
        worker.work(burst=False, with_scheduler=False, logging_level="WARNING")

    thread = threading.Thread(target=run, name="tidings-embedded-worker", daemon=True)
    thread.start()
    log.info("embedded worker started")
    return thread
