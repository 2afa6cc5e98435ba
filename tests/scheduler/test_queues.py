"""Queue names live in one place and the worker serves every one of them."""

from __future__ import annotations

from scheduler import queues
from scheduler.queues import QueueName


def test_worker_listens_on_every_queue(redis_conn, redis_url):
    queues.configure(redis_url)
    worker = queues.make_worker()
    assert sorted(worker.queue_names()) == sorted(q.value for q in QueueName)


def test_jobs_are_queued_with_the_json_serializer(redis_conn, redis_url):
    queues.configure(redis_url)
    job = queues.enqueue(QueueName.DEFAULT, "math.sqrt", 16)
    assert job.serializer.__name__.endswith("JSONSerializer")
