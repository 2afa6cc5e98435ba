"""Benchmark: in-app and hook pulls under load (goal >= 1,500 req/s at p99 <= 20 ms).

    python bench/inapp.py                      # 100k users, 50 running campaigns, gunicorn x2, wrk
    python bench/inapp.py --users 20000 --duration 10 --workers 2 --connections 16

Loads 100,000 people (attributes, devices, recent events) into its own PostgreSQL database
(`tidings_bench_inapp`) with COPY, creates 20 power hooks and 50 running campaigns (25 in-app,
25 config) whose targets use attribute, device and event conditions, starts `tidings serve`
(gunicorn) on 127.0.0.1, warms every person once (first pulls write their deliveries), then
drives GET /users/{id}/inapp and /users/{id}/hooks alternately with wrk for `--duration`
seconds, rotating through the people. Needs `wrk` (Debian package `wrk`). Prints req/s and the
latency distribution. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

DB = "tidings_bench_inapp"
PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/8"
TIERS = ["bronze", "silver", "gold", "platinum"]
EVENTS = ["app_open", "view_item", "add_to_cart", "purchase", "share"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(users: int) -> tuple[str, str]:
    """Fresh database with people, hooks and 50 running campaigns; returns (url, client key)."""
    import psycopg

    from campaigns import hooks, service
    from tidings import db, migrate
    from tidings.apps import create_app_record
    from tidings.config import Settings, normalize_database_url

    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB}"'))
    admin.dispose()
    url = f"{PG}/{DB}"
    migrate.upgrade(normalize_database_url(url))
    db.configure(normalize_database_url(url))
    with db.session_scope() as session:
        app, _, client_key = create_app_record(session, "bench")
        app_id = app.id
    rng = random.Random(1)
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY users (app_id, external_id, attributes, country, timezone, sms_opt_in, push_opt_in, "
                      "created_at, updated_at, last_seen_at) FROM STDIN") as copy:
            for i in range(users):
                attrs = {"tier": rng.choice(TIERS), "age": rng.randint(16, 70), "first_name": f"N{i}"}
                copy.write_row((app_id, f"u{i}", json.dumps(attrs), rng.choice(["US", "FR", "DE", "BR"]),
                                "Europe/Paris", True, True, "2026-01-01 00:00:00+00", "2026-01-01 00:00:00+00",
                                "2026-11-01 00:00:00+00"))
        cur.execute("SELECT id FROM users WHERE app_id = %s ORDER BY id", (app_id,))
        ids = [r[0] for r in cur.fetchall()]
        with cur.copy("COPY devices (app_id, user_id, device_id, platform, device_type, app_version, "
                      "app_version_key, push_token_valid, created_at, updated_at) FROM STDIN") as copy:
            from segments.versions import version_key

            for user_id in ids:
                version = rng.choice(["3.1", "3.2.0", "3.10.1", "4.0"])
                copy.write_row((app_id, user_id, f"d{user_id}", rng.choice(["ios", "android"]), "phone", version,
                                version_key(version), True, "2026-01-01 00:00:00+00", "2026-01-01 00:00:00+00"))
        with cur.copy("COPY events (app_id, user_id, name, time, properties, received_at) FROM STDIN") as copy:
            for user_id in ids:
                for _ in range(rng.randint(0, 6)):
                    copy.write_row((app_id, user_id, rng.choice(EVENTS), f"2026-11-{rng.randint(10, 21):02d} 12:00:00+00",
                                    "{}", "2026-11-21 00:00:00+00"))
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
    print(f"loaded {users:,} people with devices and events in {time.perf_counter() - t0:.1f} s")

    settings = Settings.from_env({"DATABASE_URL": url})
    segments = ['attr.tier = "gold"', 'attr.tier in ("platinum", "gold") and country = "US"',
                'platform = "ios" and app_version >= "3.10"', 'did "purchase" in last 30d',
                'attr.age between 20 and 35', 'did "add_to_cart" >= 2 times in last 60d and not did "purchase"',
                'country = "FR"', None]
    with db.session_scope() as session:
        for h in range(20):
            hooks.create_hook(session, app_id, f"hook_{h}", "number", h, "")
        for c in range(50):
            channel = "inapp" if c % 2 == 0 else "config"
            targets = []
            for t in range(3):
                seg = segments[(c + t) % len(segments)] if t < 2 else None
                if channel == "inapp":
                    variants = [{"name": v, "weight": 1, "content": {
                        "layout": "card", "title": f"Offer {c}{v} for {{{{ user.first_name }}}}", "body": "…",
                        "buttons": [{"label": "Go", "action": "app://offer"}]}} for v in "AB"]
                else:
                    variants = [{"name": v, "weight": 1, "content": {"hooks": {f"hook_{c % 20}": c * 10 + i}}}
                                for i, v in enumerate("AB")]
                targets.append({"segment": seg, "control_percent": 10, "variants": variants})
            campaign = service.create_campaign(session, app_id, {"name": f"c{c}", "channel": channel,
                                                                  "targets": targets})
            service.launch(session, campaign, settings)
    return url, client_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--warm", type=int, default=20_000, help="people pulled once before measuring")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install -y wrk")

    url, client_key = setup(args.users)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": REDIS_URL, "SECRET_KEY": "bench",
           "TIDINGS_CLIENT_RATE_LIMIT": "1000000 per second", "PYTHONPATH": str(ROOT)}
    log = open(Path(tempfile.gettempdir()) / "tidings-bench-inapp-serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "tidings.cli", "serve", "--port", str(port),
                               "--workers", str(args.workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        warm = min(args.warm, args.users)
        t0 = time.perf_counter()

        def first_pulls(i: int) -> None:
            for kind in ("inapp", "hooks"):
                req = urllib.request.Request(f"{base}/api/v1/users/u{i}/{kind}",
                                             headers={"Authorization": f"Bearer {client_key}"})
                urllib.request.urlopen(req, timeout=30).read()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(first_pulls, range(warm)))
        print(f"warmed {warm:,} people (first pulls write deliveries) in {time.perf_counter() - t0:.1f} s")
        # The warm-up wrote a delivery per person and campaign: let PostgreSQL see them (as
        # autovacuum soon would) rather than measure its analyze and stale plans.
        from tidings.config import normalize_database_url

        vacuum = sa.create_engine(normalize_database_url(url), isolation_level="AUTOCOMMIT")
        with vacuum.connect() as conn:
            conn.execute(sa.text("VACUUM ANALYZE deliveries"))
        vacuum.dispose()
        script = Path(tempfile.gettempdir()) / "tidings-inapp.lua"
        script.write_text(f"""
counter = 0
request = function()
  counter = counter + 1
  local i = math.random(0, {warm - 1})
  local kind = (counter % 2 == 0) and "inapp" or "hooks"
  return wrk.format("GET", "/api/v1/users/u" .. i .. "/" .. kind, {{["Authorization"] = "Bearer {client_key}"}})
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f errors=%d requests=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, summary.requests))
end
""")
        out = subprocess.run(["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
                              "--latency", "-s", str(script), base], capture_output=True, text=True, timeout=args.duration + 60)
        print(out.stdout)
        ping = subprocess.run(["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", "5s", base + "/healthz"],
                              capture_output=True, text=True, timeout=70)
        floor = [line for line in ping.stdout.splitlines() if "Requests/sec" in line]
        print(f"floor, /healthz on the same server: {floor[0].split()[-1] if floor else '?'} req/s")
        print(f"command: python bench/inapp.py --users {args.users} --workers {args.workers} "
              f"--connections {args.connections} --duration {args.duration}; goal >= 1,500 req/s at p99 <= 20 ms")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
