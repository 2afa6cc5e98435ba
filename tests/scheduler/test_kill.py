"""A worker killed with SIGKILL in the middle of a campaign loses no SMS and sends none twice.

Real PostgreSQL, real Redis, real `tidings worker` processes (RQ), the real twilio client against
FakeTwilio. Recovery is what production does: Twilio's signed status callbacks settle the sends
the dead worker had handed over, and the scheduler's sweeper returns what no provider ever saw
to `pending` and re-queues the lost batch.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from campaigns.models import Delivery, DeliveryStatus
from scheduler import runner
from scheduler.queues import all_queues
from segments.models import User
from tidings.db import session_scope

USERS = 3000


def worker(env, log_path):
    log = open(log_path, "ab")  # noqa: SIM115 - closed by the caller via proc.log
    proc = subprocess.Popen([sys.executable, "-m", "tidings.cli", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log.close()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigkill_mid_campaign_sends_exactly_one_sms_per_eligible_user(
        api, client, run_jobs, fake_twilio, provider_settings, database_url, redis_url, tmp_path):
    users = [{"external_id": f"k{i}", "phone": f"+1415555{i:04d}", "sms_opt_in": True} for i in range(USERS)]
    for start in range(0, USERS, 1000):
        assert api.post("/users/batch", json={"users": users[start:start + 1000]}).status_code == 200
    campaign = api.post("/campaigns", json={
        "name": "Kill test", "channel": "sms", "quiet_hours": None,
        "targets": [{"control_percent": 10, "variants": [
            {"name": "A", "content": {"body": "A for {{ user.id }}"}},
            {"name": "B", "content": {"body": "B for {{ user.id }}"}}]}]}).json
    fake_twilio.fault_next(USERS, delay=0.05)  # every request succeeds, 50 ms late: a batch takes ~1.5 s

    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "PUBLIC_BASE_URL": provider_settings.public_base_url,
           "TWILIO_ACCOUNT_SID": fake_twilio.account_sid, "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
           "TWILIO_FROM": provider_settings.twilio_from, "TWILIO_API_BASE_URL": fake_twilio.url}
    victim = worker(env, tmp_path / "victim.log")
    survivor = None
    try:
        assert api.post(f"/campaigns/{campaign['id']}/launch").status_code == 200
        wait_for(lambda: len(fake_twilio.requests) >= 600, 120, "the first 600 sends")
        # Kill right after a request reached the provider: the worker is inside a batch's sends.
        seen = len(fake_twilio.requests)
        wait_for(lambda: len(fake_twilio.requests) > seen, 30, "a send in flight")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        survivor = worker(env, tmp_path / "survivor.log")

        def drained():
            before = len(fake_twilio.requests)
            time.sleep(1.5)
            return all(q.count == 0 for q in all_queues()) and len(fake_twilio.requests) == before
        wait_for(drained, 180, "the surviving worker to finish")
    finally:
        stop(victim, signal.SIGKILL)
        if survivor is not None:
            stop(survivor)

    with session_scope() as s:
        left = Counter(s.scalars(sa.select(Delivery.status).where(
            Delivery.status.in_([DeliveryStatus.SENDING, DeliveryStatus.PENDING]))))
    in_flight = left[DeliveryStatus.SENDING]
    assert in_flight > 0, "the kill should have caught sends in flight; nothing was tested"
    print(f"after the kill: {in_flight} sending (in flight), {left[DeliveryStatus.PENDING]} pending, "
          f"{len(fake_twilio.messages)} accepted by the provider")

    # Twilio calls back for every message it accepted, including the dead worker's.
    for message in fake_twilio.messages:
        callback = fake_twilio.status_callback_request(message, "delivered")
        parts = urlsplit(callback.url)
        r = client.post(f"{parts.path}?{parts.query}", data=callback.form, headers=callback.headers)
        assert r.status_code == 204, r.data

    # The sweeper, once the grace period is over, recovers the rest; a worker sends it.
    later = dt.datetime.now(dt.UTC) + runner.SENDING_GRACE + runner.BATCH_STALE + dt.timedelta(minutes=1)
    runner.tick(later)
    run_jobs()
    runner.tick(later)
    run_jobs()
    runner.tick(later)

    with session_scope() as s:
        rows = s.execute(sa.select(User.phone, Delivery.status, Delivery.control)
                         .join(User, User.id == Delivery.user_id)).all()
    received = Counter(m.to for m in fake_twilio.messages)
    eligible = {phone for phone, _, control in rows if not control}
    held_out = {phone for phone, _, control in rows if control}
    assert len(rows) == USERS
    assert 200 <= len(held_out) <= 400
    duplicates = {phone: n for phone, n in received.items() if n > 1}
    assert duplicates == {}, f"sent twice: {list(duplicates)[:5]}"
    assert set(received) == eligible, f"lost: {len(eligible - set(received))}"
    assert not held_out & set(received)
    with session_scope() as s:
        statuses = Counter(s.scalars(sa.select(Delivery.status).where(Delivery.control.is_(False))))
    assert set(statuses) <= {DeliveryStatus.SENT, DeliveryStatus.DELIVERED}
    assert sum(statuses.values()) == len(eligible)
    assert api.get(f"/campaigns/{campaign['id']}").json["status"] == "finished"
