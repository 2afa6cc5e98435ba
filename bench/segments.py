"""Segments at scale: generate a big app, time segment sizes, SQL/memory agreement, ingestion, import.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1, the package installed):

    python -m bench.segments --quick            # smoke run: 20k users, 200k events
    python -m bench.segments                    # 1M users with 1-2 devices each, 10M events
    python -m bench.segments --fresh            # drop and regenerate the dataset first
    python -m bench.segments --skip-ingest --skip-import     # queries and agreement only

What it does and measures:

1. Dataset, in its own database `tidings_bench` (created when missing; `--fresh` drops it; a
   database holding a dataset of another size is recreated; one of the requested size is
   reused). Schema through `tidings.migrate.upgrade`, one app through `create_app_record`.
   Users and devices are made with numpy and streamed with psycopg `COPY ... FROM STDIN`;
   events are made inside PostgreSQL by `INSERT ... SELECT` over `generate_series` (one
   per-user plan row: how many events, in which time span, uninstalled or not), on two
   connections at once. `--events-method copy` streams them from Python with COPY instead
   (slower on 2 cores, kept to compare). Secondary indexes are dropped for the load and
   rebuilt after it, FK triggers are off during the load (session_replication_role), then
   VACUUM (ANALYZE). Distributions: ~38 cities with jitter (country/region/city/timezone/
   lat/lon, a few users without geo or zone), attributes (age, gender, loyalty, plan,
   first_name, signup_source, newsletter, ltv, referral_code, some missing), 1-2 devices
   (platform, device_type, os/app versions with their version keys), events over the last
   90 days with a lognormal ("Zipf-like") per-user activity (15% of users none), 11 names,
   `purchase` with `amount`, 4% of active users ending with `uninstall`, and `last_seen_at`
   = each user's newest event.
2. Query sizes: `segments.service.count_users` for each query below, one warm-up and then
   `--repeat` (5) timed runs: min/median/max ms and the count; goal: median <= 1000 ms.
   A query over the goal gets its `EXPLAIN (ANALYZE, BUFFERS)` written under /tmp.
3. Agreement: a random sample of `--sample` (2000) users; for each query the SQL answer
   restricted to the sample against `memory.evaluate(node, memory.load_profile(...))` per
   user. Any mismatch is a bug; the first few are printed with the user's data.
4. Ingestion: `tidings serve` (gunicorn; 2 then 4 workers) on a free loopback port with
   REDIS_URL=redis://127.0.0.1:6379/14; client threads POST pre-encoded batches of 1,000
   events (existing and new users, half with client ids) for `--ingest-seconds` or until
   the batches run out; events/s (goal >= 20,000). A `/healthz` floor with the same clients.
5. CSV import: a CSV of `--import-rows` (200k) users (a quarter already known), POSTed to
   /api/v1/imports/users with a `tidings worker` already running (as deployed; with
   `--import-cold-worker`, `tidings worker --burst` started after the upload); rows/s from the
   upload until the import reads "finished" (goal >= 20,000), and the job's own rows/s.

Ingestion and import write into a separate app ("ingest-..."), deleted at the end unless
`--keep-ingest`, so the dataset stays reusable. Every process started is killed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import http.client
import io
import json
import os
import queue
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import psycopg

PG_BASE = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_DB", "tidings_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
GOAL_MS = 1000.0
GOAL_EVENTS = 20_000
GOAL_ROWS = 20_000
OUT_DIR = "/tmp/bench_segments"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATEMENT_TIMEOUT = "60s"  # bounds a pathological plan; such a query is reported as an error

# (city, region, country, timezone, lat, lon, language, weight)
CITIES = [
    ("New York", "NY", "US", "America/New_York", 40.7128, -74.0060, "en", 9),
    ("Los Angeles", "CA", "US", "America/Los_Angeles", 34.0522, -118.2437, "en", 6),
    ("Chicago", "IL", "US", "America/Chicago", 41.8781, -87.6298, "en", 4),
    ("Houston", "TX", "US", "America/Chicago", 29.7604, -95.3698, "en", 3),
    ("San Francisco", "CA", "US", "America/Los_Angeles", 37.7749, -122.4194, "en", 3),
    ("Seattle", "WA", "US", "America/Los_Angeles", 47.6062, -122.3321, "en", 2),
    ("Miami", "FL", "US", "America/New_York", 25.7617, -80.1918, "en", 2),
    ("Boston", "MA", "US", "America/New_York", 42.3601, -71.0589, "en", 2),
    ("Toronto", "ON", "CA", "America/Toronto", 43.6532, -79.3832, "en", 3),
    ("Vancouver", "BC", "CA", "America/Vancouver", 49.2827, -123.1207, "en", 1),
    ("Mexico City", "CDMX", "MX", "America/Mexico_City", 19.4326, -99.1332, "es", 3),
    ("Sao Paulo", "SP", "BR", "America/Sao_Paulo", -23.5505, -46.6333, "pt-BR", 4),
    ("Buenos Aires", "BA", "AR", "America/Argentina/Buenos_Aires", -34.6037, -58.3816, "es", 2),
    ("London", "England", "GB", "Europe/London", 51.5074, -0.1278, "en", 6),
    ("Manchester", "England", "GB", "Europe/London", 53.4808, -2.2426, "en", 2),
    ("Paris", "Ile-de-France", "FR", "Europe/Paris", 48.8566, 2.3522, "fr", 4),
    ("Lyon", "Auvergne-Rhone-Alpes", "FR", "Europe/Paris", 45.7640, 4.8357, "fr", 1),
    ("Berlin", "Berlin", "DE", "Europe/Berlin", 52.5200, 13.4050, "de", 3),
    ("Munich", "Bavaria", "DE", "Europe/Berlin", 48.1351, 11.5820, "de", 2),
    ("Madrid", "Madrid", "ES", "Europe/Madrid", 40.4168, -3.7038, "es", 2),
    ("Barcelona", "Catalonia", "ES", "Europe/Madrid", 41.3851, 2.1734, "es", 2),
    ("Rome", "Lazio", "IT", "Europe/Rome", 41.9028, 12.4964, "it", 2),
    ("Amsterdam", "North Holland", "NL", "Europe/Amsterdam", 52.3676, 4.9041, "nl", 1),
    ("Stockholm", "Stockholm", "SE", "Europe/Stockholm", 59.3293, 18.0686, "sv", 1),
    ("Warsaw", "Masovia", "PL", "Europe/Warsaw", 52.2297, 21.0122, "pl", 1),
    ("Istanbul", "Istanbul", "TR", "Europe/Istanbul", 41.0082, 28.9784, "tr", 2),
    ("Dubai", "Dubai", "AE", "Asia/Dubai", 25.2048, 55.2708, "ar", 1),
    ("Mumbai", "Maharashtra", "IN", "Asia/Kolkata", 19.0760, 72.8777, "en", 4),
    ("Delhi", "Delhi", "IN", "Asia/Kolkata", 28.7041, 77.1025, "hi", 3),
    ("Bangalore", "Karnataka", "IN", "Asia/Kolkata", 12.9716, 77.5946, "en", 2),
    ("Singapore", "Singapore", "SG", "Asia/Singapore", 1.3521, 103.8198, "en", 1),
    ("Tokyo", "Tokyo", "JP", "Asia/Tokyo", 35.6762, 139.6503, "ja", 3),
    ("Seoul", "Seoul", "KR", "Asia/Seoul", 37.5665, 126.9780, "ko", 2),
    ("Sydney", "NSW", "AU", "Australia/Sydney", -33.8688, 151.2093, "en", 2),
    ("Melbourne", "VIC", "AU", "Australia/Melbourne", -37.8136, 144.9631, "en", 1),
    ("Lagos", "Lagos", "NG", "Africa/Lagos", 6.5244, 3.3792, "en", 1),
    ("Johannesburg", "Gauteng", "ZA", "Africa/Johannesburg", -26.2041, 28.0473, "en", 1),
    ("Cairo", "Cairo", "EG", "Africa/Cairo", 30.0444, 31.2357, "ar", 1),
]

FIRST_NAMES = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jon",
               "Kira", "Liam", "Mia", "Noah", "Olga", "Pedro", "Quinn", "Ravi", "Sara", "Tom"]
# name -> weight (of 100); `uninstall` is only ever a user's last event.
EVENT_NAMES = {"screen_view": 30, "session_start": 22, "search": 10, "add_to_cart": 9,
               "level_complete": 8, "notification_open": 6, "checkout_started": 5,
               "purchase": 4, "share": 3, "referral_sent": 2, "rate_app": 1}
IOS_VERSIONS = (["18.1", "18.0.1", "17.6.1", "17.5", "17.4.1", "16.7.8", "15.8.2"],
                [20, 15, 20, 12, 10, 15, 8])
ANDROID_VERSIONS = (["15", "14", "13", "12", "11", "10", "9"], [8, 30, 25, 15, 10, 8, 4])
WEB_VERSIONS = (["10.15.7", "11.0", "14.6", "10"], [40, 20, 25, 15])
APP_VERSIONS = (["3.12.0", "3.11.2", "3.10.1", "3.10.0", "3.9.5", "3.9", "3.2.1", "3.0", "2.10.1",
                 "2.8.4", "3.12.0-beta", "build-77"],
                [22, 18, 10, 8, 12, 8, 7, 5, 4, 3, 2, 1])

QUERIES = [
    ("attribute", 'attr.loyalty = "gold"'),
    ("attribute range", 'attr.age between 20 and 30 and attr.gender = "f"'),
    ("device + version", 'platform = "ios" and app_version >= "3.10"'),
    ("geo radius", "near(40.71, -74.0, 25km)"),
    ("did >= 3 in 30d", 'did "purchase" >= 3 times in last 30d'),
    ("compound (all)", 'attr.age between 20 and 40 and platform = "ios" and app_version >= "3.10" '
                       'and near(40.71, -74.0, 50km) and did "purchase" >= 3 times in last 30d'),
    ("not did uninstall", 'not did "uninstall"'),
    ("local_hour 9-17", "local_hour between 9 and 17"),
    ("attr exists", "attr.referral_code exists"),
    ("did where amount", 'did "purchase" where (amount > 50) in last 7d'),
    ("or/not mix", '(country = "US" or country = "CA") and not attr.plan = "free" '
                   'and last_seen_at > 7d ago'),
    ("churn-like", 'did "session_start" and not did "session_start" in last 30d'),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def db_url(name: str = DB_NAME) -> str:
    return f"{PG_BASE}/{name}"


def sa_url(name: str = DB_NAME) -> str:
    return db_url(name).replace("postgresql://", "postgresql+psycopg://", 1)


# ---- database and dataset -----------------------------------------------------------------------

def ensure_database(fresh: bool) -> None:
    with psycopg.connect(db_url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if exists and fresh:
            log(f"dropping database {DB_NAME}")
            conn.execute(f'DROP DATABASE "{DB_NAME}" WITH (FORCE)')
            exists = None
        if not exists:
            log(f"creating database {DB_NAME}")
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def read_meta() -> dict | None:
    with psycopg.connect(db_url()) as conn:
        if conn.execute("SELECT to_regclass('bench_meta')").fetchone()[0] is None:
            return None
        row = conn.execute("SELECT value FROM bench_meta WHERE key = 'dataset'").fetchone()
        return row[0] if row else None


def dataset_ready(users: int, events: int) -> dict | None:
    meta = read_meta()
    if not meta or not meta.get("complete"):
        return None
    if meta.get("users") != users or meta.get("events") != events:
        return None
    return meta


def create_app(name: str) -> tuple[int, str, str]:
    from tidings import db
    from tidings.apps import create_app_record

    db.configure(sa_url())
    with db.session_scope() as session:
        app, server_key, client_key = create_app_record(session, name)
        return app.id, server_key, client_key


def iso_seconds(ts: np.ndarray) -> np.ndarray:
    """datetime64[s] array -> 'YYYY-MM-DD HH:MM:SS+00' strings."""
    return np.char.add(np.char.replace(np.datetime_as_string(ts, unit="s"), "T", " "), "+00")


def pick(rng: np.random.Generator, choices, n: int):
    values, weights = choices
    p = np.asarray(weights, dtype=float)
    return np.asarray(values, dtype=object)[rng.choice(len(values), n, p=p / p.sum())]


class UserPlan:
    """Everything generated per user (numpy arrays), shared by users, devices and events."""

    def __init__(self, n: int, n_events: int, seed: int, now: dt.datetime):
        rng = np.random.default_rng(seed)
        self.n = n
        self.ids = np.arange(1, n + 1, dtype=np.int64)
        now64 = np.datetime64(now.replace(tzinfo=None), "s")
        day = np.timedelta64(86400, "s")
        # created_at grows with the id (sign-ups over two years), as in a real table.
        offsets = np.sort(rng.uniform(0, 730 * 86400, n))[::-1].astype(np.int64)
        self.created = now64 - offsets.astype("timedelta64[s]")
        # Activity: 15% never active in the window; the rest lognormal weights (heavy tail),
        # and exactly n_events spread over them with a multinomial draw.
        active = rng.random(n) >= 0.15
        weights = np.where(active, rng.lognormal(0.0, 1.5, n), 0.0)
        self.events = rng.multinomial(n_events, weights / weights.sum()).astype(np.int64)
        window_start = now64 - 90 * day
        first = np.maximum(self.created, window_start)
        span = (now64 - first).astype(np.int64)
        recency = np.minimum(rng.exponential(12 * 86400, n).astype(np.int64), span)
        self.last = now64 - recency.astype("timedelta64[s]")
        self.first = first
        self.uninstall = (rng.random(n) < 0.04) & (self.events > 0)
        self.rng = rng


def user_rows(plan: UserPlan, app_id: int, lo: int, hi: int) -> str:
    rng = plan.rng
    n = hi - lo
    ids = plan.ids[lo:hi]
    weights = np.array([c[7] for c in CITIES], dtype=float)
    city = rng.choice(len(CITIES), n, p=weights / weights.sum())
    no_geo = rng.random(n) < 0.04
    no_tz = rng.random(n) < 0.03
    no_lang = rng.random(n) < 0.05
    lat0 = np.array([c[4] for c in CITIES])[city]
    lon0 = np.array([c[5] for c in CITIES])[city]
    lat = np.round(lat0 + rng.normal(0, 0.15, n), 5)
    lon = np.round(lon0 + rng.normal(0, 0.15, n) / np.cos(np.radians(lat0)), 5)
    age = np.clip(rng.normal(34, 11, n), 16, 80).astype(int)
    age_missing = rng.random(n) < 0.10
    gender = rng.choice(np.array(["f", "m", "x"], dtype=object), n, p=[0.48, 0.48, 0.04])
    gender_missing = rng.random(n) < 0.15
    loyalty = rng.choice(np.array(["bronze", "silver", "gold", "platinum"], dtype=object), n,
                         p=[0.5, 0.3, 0.15, 0.05])
    loyalty_missing = rng.random(n) < 0.20
    plan_ = rng.choice(np.array(["free", "pro", "team"], dtype=object), n, p=[0.7, 0.25, 0.05])
    fname = rng.choice(np.array(FIRST_NAMES, dtype=object), n)
    source = rng.choice(np.array(["organic", "ads", "referral"], dtype=object), n, p=[0.6, 0.3, 0.1])
    newsletter = rng.random(n) < 0.4
    ltv = np.round(rng.lognormal(3, 1.2, n), 2)
    has_ref = rng.random(n) < 0.10
    has_phone = rng.random(n) < 0.6
    phone_num = rng.integers(2_000_000, 9_999_999, n)
    sms = has_phone & (rng.random(n) < 0.5)
    push = rng.random(n) < 0.85
    created = iso_seconds(plan.created[lo:hi])
    last = iso_seconds(plan.last[lo:hi])
    active = plan.events[lo:hi] > 0
    out = []
    for i in range(n):
        uid = int(ids[i])
        attrs = [f'"first_name": "{fname[i]}"', f'"plan": "{plan_[i]}"',
                 f'"signup_source": "{source[i]}"', f'"newsletter": {"true" if newsletter[i] else "false"}',
                 f'"ltv": {ltv[i]}']
        if not age_missing[i]:
            attrs.append(f'"age": {age[i]}')
        if not gender_missing[i]:
            attrs.append(f'"gender": "{gender[i]}"')
        if not loyalty_missing[i]:
            attrs.append(f'"loyalty": "{loyalty[i]}"')
        if has_ref[i]:
            attrs.append(f'"referral_code": "R{uid:07d}"')
        c = CITIES[city[i]]
        geo = ["\\N"] * 5 if no_geo[i] else [c[2], c[1], c[0], str(lat[i]), str(lon[i])]
        out.append("\t".join((
            str(uid), str(app_id), f"user-{uid}", "{" + ", ".join(attrs) + "}",
            f"+1415{phone_num[i]}" if has_phone[i] else "\\N",
            "\\N" if no_lang[i] else c[6],
            "\\N" if no_tz[i] else c[3],
            *geo,
            "t" if sms[i] else "f", "t" if push[i] else "f",
            created[i], created[i], last[i] if active[i] else "\\N",
        )))
    return "\n".join(out) + "\n"


USER_COLUMNS = ("id, app_id, external_id, attributes, phone, language, timezone, country, region, "
                "city, lat, lon, sms_opt_in, push_opt_in, created_at, updated_at, last_seen_at")
DEVICE_COLUMNS = ("id, app_id, user_id, device_id, platform, device_type, os_version, app_version, "
                  "os_version_key, app_version_key, push_token, push_token_valid, created_at, updated_at")


def device_rows(plan: UserPlan, app_id: int, lo: int, hi: int, first_id: int) -> tuple[str, int]:
    from segments.versions import version_key

    rng = plan.rng
    per_user = np.where(rng.random(hi - lo) < 0.3, 2, 1)
    owner = np.repeat(plan.ids[lo:hi], per_user)
    slot = np.concatenate([np.arange(k) for k in per_user]) if len(per_user) else np.array([])
    m = len(owner)
    platform = rng.choice(np.array(["ios", "android", "web"], dtype=object), m, p=[0.45, 0.5, 0.05])
    dtype_ = np.where(platform == "web", "desktop",
                      np.where(rng.random(m) < 0.87, "phone", "tablet")).astype(object)
    os_v = np.where(platform == "ios", pick(rng, IOS_VERSIONS, m),
                    np.where(platform == "android", pick(rng, ANDROID_VERSIONS, m), pick(rng, WEB_VERSIONS, m)))
    app_v = pick(rng, APP_VERSIONS, m)
    app_v[rng.random(m) < 0.02] = None
    keys = {v: version_key(v) for v in {*os_v, *app_v}}  # once per distinct version string
    has_token = rng.random(m) < 0.8
    created = iso_seconds(plan.created[owner - 1])
    out = []
    for i in range(m):
        uid = int(owner[i])
        okey, akey = keys[os_v[i]], keys[app_v[i]]
        out.append("\t".join((
            str(first_id + i), str(app_id), str(uid), f"d{uid}-{slot[i]}", platform[i], dtype_[i],
            os_v[i], "\\N" if app_v[i] is None else app_v[i],
            "\\N" if okey is None else okey, "\\N" if akey is None else akey,
            f"tok-{uid}-{slot[i]}-{platform[i]}" if has_token[i] else "\\N", "t",
            created[i], created[i],
        )))
    return "\n".join(out) + "\n", m


def secondary_indexes(conn, tables) -> list[tuple[str, str, str]]:
    """(table, drop statement, create statement) of the non-primary indexes and unique constraints."""
    out = []
    for table in tables:
        for name, defn, conname in conn.execute(
            """SELECT i.relname, pg_get_indexdef(i.oid), c.conname
               FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
               LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.contype IN ('u', 'p')
               WHERE x.indrelid = %s::regclass AND NOT x.indisprimary""", (table,)):
            if conname:
                cdef = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s"
                                    " AND conrelid = %s::regclass", (conname, table)).fetchone()[0]
                out.append((table, f'ALTER TABLE {table} DROP CONSTRAINT "{conname}"',
                            f'ALTER TABLE {table} ADD CONSTRAINT "{conname}" {cdef}'))
            else:
                out.append((table, f'DROP INDEX "{name}"', defn))
    return out


def load_settings(conn) -> None:
    conn.execute("SET session_replication_role = replica")  # no FK triggers: consistent by construction
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET work_mem = '256MB'")


EVENTS_SQL = """
INSERT INTO events (app_id, user_id, name, time, properties, received_at)
SELECT %(app)s, p.user_id, e.name, e.t,
       CASE e.name
         WHEN 'purchase' THEN jsonb_build_object(
             'amount', round((1 + random() * random() * 200)::numeric, 2),
             'currency', 'USD', 'sku', 'sku-' || (1 + floor(random() * 50))::int)
         WHEN 'screen_view' THEN jsonb_build_object(
             'screen', (ARRAY['home', 'product', 'cart', 'profile', 'settings'])[1 + floor(random() * 5)::int])
         WHEN 'level_complete' THEN jsonb_build_object('level', 1 + floor(random() * 40)::int)
         ELSE '{}'::jsonb END,
       e.t
FROM bench_plan p
CROSS JOIN LATERAL generate_series(1, p.n) AS g(i)
CROSS JOIN LATERAL (
    SELECT CASE WHEN g.i = 1 THEN p.last_at
                ELSE p.first_at + random() * (p.last_at - p.first_at) END AS t,
           CASE WHEN g.i = 1 AND p.uninstall THEN 'uninstall'
                ELSE (%(names)s::text[])[1 + floor(random() * %(slots)s)::int] END AS name
) e
WHERE p.user_id BETWEEN %(lo)s AND %(hi)s
"""


def event_name_slots() -> list[str]:
    return [name for name, w in EVENT_NAMES.items() for _ in range(w)]


def events_copy_chunk(conn, plan: UserPlan, app_id: int, lo: int, hi: int, seed: int) -> None:
    """The Python alternative: the same events as COPY text, made with numpy."""
    rng = np.random.default_rng(seed)
    counts = plan.events[lo:hi]
    owner = np.repeat(plan.ids[lo:hi], counts)
    if not len(owner):
        return
    idx = owner - 1
    first_of_user = np.concatenate([[True], owner[1:] != owner[:-1]])
    span = (plan.last[idx] - plan.first[idx]).astype(np.int64)
    t = plan.first[idx] + (rng.random(len(owner)) * span).astype("timedelta64[s]")
    t = np.where(first_of_user, plan.last[idx], t)
    slots = np.array(event_name_slots(), dtype=object)
    names = slots[rng.integers(0, len(slots), len(owner))]
    names = np.where(first_of_user & plan.uninstall[idx], "uninstall", names)
    ts = iso_seconds(t)
    amounts = np.round(1 + rng.random(len(owner)) * rng.random(len(owner)) * 200, 2)
    with conn.cursor().copy("COPY events (app_id, user_id, name, time, properties, received_at) "
                            "FROM STDIN") as cp:
        buf = []
        for i in range(len(owner)):
            name = names[i]
            props = f'{{"amount": {amounts[i]}, "currency": "USD"}}' if name == "purchase" else "{}"
            buf.append(f"{app_id}\t{owner[i]}\t{name}\t{ts[i]}\t{props}\t{ts[i]}\n")
            if len(buf) >= 100_000:
                cp.write("".join(buf))
                buf = []
        if buf:
            cp.write("".join(buf))


def run_parallel(jobs, worker, threads: int = 2) -> None:
    """Run worker(conn, job) over the jobs on `threads` connections; re-raise the first error."""
    q: queue.Queue = queue.Queue()
    for j in jobs:
        q.put(j)
    errors: list[BaseException] = []

    def loop():
        try:
            with psycopg.connect(db_url(), autocommit=True) as conn:
                load_settings(conn)
                while not errors:
                    try:
                        job = q.get_nowait()
                    except queue.Empty:
                        return
                    worker(conn, job)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def generate(n_users: int, n_events: int, seed: int, method: str) -> dict:
    from tidings import migrate

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    url = sa_url()
    migrate.upgrade(url)
    with psycopg.connect(db_url(), autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM users").fetchone()[0]:
            raise SystemExit(f"{DB_NAME} holds users but no complete dataset: rerun with --fresh")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value jsonb)")
    app_id, server_key, client_key = create_app("bench")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    t = time.perf_counter()
    plan = UserPlan(n_users, n_events, seed, now)
    timings["plan"] = time.perf_counter() - t

    with psycopg.connect(db_url(), autocommit=True) as conn:
        load_settings(conn)
        indexes = secondary_indexes(conn, ("users", "devices", "events"))
        for _, drop, _ in indexes:
            conn.execute(drop)

        t = time.perf_counter()
        step = 50_000
        with conn.cursor().copy(f"COPY users ({USER_COLUMNS}) FROM STDIN") as cp:
            for lo in range(0, n_users, step):
                cp.write(user_rows(plan, app_id, lo, min(lo + step, n_users)))
        timings["users (COPY)"] = time.perf_counter() - t

        t = time.perf_counter()
        next_id = 1
        with conn.cursor().copy(f"COPY devices ({DEVICE_COLUMNS}) FROM STDIN") as cp:
            for lo in range(0, n_users, step):
                text, m = device_rows(plan, app_id, lo, min(lo + step, n_users), next_id)
                cp.write(text)
                next_id += m
        n_devices = next_id - 1
        timings["devices (COPY)"] = time.perf_counter() - t

        t = time.perf_counter()
        conn.execute("DROP TABLE IF EXISTS bench_plan")
        conn.execute("CREATE UNLOGGED TABLE bench_plan (user_id bigint PRIMARY KEY, n int, "
                     "first_at timestamptz, last_at timestamptz, uninstall bool)")
        active = np.nonzero(plan.events > 0)[0]
        first_s, last_s = iso_seconds(plan.first[active]), iso_seconds(plan.last[active])
        with conn.cursor().copy("COPY bench_plan FROM STDIN") as cp:
            rows = [f"{plan.ids[k]}\t{plan.events[k]}\t{first_s[j]}\t{last_s[j]}\t"
                    f"{'t' if plan.uninstall[k] else 'f'}\n" for j, k in enumerate(active)]
            for i in range(0, len(rows), 100_000):
                cp.write("".join(rows[i:i + 100_000]))
        conn.execute("ANALYZE bench_plan")
        timings["event plan (COPY)"] = time.perf_counter() - t

    # Events in ~16 user ranges of equal event counts, on two connections.
    cum = np.cumsum(plan.events)
    bounds = [0] + [int(np.searchsorted(cum, n_events * k / 16)) for k in range(1, 16)] + [n_users]
    chunks = [(bounds[k] + 1, bounds[k + 1]) for k in range(16) if bounds[k + 1] > bounds[k]]
    names = event_name_slots()
    t = time.perf_counter()
    if method == "sql":
        run_parallel(chunks, lambda conn, c: conn.execute(EVENTS_SQL, {
            "app": app_id, "names": names, "slots": len(names), "lo": c[0], "hi": c[1]}))
    else:
        run_parallel(chunks, lambda conn, c: events_copy_chunk(conn, plan, app_id, c[0] - 1, c[1], seed + c[0]))
    timings[f"events ({method})"] = time.perf_counter() - t

    t = time.perf_counter()
    run_parallel([ddl for _, _, ddl in sorted(indexes, key=lambda x: x[0] != "events")],
                 lambda conn, ddl: conn.execute(ddl))
    timings["indexes"] = time.perf_counter() - t

    t = time.perf_counter()
    with psycopg.connect(db_url(), autocommit=True) as conn:
        conn.execute("DROP TABLE bench_plan")
        for table, count in (("users", n_users), ("devices", n_devices)):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", (count,))
    timings["event rollups"] = roll_up_events()[0]

    t = time.perf_counter()
    with psycopg.connect(db_url(), autocommit=True) as conn:
        for table in ("users", "devices", "events", "event_rollups"):
            conn.execute(f"VACUUM (ANALYZE) {table}")
    timings["vacuum analyze"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all

    meta = {"complete": True, "users": n_users, "events": n_events, "devices": n_devices,
            "app_id": app_id, "seed": seed, "generated_at": now.isoformat(), "method": method,
            "timings": timings}
    with psycopg.connect(db_url(), autocommit=True) as conn:
        conn.execute("INSERT INTO bench_meta VALUES ('dataset', %s) ON CONFLICT (key) DO UPDATE "
                     "SET value = excluded.value", (json.dumps(meta),))
    return meta


def roll_up_events() -> tuple[float, dict]:
    """What the scheduler does each minute (segments.rollups), to the newest event: (s, result)."""
    import sqlalchemy as sa

    from segments import rollups

    engine = sa.create_engine(sa_url())
    try:
        with engine.connect() as conn:  # events, not ids (deleted apps' events leave gaps)
            result = {"stored": conn.scalar(sa.text(
                "SELECT count(*) FROM events WHERE id > coalesce((SELECT upto FROM event_rollup_marks), 0)"))}
        t = time.perf_counter()
        result.update(rollups.roll_up(engine))
        return time.perf_counter() - t, result
    finally:
        engine.dispose()


# ---- query timing and agreement -----------------------------------------------------------------

def session_factory():
    from tidings import db

    db.configure(sa_url())
    return db.SessionFactory


def explain(session, stmt, path: str, analyze: bool = True) -> str:
    from sqlalchemy.dialects import postgresql

    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    conn = session.connection()
    how = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "  # no ANALYZE for a timed-out query
    from psycopg.types.json import Jsonb

    params = {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in compiled.params.items()}
    rows = conn.exec_driver_sql(how + str(compiled), params).all()
    plan = "\n".join(r[0] for r in rows)
    with open(path, "w") as fh:
        fh.write(str(compiled) + "\n\n" + json.dumps(compiled.params, default=str) + "\n\n" + plan + "\n")
    return plan


def session_settings(session, settings: list[str]) -> None:
    import sqlalchemy as sa

    session.execute(sa.text(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
    for item in settings:  # e.g. jit=off, to see what a setting would change
        name, _, value = item.partition("=")
        session.execute(sa.text("SELECT set_config(:n, :v, false)"), {"n": name.strip(), "v": value.strip()})


def time_queries(app_id: int, repeat: int, now: dt.datetime, explain_all: bool,
                 settings: list[str]) -> list[dict]:
    import sqlalchemy as sa

    from segments.service import compile_query, count_users, member_ids

    Session = session_factory()
    results = []
    os.makedirs(OUT_DIR, exist_ok=True)
    with Session() as session:
        session_settings(session, settings)
        for label, text in QUERIES:
            node = compile_query(session, app_id, text)
            try:
                count_users(session, app_id, node, now)  # warm-up
                times, count = [], None
                for _ in range(repeat):
                    t = time.perf_counter()
                    count = count_users(session, app_id, node, now)
                    times.append((time.perf_counter() - t) * 1000)
                row = {"label": label, "query": text, "count": count, "min": min(times),
                       "median": statistics.median(times), "max": max(times), "error": None}
            except Exception as exc:  # noqa: BLE001 - report and go on
                session.rollback()
                session_settings(session, settings)
                row = {"label": label, "query": text, "count": None, "min": None, "median": None,
                       "max": None, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            row["plan_file"] = None
            if row["error"] or row["median"] > GOAL_MS or explain_all:
                path = f"{OUT_DIR}/explain_{label.replace(' ', '_').replace('/', '_')}.txt"
                try:
                    ids = member_ids(session, app_id, node, now).subquery()
                    explain(session, sa.select(sa.func.count()).select_from(ids), path,
                            analyze=row["error"] is None)
                    row["plan_file"] = path
                except Exception as exc:  # noqa: BLE001
                    session.rollback()
                    session_settings(session, settings)
                    row["plan_file"] = f"(EXPLAIN failed: {exc})"
            results.append(row)
            flag = "  <-- OVER GOAL" if row["median"] and row["median"] > GOAL_MS else ""
            if row["error"]:
                log(f"{label:<20} ERROR {row['error']}")
            else:
                log(f"{label:<20} count={row['count']:>9}  min/median/max = {row['min']:.0f}/"
                    f"{row['median']:.0f}/{row['max']:.0f} ms{flag}")
    return results


def agreement(app_id: int, sample_size: int, now: dt.datetime, seed: int) -> list[dict]:
    import sqlalchemy as sa

    from segments.models import User
    from segments.query import memory
    from segments.service import compile_query, member_ids

    Session = session_factory()
    out = []
    with Session() as session:
        ids = [r[0] for r in session.execute(sa.text(
            "SELECT id FROM users TABLESAMPLE SYSTEM (5) REPEATABLE (:seed) WHERE app_id = :app "
            "ORDER BY random() LIMIT :n"), {"seed": seed, "app": app_id, "n": sample_size})]
        if len(ids) < sample_size:
            ids = [r[0] for r in session.execute(sa.text(
                "SELECT id FROM users WHERE app_id = :app ORDER BY random() LIMIT :n"),
                {"app": app_id, "n": sample_size})]
        people = {u.id: u for u in session.scalars(sa.select(User).where(User.id.in_(ids)))}
        for label, text in QUERIES:
            node = compile_query(session, app_id, text)
            sub = member_ids(session, app_id, node, now).subquery()
            col = list(sub.c)[0]
            t = time.perf_counter()
            in_sql = set(session.scalars(sa.select(col).where(col.in_(ids))))
            sql_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            in_mem, errors = set(), []
            for uid in ids:
                try:
                    if memory.evaluate(node, memory.load_profile(session, people[uid], node, now), now):
                        in_mem.add(uid)
                except Exception as exc:  # noqa: BLE001
                    errors.append((uid, f"{type(exc).__name__}: {exc}"))
            mem_ms = (time.perf_counter() - t) * 1000
            mismatches = sorted(in_sql ^ in_mem)
            row = {"label": label, "sample": len(ids), "sql_members": len(in_sql),
                   "memory_members": len(in_mem), "mismatches": len(mismatches),
                   "memory_errors": len(errors), "memory_ms_per_user": mem_ms / max(1, len(ids)),
                   "sql_ms": sql_ms, "examples": []}
            for uid in mismatches[:3]:
                u = people[uid]
                devs = session.execute(sa.text(
                    "SELECT platform, device_type, os_version, app_version, os_version_key, app_version_key "
                    "FROM devices WHERE user_id = :u ORDER BY id"), {"u": uid}).all()
                row["examples"].append({
                    "user_id": uid, "external_id": u.external_id, "sql": uid in in_sql,
                    "memory": uid in in_mem, "attributes": u.attributes, "timezone": u.timezone,
                    "lat": u.lat, "lon": u.lon, "country": u.country,
                    "last_seen_at": str(u.last_seen_at), "devices": [list(d) for d in devs],
                })
            if errors:
                row["examples"].append({"memory_error": errors[0]})
            out.append(row)
            log(f"{label:<20} sample={len(ids)} sql={len(in_sql)} memory={len(in_mem)} "
                f"mismatches={len(mismatches)} errors={len(errors)} "
                f"({row['memory_ms_per_user']:.2f} ms/user in memory incl. load_profile)")
            for ex in row["examples"]:
                log(f"    mismatch: {json.dumps(ex, default=str)[:600]}")
    return out


# ---- processes --------------------------------------------------------------------------------

class Processes:
    """Every subprocess this run starts, each in its own process group, all killed at the end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], logname: str) -> subprocess.Popen:
        # PYTHONPATH: this working tree first. An editable install made before a package got its
        # __init__.py maps it as a namespace package outside the repo root (seen with `webhooks`).
        path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, DATABASE_URL=db_url(), REDIS_URL=REDIS_URL, PYTHONPATH=path,
                   SECRET_KEY="bench-segments-secret", TIDINGS_INSTANCE_PATH=f"{OUT_DIR}/instance")
        os.makedirs(OUT_DIR, exist_ok=True)
        out = open(f"{OUT_DIR}/{logname}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=OUT_DIR,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(procs: Processes, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = procs.start(["tidings", "serve", "--host", "127.0.0.1", "--port", str(port),
                        "--workers", str(workers)], f"serve_{workers}w")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tidings serve exited with {proc.returncode}; see {OUT_DIR}/serve_{workers}w.log")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("tidings serve did not answer /healthz within 60 s")


# ---- ingestion --------------------------------------------------------------------------------

def seed_users(app_id: int, n: int, prefix: str) -> None:
    """n bare users of the ingest app, by COPY (ids from the sequence)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    with psycopg.connect(db_url(), autocommit=True) as conn:
        with conn.cursor().copy("COPY users (app_id, external_id, attributes, sms_opt_in, push_opt_in, "
                                "created_at, updated_at) FROM STDIN") as cp:
            cp.write("".join(f"{app_id}\t{prefix}{i}\t{{}}\tf\tt\t{now}\t{now}\n" for i in range(n)))
        conn.execute("ANALYZE users")


def make_batches(n_batches: int, tag: str, pool: int, prefix: str, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    names = event_name_slots()
    now = dt.datetime.now(dt.UTC)
    bodies, new_user, client_id = [], 0, 0
    for _ in range(n_batches):
        events = []
        for _ in range(1000):
            if rng.random() < 0.1:
                user = f"new-{tag}-{new_user // 3}"  # each new user sends a few events
                new_user += 1
            else:
                user = f"{prefix}{rng.randrange(pool)}"
            name = rng.choice(names)
            e = {"user": user, "name": name,
                 "time": (now - dt.timedelta(seconds=rng.randrange(86400))).isoformat()}
            if name == "purchase":
                e["properties"] = {"amount": round(rng.uniform(1, 200), 2), "currency": "USD"}
            elif name == "screen_view":
                e["properties"] = {"screen": rng.choice(["home", "product", "cart"])}
            if rng.random() < 0.5:
                e["id"] = f"{tag}-{client_id}"
                client_id += 1
            events.append(e)
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def hammer(port: int, method: str, path: str, bodies: list[bytes] | None, headers: dict,
           threads: int, seconds: float, n_requests: int | None = None) -> dict:
    """Send requests from `threads` keep-alive connections until the time or the bodies run out."""
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "failed": 0, "first_error": None, "latencies": []}
    deadline = time.monotonic() + seconds
    limit = len(bodies) if bodies is not None else (n_requests or 10**9)

    def take() -> int | None:
        with lock:
            if state["next"] >= limit or time.monotonic() >= deadline:
                return None
            state["next"] += 1
            return state["next"] - 1

    def run():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (i := take()) is not None:
            t = time.perf_counter()
            try:
                conn.request(method, path, body=bodies[i] if bodies is not None else None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                status, data = 0, str(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                state["latencies"].append(time.perf_counter() - t)
                if status in (200, 202):
                    state["ok"] += 1
                else:
                    state["failed"] += 1
                    state["first_error"] = state["first_error"] or f"{status}: {data[:300]!r}"
        conn.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = sorted(state["latencies"]) or [0.0]
    return {"ok": state["ok"], "failed": state["failed"], "elapsed": elapsed,
            "first_error": state["first_error"], "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


def ingest(procs: Processes, app_id: int, server_key: str, workers_list: list[int], seconds: float,
           max_batches: int, threads: int, pool: int, prefix: str, seed: int) -> list[dict]:
    results = []
    headers = {"Authorization": f"Bearer {server_key}", "Content-Type": "application/json"}
    for workers in workers_list:
        tag = f"{uuid.uuid4().hex[:8]}w{workers}"
        t = time.perf_counter()
        bodies = make_batches(max_batches, tag, pool, prefix, seed + workers)
        log(f"prepared {len(bodies)} batches of 1,000 events ({sum(map(len, bodies)) / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t:.1f} s")
        proc, port = start_server(procs, workers)
        try:
            floor = hammer(port, "GET", "/healthz", None, {}, threads, 3.0)
            log(f"{workers} workers: /healthz floor {floor['ok'] / floor['elapsed']:.0f} req/s "
                f"(p50 {floor['p50_ms']:.1f} ms)")
            hammer(port, "POST", "/api/v1/events", bodies[:threads], headers, threads, 30)  # warm-up
            r = hammer(port, "POST", "/api/v1/events", bodies[threads:], headers, threads, seconds)
        finally:
            procs.stop(proc)
        r.update(workers=workers, threads=threads, events_per_s=r["ok"] * 1000 / r["elapsed"],
                 floor_rps=floor["ok"] / floor["elapsed"])
        results.append(r)
        log(f"{workers} workers, {threads} client threads: {r['ok']} batches ok, {r['failed']} failed in "
            f"{r['elapsed']:.1f} s = {r['events_per_s']:.0f} events/s (p50 {r['p50_ms']:.0f} ms, "
            f"p99 {r['p99_ms']:.0f} ms){'; first error ' + r['first_error'] if r['first_error'] else ''}")
    return results


# ---- CSV import -------------------------------------------------------------------------------

def make_csv(rows: int, pool: int, prefix: str, seed: int) -> bytes:
    rng = random.Random(seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["external_id", "phone", "language", "timezone", "country", "region", "city", "lat", "lon",
                "sms_opt_in", "push_opt_in", "attr.age", "attr.gender", "attr.loyalty", "attr.plan",
                "attr.first_name"])
    tag = uuid.uuid4().hex[:6]
    for i in range(rows):
        known = rng.random() < 0.25
        ext = f"{prefix}{rng.randrange(pool)}" if known else f"csv-{tag}-{i}"
        c = rng.choice(CITIES)
        phone = f"+1415{rng.randrange(2_000_000, 9_999_999)}" if rng.random() < 0.5 else ""
        w.writerow([ext, phone, c[6], c[3], c[2], c[1], c[0],
                    round(c[4] + rng.gauss(0, 0.15), 5), round(c[5] + rng.gauss(0, 0.15), 5),
                    "true" if phone and rng.random() < 0.5 else "false", "true",
                    rng.randrange(16, 80) if rng.random() < 0.9 else "", rng.choice("fmx"),
                    rng.choice(["bronze", "silver", "gold", "platinum", ""]), rng.choice(["free", "pro"]),
                    rng.choice(FIRST_NAMES)])
    return buf.getvalue().encode()


# `tidings worker`, with every model module imported first: as of this writing the plain
# command fails the import job with NoReferencedTableError ('user_imports.app_id' -> 'apps'),
# because nothing in the worker process imports tidings.models. Harmless once that is fixed.
def worker_cmd(burst: bool) -> list[str]:
    argv = ["tidings", "worker", *(["--burst"] if burst else [])]
    return [sys.executable, "-c",
            f"import sys, tidings.models, segments.models; from tidings.cli import main; sys.argv = {argv!r}; main()"]


def csv_import(procs: Processes, server_key: str, rows: int, pool: int, prefix: str, seed: int,
               timeout: float, cold_worker: bool = False) -> dict:
    """Upload a CSV and time it until the import reads "finished".

    The worker is started and registered before the upload, as a deployment's workers are
    (`--import-cold-worker`: started after the upload in burst mode, so the figure includes a
    worker process starting, ~1-2 s). Also reported: the job's own time (started_at ->
    finished_at of the import).
    """
    import redis
    import requests
    from rq import Queue, Worker

    from scheduler.queues import QueueName

    content = make_csv(rows, pool, prefix, seed)
    log(f"CSV: {rows} rows, {len(content) / 1e6:.1f} MB")
    r = redis.Redis.from_url(REDIS_URL)
    for name in QueueName:  # only our own queues in our own Redis db: no stale jobs from old runs
        Queue(name.value, connection=r).empty()
    proc, port = start_server(procs, 2)
    worker = None
    try:
        if not cold_worker:
            before = {w.name for w in Worker.all(connection=r)}
            worker = procs.start(worker_cmd(burst=False), "worker")
            deadline = time.monotonic() + 60
            while not ({w.name for w in Worker.all(connection=r)} - before):
                if worker.poll() is not None or time.monotonic() > deadline:
                    return {"error": f"the worker did not start; see {OUT_DIR}/worker.log"}
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}/api/v1"
        auth = {"Authorization": f"Bearer {server_key}"}
        with requests.Session() as http:
            t0 = time.perf_counter()
            resp = http.post(f"{base}/imports/users", headers=auth,
                             files={"file": ("users.csv", content, "text/csv")}, timeout=120)
            upload_s = time.perf_counter() - t0
            if resp.status_code != 202:
                return {"error": f"upload answered {resp.status_code}: {resp.text[:300]}"}
            imp_id = resp.json()["id"]
            if cold_worker:
                worker = procs.start(worker_cmd(burst=True), "worker")
            status, body = "queued", resp.json()
            deadline = time.monotonic() + timeout
            last_log = 0.0
            while status not in ("finished", "failed") and time.monotonic() < deadline:
                time.sleep(0.2)
                body = http.get(f"{base}/imports/{imp_id}", headers=auth, timeout=30).json()
                status = body.get("status")
                if time.monotonic() - last_log > 10:
                    log(f"import {imp_id}: {status} {body.get('processed_rows')}/{body.get('total_rows')}")
                    last_log = time.monotonic()
                if worker.poll() is not None and status not in ("finished", "failed"):
                    body = http.get(f"{base}/imports/{imp_id}", headers=auth, timeout=30).json()
                    status = body.get("status")
                    if status not in ("finished", "failed"):
                        return {"error": f"worker exited ({worker.returncode}) with the import {status}; "
                                         f"see {OUT_DIR}/worker.log"}
            elapsed = time.perf_counter() - t0
    finally:
        if worker is not None:
            procs.stop(worker)
        procs.stop(proc)
    job_s = None
    if body.get("started_at") and body.get("finished_at"):
        job_s = (dt.datetime.fromisoformat(body["finished_at"]) - dt.datetime.fromisoformat(body["started_at"])
                 ).total_seconds()
    out = {"rows": rows, "status": status, "elapsed": elapsed, "upload_s": upload_s, "job_s": job_s,
           "worker": "cold (started after the upload)" if cold_worker else "running before the upload",
           "rows_per_s": rows / elapsed if status == "finished" else None,
           "job_rows_per_s": rows / job_s if status == "finished" and job_s else None,
           "imported": body.get("imported_rows"), "errors": body.get("error_count"),
           "first_errors": (body.get("errors") or [])[:3]}
    log(f"import: {status} in {elapsed:.1f} s (upload {upload_s:.1f} s, job {fmt(job_s, '.1f')} s, worker "
        f"{out['worker']}): {out['rows_per_s'] or 0:.0f} rows/s; imported {out['imported']}, "
        f"errors {out['errors']} {out['first_errors'] if out['errors'] else ''}")
    return out


def delete_app(app_id: int) -> None:
    t = time.perf_counter()
    with psycopg.connect(db_url(), autocommit=True) as conn:
        for table in ("event_rollups", "events", "devices", "users", "user_imports"):
            conn.execute(f"DELETE FROM {table} WHERE app_id = %s", (app_id,))
        conn.execute("DELETE FROM apps WHERE id = %s", (app_id,))
        conn.execute("VACUUM (ANALYZE) users")
        conn.execute("VACUUM (ANALYZE) events")
    log(f"deleted ingest app {app_id} in {time.perf_counter() - t:.1f} s")


# ---- main ---------------------------------------------------------------------------------------

def fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def report(args, meta, generated, queries, agree, ingest_rows, imp) -> None:
    try:  # which code was measured: other files may be mid-edit in the working tree
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--short", "--", "segments", "tidings"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        dirty = [d[3:] for d in dirty if d.startswith(" M") or d.startswith("M")]
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "?", []
    lines = ["", "=" * 100, "bench/segments.py: " + " ".join(shlex.quote(a) for a in sys.argv),
             f"code: {rev}" + (f" + uncommitted {', '.join(dirty)}" if dirty else ""),
             "settings: " + (", ".join(args.session_setting) or "server defaults"),
             f"dataset: {meta['users']:,} users, {meta.get('devices', 0):,} devices, {meta['events']:,} events "
             f"(app {meta['app_id']}, generated {meta['generated_at']}, events by {meta['method']})"]
    if generated:
        lines.append("generation: " + ", ".join(f"{k} {v:.1f} s" for k, v in meta["timings"].items()))
    else:
        lines.append("generation: reused existing dataset (first generated in "
                     f"{meta['timings'].get('total', 0):.0f} s)")
    lines.append("")
    lines.append(f"{'figure':<44} {'value':>30}   {'goal':<14} ok")
    for q in queries or []:
        value = (f"{q['error'][:28]}" if q["error"] else
                 f"{fmt(q['min'])}/{fmt(q['median'])}/{fmt(q['max'])} ms n={q['count']}")
        ok = q["error"] is None and q["median"] <= GOAL_MS
        lines.append(f"size {q['label']:<39} {value:>30}   {'median<=1000ms':<14} {'yes' if ok else 'NO'}")
    for a in agree or []:
        value = f"{a['sample'] - a['mismatches']}/{a['sample']} agree ({a['sql_members']} in)"
        ok = a["mismatches"] == 0 and a["memory_errors"] == 0
        lines.append(f"agree {a['label']:<38} {value:>30}   {'all':<14} {'yes' if ok else 'NO'}")
    for r in ingest_rows or []:
        if "rollup_s" in r:
            lines.append(f"event rollup of what was ingested{'':<11} "
                         f"{r['rollup_events']:>9,} events in {r['rollup_s']:>5.1f} s")
            continue
        value = f"{r['events_per_s']:,.0f} ev/s (p99 {r['p99_ms']:.0f} ms)"
        lines.append(f"POST /events {r['workers']} workers {r['threads']} threads{'':<12} {value:>30}   "
                     f"{'>=20,000/s':<14} {'yes' if r['events_per_s'] >= GOAL_EVENTS and not r['failed'] else 'NO'}")
        lines.append(f"  (floor: GET /healthz, same clients){'':<8} {r['floor_rps']:>24,.0f} req/s")
    if imp:
        value = imp.get("error") or f"{fmt(imp['rows_per_s'], ',.0f')} rows/s ({imp['elapsed']:.1f} s)"
        ok = bool(imp.get("rows_per_s")) and imp["rows_per_s"] >= GOAL_ROWS
        lines.append(f"CSV import {args.import_rows} rows{'':<27} {value[:30]:>30}   {'>=20,000/s':<14} "
                     f"{'yes' if ok else 'NO'}")
        if imp.get("job_rows_per_s"):
            lines.append(f"  (the job alone: started -> finished){'':<7} "
                         f"{imp['job_rows_per_s']:>20,.0f} rows/s ({imp['job_s']:.1f} s)")
    lines.append("=" * 100)
    print("\n".join(lines), flush=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(f"{OUT_DIR}/results.json", "w") as fh:
        json.dump({"argv": sys.argv, "meta": meta, "queries": queries, "agreement": agree,
                   "ingest": ingest_rows, "import": imp}, fh, indent=2, default=str)
    print(f"details: {OUT_DIR}/results.json", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--quick", action="store_true", help="20k users, 200k events, shorter load tests")
    p.add_argument("--fresh", action="store_true", help="drop and regenerate the dataset")
    p.add_argument("--events-method", choices=("sql", "copy"), default="sql")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--explain-all", action="store_true", help="write EXPLAIN for every query")
    p.add_argument("--session-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a PostgreSQL setting for the timing session only (e.g. jit=off); repeatable")
    p.add_argument("--ingest-seconds", type=float, default=20)
    p.add_argument("--ingest-batches", type=int, default=600, help="most batches per server size")
    p.add_argument("--ingest-workers", default="2,4", help="gunicorn worker counts to try")
    p.add_argument("--client-threads", type=int, default=4)
    p.add_argument("--import-rows", type=int, default=200_000)
    p.add_argument("--import-timeout", type=float, default=900)
    p.add_argument("--import-cold-worker", action="store_true",
                   help="start the worker after the upload (burst), counting its start-up in the import time")
    p.add_argument("--generate-only", action="store_true")
    for part in ("queries", "agreement", "ingest", "import"):
        p.add_argument(f"--skip-{part}", action="store_true")
    p.add_argument("--keep-ingest", action="store_true", help="keep the ingest app's rows")
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.events = 20_000, 200_000
        args.ingest_seconds, args.ingest_batches = 8, 120
        args.import_rows, args.sample = 20_000, 1000

    ensure_database(args.fresh)
    meta = dataset_ready(args.users, args.events)
    generated = False
    if meta is None:
        if read_meta() is not None:
            log("the database holds a dataset of another size: recreating it")
            ensure_database(True)
        log(f"generating {args.users:,} users and {args.events:,} events ({args.events_method})")
        meta = generate(args.users, args.events, args.seed, args.events_method)
        generated = True
        log("generation: " + ", ".join(f"{k} {v:.1f} s" for k, v in meta["timings"].items()))
    else:
        log(f"reusing the dataset generated at {meta['generated_at']}")
        from tidings import migrate

        migrate.upgrade(sa_url())  # the schema may have moved on since the dataset was made
        seconds, rolled = roll_up_events()  # the scheduler's job, if the dataset predates it
        if rolled["stored"]:
            log(f"rolled up {rolled['stored']:,} events in {seconds:.1f} s")
            with psycopg.connect(db_url(), autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) event_rollups")
    if args.generate_only:
        report(args, meta, generated, None, None, None, None)
        return 0
    app_id = meta["app_id"]
    now = dt.datetime.now(dt.UTC)

    queries = agree = ingest_rows = imp = None
    if not args.skip_queries:
        log(f"timing {len(QUERIES)} queries, {args.repeat} runs each after a warm-up")
        queries = time_queries(app_id, args.repeat, now, args.explain_all, args.session_setting)
    if not args.skip_agreement:
        log(f"SQL vs memory on {args.sample} sampled users")
        agree = agreement(app_id, args.sample, now, args.seed)

    procs = Processes()
    ingest_app = None
    try:
        if not (args.skip_ingest and args.skip_import):
            ingest_app, server_key, _ = create_app(f"ingest-{uuid.uuid4().hex[:8]}")
            prefix, pool = "known-", 100_000 if not args.quick else 5_000
            seed_users(ingest_app, pool, prefix)
            log(f"ingest app {ingest_app} with {pool:,} known users")
            if not args.skip_ingest:
                workers = [int(w) for w in args.ingest_workers.split(",") if w]
                ingest_rows = ingest(procs, ingest_app, server_key, workers, args.ingest_seconds,
                                     args.ingest_batches, args.client_threads, pool, prefix, args.seed)
                seconds, rolled = roll_up_events()  # what those events cost the rollup job
                ingest_rows.append({"rollup_s": seconds, "rollup_events": rolled["stored"]})
                log(f"rolled up the {rolled['stored']:,} events stored since in {seconds:.1f} s "
                    f"({seconds / max(rolled['stored'], 1) * 1e6:.1f} us each)")
            if not args.skip_import:
                imp = csv_import(procs, server_key, args.import_rows, pool, prefix, args.seed,
                                 args.import_timeout, args.import_cold_worker)
    finally:
        procs.stop_all()
        if ingest_app is not None and not args.keep_ingest:
            delete_app(ingest_app)
    report(args, meta, generated, queries, agree, ingest_rows, imp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
