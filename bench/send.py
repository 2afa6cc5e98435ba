"""Benchmark: a 100k-person SMS campaign and a 100k-device push campaign, end to end.

    python bench/send.py                          # 100,000 users, 2 workers, sms then push
    python bench/send.py --users 20000 --workers 4 --channels sms
    python bench/send.py --channels push          # push only

What is timed is the whole path a campaign takes in production: launch -> fan-out job
(segment SQL, delivery rows, batches) -> RQ send jobs on `tidings worker` processes -> the real
twilio / firebase-admin clients -> local fakes (in a separate process, so they do not share a
GIL with anything) -> outcomes recorded. The clock starts at launch and stops when no delivery
is pending or sending. Data goes into its own PostgreSQL database (`tidings_bench_send`) by
COPY; Redis database 10 is flushed. Everything runs on 127.0.0.1 and stops by itself.

Besides msg/s it prints CPU per message over the timed run: the send workers' (user + system,
from /proc), the fakes', and the whole machine's busy CPU (which includes PostgreSQL, Redis,
this process, and anything else running on the box: compare it with the first two to see how
much of a figure was lost to neighbours).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.channels import _serve_fakes as serve_fakes  # noqa: E402

DB = "tidings_bench_send"
REDIS_URL = "redis://127.0.0.1:6379/10"
PG = "postgresql://postgres@127.0.0.1:5432"


def create_database(fresh: bool) -> str:
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": DB})
        if exists and fresh:
            conn.execute(sa.text(f'DROP DATABASE "{DB}" WITH (FORCE)'))
            exists = False
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{DB}"'))
    admin.dispose()
    return f"{PG}/{DB}"


def load_people(url: str, users: int) -> int:
    """One app with `users` people: a phone, SMS consent, one device with a push token each."""
    import psycopg

    from tidings import db
    from tidings.apps import create_app_record
    from tidings.config import normalize_database_url

    db.configure(normalize_database_url(url))
    with db.session_scope() as session:
        app, _, _ = create_app_record(session, "bench")
        app_id = app.id
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY users (app_id, external_id, attributes, phone, sms_opt_in, push_opt_in, "
                      "created_at, updated_at) FROM STDIN") as copy:
            for i in range(users):
                copy.write_row((app_id, f"u{i}", '{"plan": "pro"}', f"+1415{5550000 + i:07d}"[:12], True, True,
                                "2026-01-01 00:00:00+00", "2026-01-01 00:00:00+00"))
        cur.execute("SELECT id, external_id FROM users WHERE app_id = %s", (app_id,))
        ids = cur.fetchall()
        with cur.copy("COPY devices (app_id, user_id, device_id, platform, device_type, push_token, "
                      "push_token_valid, created_at, updated_at) FROM STDIN") as copy:
            for user_id, external_id in ids:
                copy.write_row((app_id, user_id, f"d-{external_id}", "android", "phone", f"token-{external_id}",
                                True, "2026-01-01 00:00:00+00", "2026-01-01 00:00:00+00"))
        conn.commit()
        cur.execute("ANALYZE")
    print(f"loaded {users:,} users and devices in {time.perf_counter() - t0:.1f} s")
    return app_id


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def run_campaign(channel: str, app_id: int, env: dict, workers: int) -> dict:
    from campaigns import service
    from campaigns.models import Delivery, DeliveryStatus
    from scheduler import fanout, runner
    from tidings import db
    from tidings.config import Settings

    settings = Settings.from_env(env)
    content = {"body": "Hello {{ user.id }}, 20% off today"} if channel == "sms" else \
        {"title": "Sale", "body": "Hello {{ user.id }}", "data": {"screen": "sale"}}
    with db.session_scope() as session:
        campaign = service.create_campaign(session, app_id, {
            "name": f"bench {channel}", "channel": channel, "quiet_hours": None,
            "targets": [{"control_percent": 0, "variants": [{"name": "A", "content": content}]}]})
        campaign_id = campaign.id
    procs = [subprocess.Popen([sys.executable, "-m", "tidings.cli", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        time.sleep(2.0)  # workers up and listening
        cpu0, busy0 = sum(_process_cpu(p.pid) for p in procs), _machine_busy()
        t0 = time.perf_counter()
        with db.session_scope() as session:
            run_ids = service.launch(session, session.get(type(campaign), campaign_id), settings)
        fanout.enqueue_runs(run_ids)
        last_tick = t0
        while True:
            time.sleep(0.25)
            with db.session_scope() as session:
                counts = dict(session.execute(
                    sa.select(Delivery.status, sa.func.count()).where(Delivery.campaign_id == campaign_id)
                    .group_by(Delivery.status)).all())
            open_ = counts.get(DeliveryStatus.PENDING, 0) + counts.get(DeliveryStatus.SENDING, 0)
            if counts and not open_:
                break
            if time.perf_counter() - last_tick > 5:
                runner.tick()
                last_tick = time.perf_counter()
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"gave up after 15 minutes: {counts}")
        elapsed = time.perf_counter() - t0
        workers_cpu, busy = sum(_process_cpu(p.pid) for p in procs) - cpu0, _machine_busy() - busy0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    sent = counts.get(DeliveryStatus.SENT, 0)
    return {"channel": channel, "deliveries": sum(counts.values()), "sent": sent, "seconds": elapsed,
            "msg_per_s": sent / elapsed, "counts": {str(k): v for k, v in counts.items()},
            "workers_cpu": workers_cpu, "machine_busy": busy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--channels", default="sms,push")
    args = parser.parse_args()

    url = create_database(fresh=True)
    from tidings import migrate
    from tidings.config import normalize_database_url

    migrate.upgrade(normalize_database_url(url))
    app_id = load_people(url, args.users)
    redis.Redis.from_url(REDIS_URL).flushdb()

    parent, child = mp.Pipe()
    folder = tempfile.mkdtemp(prefix="tidings-bench-")
    fakes = mp.get_context("spawn").Process(target=serve_fakes, args=(child, folder, 0.0), daemon=True)
    fakes.start()
    info = parent.recv()
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": REDIS_URL, "PUBLIC_BASE_URL": "http://127.0.0.1:9",
           "TWILIO_ACCOUNT_SID": info["account_sid"], "TWILIO_AUTH_TOKEN": info["auth_token"],
           "TWILIO_FROM": "+15005550006", "TWILIO_API_BASE_URL": info["twilio_url"],
           "FCM_CREDENTIALS": info["credentials_path"], "FCM_API_BASE_URL": info["fcm_url"]}
    from scheduler import queues
    from tidings import config

    queues.configure(REDIS_URL)
    config.set_current(config.Settings.from_env(env))
    results = []
    try:
        for channel in args.channels.split(","):
            parent.send("reset")
            fake_before = parent.recv()
            result = run_campaign(channel, app_id, env, args.workers)
            parent.send("report")
            seen = parent.recv()
            fake_cpu = sum(seen["times"][:2]) - sum(fake_before[:2])
            result["provider_received"] = seen[channel]
            result["duplicates"] = seen["duplicates"]
            results.append(result)
            print(f"{channel}: {result['sent']:,} sent of {result['deliveries']:,} in {result['seconds']:.1f} s "
                  f"= {result['msg_per_s']:,.0f} msg/s; provider received {result['provider_received']:,}, "
                  f"duplicates {result['duplicates']}; {result['counts']}")
            per_msg = 1e6 / max(result["deliveries"], 1)
            print(f"  CPU per message: workers {result['workers_cpu'] * per_msg:.0f} us, fakes {fake_cpu * per_msg:.0f} us, "
                  f"whole machine {result['machine_busy'] * per_msg:.0f} us "
                  f"({result['machine_busy'] / result['seconds']:.2f} of {os.cpu_count()} cores busy)")
    finally:
        parent.send("stop")
        fakes.join(timeout=10)
    print()
    print(f"command: python bench/send.py --users {args.users} --workers {args.workers} --channels {args.channels}")
    print(f"{'channel':8} {'sent':>9} {'seconds':>8} {'msg/s':>8}  goal")
    for r in results:
        print(f"{r['channel']:8} {r['sent']:>9,} {r['seconds']:>8.1f} {r['msg_per_s']:>8,.0f}  >= 2,000 msg/s")


if __name__ == "__main__":
    main()
