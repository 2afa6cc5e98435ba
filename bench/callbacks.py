"""Benchmark: signed Twilio status callbacks per second against gunicorn, as `tidings serve` runs it.

Goal: >= 2,000 callbacks/s on a 2-core machine. Each callback is a fresh `delivered` receipt for a
delivery pre-inserted in `sent`, signed with twilio's RequestValidator exactly as Twilio signs
(PUBLIC_BASE_URL + path + query, form fields), so every request pays for signature
verification, the token check, the conditional UPDATE and a durable COMMIT.

Run from the repository root (PostgreSQL and Redis local; `wrk` installed, e.g. apt-get install wrk),
under the machine's benchmark lock:

    flock /tmp/tidings-bench.lock python bench/callbacks.py    # 120k deliveries, 20 s, wrk -t2 -c16
    python bench/callbacks.py --reuse-db --with-sent           # Twilio's `sent` before each `delivered`
    python bench/callbacks.py --reuse-db --inprocess 3000 --cprofile   # where the CPU goes, no HTTP
    python bench/callbacks.py --workers 8 --connections 32 --duration 30
    python bench/callbacks.py --pgoptions "-c synchronous_commit=off"   # what async commit buys

It (re)creates the scratch database `tidings_bench_callbacks`, runs `tidings db upgrade`, seeds
one app, campaign and run with N users and N `sent` deliveries, first measures CPU per request in
process through the app's WSGI callable (/healthz, a callback on the fast path, one through the
Flask view), then starts the server with DATABASE_URL / REDIS_URL=redis://127.0.0.1:6379/13 /
PUBLIC_BASE_URL / TWILIO_* in its environment, measures `GET /healthz` as the floor, then the
callbacks, prints req/s, p50/p99 and CPU per request (server, its PostgreSQL backends, wrk), and
stops every process it started. The figures are checked, not trusted: each wrk thread reports how
far it got in its own list of callbacks, and every `delivered` callback it issued must have moved
its delivery (but at most one in flight per connection at the stop), nothing else may have.

`--server tidings` runs the real `tidings serve`; the default `auto` does so when `create_app`
registers the webhooks blueprint, and otherwise serves the same gunicorn configuration with the
blueprint added.

Measured on the 2-core machine while other work kept its load average at 4-8 (so req/s swing
by 2x from run to run; CPU per request is the steadier figure), same command back to back:
- before webhooks.fastpath: 497 callbacks/s, p99 52 ms; 3,871 us of CPU per callback (server
  3,121 + PostgreSQL 595 + wrk 155): a ceiling of ~520/s on 2 idle cores. In process the view
  costs 1.5-2.0 ms of CPU (pool pre-ping, BEGIN, lookup, UPDATE, COMMIT through the ORM session,
  RequestValidator hashing twice, werkzeug's form, Flask's request context and limiter hooks).
- after: 1,246 callbacks/s (best run 2,000/s with --with-sent), p99 27 ms; 931 us per callback
  (server 591 + PostgreSQL 244 + wrk 96): a ceiling of ~2,150/s on 2 idle cores. In process the
  fast path costs ~140-165 us, as much as Flask's /healthz; the rest of the server's share is
  gunicorn's sync worker (a connection per request: ~520 us per /healthz under gunicorn vs ~145 us
  in process). PostgreSQL's share is one durable UPDATE that maintains all 7 indexes of
  `deliveries` (status is indexed, so no HOT update).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "tidings_bench_callbacks"
REDIS_URL = "redis://127.0.0.1:6379/13"
PUBLIC_BASE_URL = "https://callbacks.bench.example"
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
SENDER = "+15005550006"

WRK_POST = r"""
-- Callbacks pre-signed and pre-formatted as raw HTTP requests by bench/callbacks.py, one file per
-- wrk thread ("<file>.<thread id>", requests separated by NUL), so threads never send the same
-- callback and loading costs a few string scans (wrk.format per line cost ~1 s of CPU per thread,
-- counted as wrk's CPU, and thread 0 was already sending while thread 1 loaded, before wrk's clock
-- started). A thread that runs out starts again
-- (duplicates, which the endpoint must answer 204 without a write; the check counts them).
local counter = 0
threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

function init(args)
  issued = 0
  local file = assert(io.open(args[1] .. "." .. id, "rb"))
  local data = file:read("*a")
  file:close()
  reqs, n = {}, 0
  local pos = 1
  while true do
    local stop = data:find("\0", pos, true)
    if not stop then break end
    reqs[#reqs + 1] = data:sub(pos, stop - 1)
    pos = stop + 1
  end
end

function request()
  n = n + 1
  issued = issued + 1
  if n > #reqs then n = 1 end
  return reqs[n]
end
"""

WRK_DONE = r"""
function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
    .. '"status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
  for _, t in ipairs(threads or {}) do  -- how far each thread got in its list (for the check)
    io.write(string.format("ISSUED %d %d\n", t:get("id"), t:get("issued")))
  end
end
"""


def database_url(name: str = DB_NAME) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def tidings_cmd(*args: str) -> list[str]:
    """The `tidings` command of this checkout (same as the installed entry point)."""
    return [sys.executable, "-c", "import sys; from tidings.cli import main; sys.exit(main())", *args]


def server_env(args) -> dict:
    env = dict(os.environ)
    env.update(DATABASE_URL=database_url(), REDIS_URL=REDIS_URL, PUBLIC_BASE_URL=PUBLIC_BASE_URL,
               TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_FROM=SENDER,
               SECRET_KEY="bench-secret", PYTHONPATH=str(ROOT))
    if args.pgoptions:
        env["PGOPTIONS"] = args.pgoptions
    return env


# -- database ------------------------------------------------------------------------------------

def create_database(args) -> None:
    import sqlalchemy as sa

    from tidings.config import normalize_database_url

    admin = sa.create_engine(normalize_database_url(ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    subprocess.run(tidings_cmd("db", "upgrade"), env=server_env(args), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def seed(n: int) -> tuple[int, int]:
    """One app, campaign and run; n users each with one `sent` delivery. Returns the id range."""
    import sqlalchemy as sa

    from campaigns.models import Campaign, CampaignRun, Delivery
    from segments.models import User
    from tidings.config import normalize_database_url
    from tidings.models import App, KeyKind

    engine = sa.create_engine(normalize_database_url(database_url()))
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        app = App(name="bench")
        app.rotate_key(KeyKind.SERVER)
        app.rotate_key(KeyKind.CLIENT)
        app_id = conn.execute(sa.insert(App).values(
            name="bench", settings={}, server_key_hash=app.server_key_hash, client_key_hash=app.client_key_hash,
            server_key_hint=app.server_key_hint, client_key_hint=app.client_key_hint, created_at=now,
        ).returning(App.id)).scalar_one()
        campaign_id = conn.execute(sa.insert(Campaign).values(
            app_id=app_id, name="bench", channel="sms", spec={}, status="running", version=1,
            created_at=now, updated_at=now,
        ).returning(Campaign.id)).scalar_one()
        run_id = conn.execute(sa.insert(CampaignRun).values(
            app_id=app_id, campaign_id=campaign_id, scheduled_for=now, status="sending", cursor_user_id=0,
            audience_count=n, updated_at=now,
        ).returning(CampaignRun.id)).scalar_one()
        chunk = 10_000
        for start in range(0, n, chunk):
            rows = [{"app_id": app_id, "external_id": f"u{i}", "attributes": {}, "phone": f"+1415{i:07d}",
                     "sms_opt_in": True, "push_opt_in": True, "created_at": now, "updated_at": now}
                    for i in range(start, min(start + chunk, n))]
            user_ids = conn.execute(sa.insert(User).returning(User.id, sort_by_parameter_order=True), rows).scalars().all()
            conn.execute(sa.insert(Delivery), [
                {"app_id": app_id, "campaign_id": campaign_id, "run_id": run_id, "user_id": uid,
                 "dedupe_key": f"run:{run_id}", "status": "sent", "provider_id": f"SM{uid:032x}",
                 "send_after": now, "attempts": 1, "control": False, "created_at": now, "updated_at": now,
                 "sent_at": now} for uid in user_ids])
        lo, hi = conn.execute(sa.text("SELECT min(id), max(id) FROM deliveries")).one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    return lo, hi


def reset_deliveries() -> None:
    import sqlalchemy as sa

    from tidings.config import normalize_database_url

    engine = sa.create_engine(normalize_database_url(database_url()))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE deliveries SET status = 'sent', delivered_at = NULL WHERE status <> 'sent'"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE deliveries"))
    engine.dispose()


def status_counts() -> dict[str, int]:
    import sqlalchemy as sa

    from tidings.config import normalize_database_url

    engine = sa.create_engine(normalize_database_url(database_url()))
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text("SELECT status, count(*) FROM deliveries GROUP BY status")).all())
    engine.dispose()
    return counts


def write_requests(path: Path, lo: int, hi: int) -> int:
    """Pre-sign one `delivered` callback per delivery, as Twilio would send it."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(AUTH_TOKEN)
    count = 0
    with path.open("w") as out:
        for d in range(lo, hi + 1):
            sid = f"SM{d:032x}"  # deliveries and users are inserted in step: user id == delivery id
            form = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsSid": sid,
                    "MessageStatus": "delivered", "SmsStatus": "delivered", "To": f"+1415{d:07d}", "From": SENDER}
            signature = validator.compute_signature(f"{PUBLIC_BASE_URL}/webhooks/twilio/status?d={d}", form)
            out.write(f"{d}\t{signature}\t{urlencode(form)}\n")
            count += 1
    return count


def read_requests(path: Path) -> list[tuple[int, str, str]]:
    """(delivery id, signature, form body) of every pre-signed callback."""
    out = []
    with path.open() as f:
        for line in f:
            d, signature, body = line.rstrip("\n").split("\t")
            out.append((int(d), signature, body))
    return out


def write_wrk_requests(path: Path, callbacks: list[tuple[int, str, str]], threads: int, port: int,
                       with_sent: bool) -> tuple[Path, list[list[tuple[int, str]]]]:
    """The callbacks as raw HTTP requests, thread i taking every i-th delivery. With `with_sent`,
    each delivery's `delivered` is preceded by Twilio's `sent`, which moves nothing (the bench's
    deliveries are already `sent`, as the send job leaves them). Returns the files' stem and
    each thread's (delivery id, status) list, in order."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(AUTH_TOKEN)
    stem = path.with_suffix(".wrk")
    plan = []
    for t in range(threads):
        entries = []
        with open(f"{stem}.{t}", "wb") as out:
            for d, signature, body in callbacks[t::threads]:
                requests = [("delivered", signature, body)]
                if with_sent:
                    form = dict(parse_qsl(body, keep_blank_values=True))
                    form.update(MessageStatus="sent", SmsStatus="sent")
                    sent_signature = validator.compute_signature(f"{PUBLIC_BASE_URL}/webhooks/twilio/status?d={d}", form)
                    requests.insert(0, ("sent", sent_signature, urlencode(form)))
                for status, sig, form_body in requests:
                    out.write((f"POST /webhooks/twilio/status?d={d} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                               f"X-Twilio-Signature: {sig}\r\n"
                               f"Content-Type: application/x-www-form-urlencoded\r\n"
                               f"Content-Length: {len(form_body)}\r\n\r\n{form_body}\0").encode("latin-1"))
                    entries.append((d, status))
        plan.append(entries)
    return stem, plan


def delivered_now() -> set[int]:
    import sqlalchemy as sa

    from tidings.config import normalize_database_url

    engine = sa.create_engine(normalize_database_url(database_url()))
    with engine.connect() as conn:
        found = set(conn.execute(sa.text("SELECT id FROM deliveries WHERE status = 'delivered' "
                                         "AND delivered_at IS NOT NULL")).scalars())
    engine.dispose()
    return found


def delivered_ids(ids: list[int]) -> int:
    """How many of these deliveries are `delivered`, with their delivered_at set."""
    import sqlalchemy as sa

    from tidings.config import normalize_database_url

    engine = sa.create_engine(normalize_database_url(database_url()))
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT count(*) FROM deliveries WHERE id = ANY(:ids) AND status = 'delivered' "
                                     "AND delivered_at IS NOT NULL"), {"ids": ids}).scalar_one()
    engine.dispose()
    return found


# -- in process: CPU per callback without HTTP, gunicorn or wrk ----------------------------------------

def in_process(args, callbacks: list[tuple[int, str, str]]) -> list[int]:
    """CPU per request through the app's WSGI callable, for GET /healthz (Flask's own floor), a
    status callback on the fast path, and one through the Flask view (the fast path bypassed).
    Uses the last 2 x N callbacks (wrk starts from the first); returns their delivery ids."""
    import io
    import logging

    from tidings.app import create_app
    from tidings.config import Settings

    n = args.inprocess
    os.environ.update(server_env(args))  # the settings the server gets
    app = create_app(Settings.from_env())
    logging.disable(logging.INFO)
    fast_app = app.wsgi_app  # webhooks.fastpath.StatusFastPath in front of Flask
    view_app = getattr(fast_app, "wsgi_app", fast_app)  # Flask's own

    def environ(d, signature, body):
        data = body.encode()
        return {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/twilio/status", "QUERY_STRING": f"d={d}",
                "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(args.port), "SERVER_PROTOCOL": "HTTP/1.1",
                "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr,
                "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
                "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(data)),
                "HTTP_HOST": f"127.0.0.1:{args.port}", "HTTP_X_TWILIO_SIGNATURE": signature}

    def healthz():
        return {"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": str(args.port), "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
                "wsgi.multiprocess": True, "wsgi.run_once": False, "HTTP_HOST": f"127.0.0.1:{args.port}"}

    def measure(wsgi, environs, want: str, profile: bool = False) -> tuple[float, float]:
        statuses = []

        def start_response(status, headers, exc_info=None):
            statuses.append(status)

        warm = min(50, len(environs) // 10)
        for e in environs[:warm]:
            b"".join(wsgi(e, start_response))
        environs = environs[warm:]
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        c0, t0 = time.process_time(), time.perf_counter()
        for e in environs:
            b"".join(wsgi(e, start_response))
        c1, t1 = time.process_time(), time.perf_counter()
        if profiler:
            import pstats

            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        bad = [s for s in statuses if not s.startswith(want)]
        if bad:
            raise SystemExit(f"in-process run answered {bad[:3]} (want {want})")
        return (c1 - c0) / len(environs) * 1e6, (t1 - t0) / len(environs) * 1e6

    fast_part, view_part = callbacks[-2 * n:-n], callbacks[-n:]
    rows = [("GET /healthz (Flask)", measure(app.wsgi_app, [healthz() for _ in range(n)], "200")),
            ("status, fast path", measure(fast_app, [environ(*c) for c in fast_part], "204", args.cprofile)),
            ("status, Flask view", measure(view_app, [environ(*c) for c in view_part], "204"))]
    print(f"in process, {n:,} requests each (CPU of this process; the wait for PostgreSQL is wall time):")
    for label, (cpu, wall) in rows:
        print(f"  {label:<22} {cpu:6.0f} us CPU  {wall:6.0f} us wall per request")
    from tidings import db

    db.get_engine().dispose()
    return [d for d, _, _ in fast_part + view_part]


# -- server --------------------------------------------------------------------------------------

def blueprint_wired(args) -> bool:
    probe = ("import sys; from tidings.app import create_app; "
             "sys.exit(0 if 'webhooks' in create_app().blueprints else 3)")
    return subprocess.run([sys.executable, "-c", probe], env=server_env(args), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


# -- the buffered alternative, measured for comparison only ----------------------------------------
# NOT how Tidings answers callbacks. The request verifies the signature against the (cached) auth
# tokens of the apps, RPUSHes the receipt to Redis and answers 204; a drainer applies receipts
# to PostgreSQL in batches later. Anything in Redis that is not drained yet is lost with Redis
# (no persistence here), and Twilio never re-sends a callback we answered 2xx.

BUFFER_KEY = "bench:callbacks:receipts"


def buffered_view_factory(app):
    import redis
    import sqlalchemy as sa
    from flask import Response, request
    from twilio.request_validator import RequestValidator

    from tidings import db
    from tidings.config import provider_config
    from tidings.models import App

    settings = app.config["TIDINGS"]
    conn = redis.Redis.from_url(settings.redis_url)
    tokens: dict[str, list[int]] = {}

    def load_tokens() -> None:  # once per process; a real design needs a TTL or invalidation
        with db.SessionFactory() as s:
            for app_id, app_settings in s.execute(sa.select(App.id, App.settings)):
                token = provider_config(settings, app_settings)["twilio_auth_token"]
                if token:
                    tokens.setdefault(token, []).append(app_id)

    def view():
        if not tokens:
            load_tokens()
        d = request.args.get("d", "")
        signature = request.headers.get("X-Twilio-Signature") or ""
        query = request.query_string.decode("latin-1")
        url = settings.public_base_url + request.path + ("?" + query if query else "")
        app_ids = [a for token, ids in tokens.items() if signature
                   and RequestValidator(token).validate(url, request.form, signature) for a in ids]
        if not app_ids or not d.isdigit():
            return Response(status=403)
        form = request.form
        conn.rpush(BUFFER_KEY, json.dumps([int(d), form.get("MessageSid"), form.get("MessageStatus"),
                                           form.get("ErrorCode"), app_ids]))
        return Response(status=204)

    return view


def drain_buffer(batch: int = 1000) -> tuple[int, float]:
    """Apply buffered `delivered` receipts in batches, through the same guarded transition."""
    import redis
    import sqlalchemy as sa

    from campaigns.states import allowed_from
    from tidings.config import normalize_database_url

    conn = redis.Redis.from_url(REDIS_URL)
    engine = sa.create_engine(normalize_database_url(database_url()))
    stmt = sa.text(
        "UPDATE deliveries AS d SET status = 'delivered', delivered_at = :now, updated_at = :now, "
        "sent_at = COALESCE(d.sent_at, :now), provider_id = COALESCE(d.provider_id, v.sid) "
        "FROM unnest(CAST(:ids AS bigint[]), CAST(:sids AS text[]), CAST(:apps AS bigint[])) AS v(id, sid, app_id) "
        "WHERE d.id = v.id AND d.app_id = v.app_id AND d.status = ANY(CAST(:allowed AS text[])) "
        "AND (d.provider_id IS NULL OR d.provider_id = v.sid)")
    allowed = allowed_from("delivered")
    applied, start = 0, time.perf_counter()
    while True:
        items = conn.lpop(BUFFER_KEY, batch)
        if not items:
            break
        rows = [json.loads(item) for item in items]
        assert all(status == "delivered" for _, _, status, _, _ in rows)  # the bench only sends these
        with engine.begin() as db_conn:
            db_conn.execute(stmt, {"now": dt.datetime.now(dt.UTC), "ids": [r[0] for r in rows],
                                   "sids": [r[1] for r in rows], "apps": [r[4][0] for r in rows], "allowed": allowed})
        applied += len(rows)
    engine.dispose()
    return applied, time.perf_counter() - start


def serve_with_blueprint(host: str, port: int, workers: int | None, worker_class: str, threads: int,
                         design: str = "direct") -> None:
    """`tidings serve`'s gunicorn configuration, plus the webhooks blueprint if create_app lacks it
    (and, with design "buffered", the comparison view above in place of the real one)."""
    from gunicorn.app.base import BaseApplication

    from tidings.app import create_app
    from tidings.config import Settings

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers or 2 * (os.cpu_count() or 1))
            self.cfg.set("worker_class", worker_class)
            self.cfg.set("threads", threads)
            self.cfg.set("accesslog", None)

        def load(self):
            import webhooks

            app = create_app(Settings.from_env())
            if "webhooks" not in app.blueprints:
                webhooks.init_app(app)
            if design == "buffered":
                app.view_functions["webhooks.twilio_status"] = buffered_view_factory(app)
            return app

    Server().run()


def start_server(args) -> subprocess.Popen:
    use_cli = args.server == "tidings" or (args.server == "auto" and args.worker_class == "sync"
                                           and args.threads == 1 and args.design == "direct"
                                           and blueprint_wired(args))
    if use_cli:
        cmd = tidings_cmd("serve", "--host", "127.0.0.1", "--port", str(args.port),
                          *(["--workers", str(args.workers)] if args.workers else []))
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_serve", str(args.port), str(args.workers or 0),
               args.worker_class, str(args.threads), args.design]
    print(f"server: {'tidings serve' if use_cli else 'gunicorn (tidings serve config + webhooks blueprint)'}, "
          f"workers={args.workers or 2 * (os.cpu_count() or 1)}, class={args.worker_class}, threads={args.threads}, "
          f"design={args.design}"
          + (f", PGOPTIONS={args.pgoptions!r}" if args.pgoptions else ""))
    proc = subprocess.Popen(cmd, env=server_env(args), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(Path(tempfile.gettempdir()) / "bench_callbacks_server.log", "w"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {tempfile.gettempdir()}/bench_callbacks_server.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=1) as r:
                if r.status == 200:
                    time.sleep(1)  # let every worker boot
                    return proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise SystemExit("server did not answer /healthz within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server we started (gunicorn master and its workers: its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- CPU accounting -------------------------------------------------------------------------------
# Other work on the machine skews req/s; CPU seconds spent per request by the server, its
# PostgreSQL backends and wrk do not, and give the ceiling on idle cores: cores / CPU per request.

TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            parents[int(entry.name)] = stat[0]
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


def _backends() -> list[int]:
    """PostgreSQL backends of the bench database (local processes), and the WAL writer."""
    import sqlalchemy as sa

    from tidings.config import normalize_database_url

    engine = sa.create_engine(normalize_database_url(database_url()), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE (datname = :db AND pid <> pg_backend_pid()) "
                                    "OR backend_type = 'walwriter'"), {"db": DB_NAME}).scalars().all()
    engine.dispose()
    return pids


def cpu_snapshot(server: subprocess.Popen) -> dict[str, dict[int, float]]:
    groups = {"server": _descendants(server.pid), "postgres": _backends()}
    return {name: {pid: stat[1] for pid in pids if (stat := _proc_stat(pid))} for name, pids in groups.items()}


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# -- load ----------------------------------------------------------------------------------------

def wrk(args, server: subprocess.Popen, url: str, script: str, script_args: list[str] = ()) -> dict:
    import resource

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script + WRK_DONE)
    try:
        cmd = ["wrk", f"-t{args.threads_wrk}", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "10s",
               "-s", f.name, url]
        if script_args:
            cmd += ["--", *script_args]
        before, children = cpu_snapshot(server), resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        after, children_after = cpu_snapshot(server), resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(f.name)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["issued"] = {int(t): int(k) for t, k in
                        (line.split()[1:] for line in out.splitlines() if line.startswith("ISSUED "))}
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    per_request = 1e6 / max(result["requests"], 1)
    result["cpu_server_us"] = cpu_used(before["server"], after["server"]) * per_request
    result["cpu_postgres_us"] = cpu_used(before["postgres"], after["postgres"]) * per_request
    result["cpu_wrk_us"] = ((children_after.ru_utime + children_after.ru_stime)
                            - (children.ru_utime + children.ru_stime)) * per_request
    result["cpu_us"] = result["cpu_server_us"] + result["cpu_postgres_us"] + result["cpu_wrk_us"]
    result["ceiling"] = (os.cpu_count() or 1) / max(result["cpu_us"] / 1e6, 1e-9)
    return result


def report(label: str, r: dict) -> None:
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    print(f"{label:<22} {r['rps']:>7,.0f} req/s  p50 {r['p50_us'] / 1000:6.1f} ms  "
          f"p99 {r['p99_us'] / 1000:6.1f} ms  ({r['requests']:,} requests, {errors} errors)")
    print(f"{'':<22} CPU {r['cpu_us']:5.0f} us/req = server {r['cpu_server_us']:.0f} + postgres "
          f"{r['cpu_postgres_us']:.0f} + wrk {r['cpu_wrk_us']:.0f}; ceiling on {os.cpu_count()} idle cores "
          f"{r['ceiling']:,.0f}/s")
    if errors:
        print(f"{'':<22} {r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=120_000)
    parser.add_argument("--duration", type=int, default=20, help="seconds of load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads-wrk", type=int, default=2)
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: 2 x cores, as tidings serve)")
    parser.add_argument("--worker-class", default="sync")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker (gthread)")
    parser.add_argument("--server", choices=["auto", "tidings", "gunicorn"], default="auto")
    parser.add_argument("--pgoptions", default="", help='PGOPTIONS for the server, e.g. "-c synchronous_commit=off"')
    parser.add_argument("--reuse-db", action="store_true", help="keep the seeded database of a previous run")
    parser.add_argument("--design", choices=["direct", "buffered"], default="direct",
                        help="buffered: a Redis-buffer prototype, for comparison only (see buffered_view_factory)")
    parser.add_argument("--inprocess", type=int, default=3000, metavar="N",
                        help="first measure N requests each in process (no HTTP): CPU per request; 0 skips")
    parser.add_argument("--cprofile", action="store_true", help="print the fast path's cProfile (with --inprocess)")
    parser.add_argument("--with-sent", action="store_true",
                        help="send Twilio's `sent` before each `delivered` (a callback that moves nothing)")
    args = parser.parse_args()

    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is needed: apt-get install wrk")
    requests_file = Path(tempfile.gettempdir()) / "bench_callbacks_requests.tsv"
    t0 = time.perf_counter()
    if args.reuse_db and requests_file.exists():
        reset_deliveries()
    else:
        create_database(args)
        lo, hi = seed(args.deliveries)
        write_requests(requests_file, lo, hi)
    callbacks = read_requests(requests_file)
    lines = len(callbacks)
    print(f"{lines:,} deliveries in `sent`, signed callbacks ready ({time.perf_counter() - t0:.1f} s); "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    in_process_ids = []
    if args.inprocess:
        in_process_ids = in_process(args, callbacks)
        callbacks = callbacks[:-2 * args.inprocess]
    wrk_stem, plan = write_wrk_requests(requests_file, callbacks, args.threads_wrk, args.port, args.with_sent)

    if args.design == "buffered":
        import redis

        redis.Redis.from_url(REDIS_URL).delete(BUFFER_KEY)
    proc = start_server(args)
    try:
        floor = wrk(args, proc, f"http://127.0.0.1:{args.port}/healthz", "")
        result = wrk(args, proc, f"http://127.0.0.1:{args.port}", WRK_POST, [str(wrk_stem)])
    finally:
        stop_server(proc)

    print(f"wrk -t{args.threads_wrk} -c{args.connections} -d{args.duration}s")
    report("GET /healthz (floor)", floor)
    report("POST twilio/status", result)
    if args.design == "buffered":
        drained, seconds = drain_buffer()
        print(f"drained {drained:,} buffered receipts into PostgreSQL in {seconds:.1f} s "
              f"({drained / max(seconds, 1e-9):,.0f}/s); until then they existed only in Redis")
    # Honest figures: each thread sends its list in order, so what it issued is a prefix of it
    # (the whole list, then duplicates, if it went round). Every `delivered` callback answered 204
    # must have moved its own delivery, durably, before the answer; requests still in flight when
    # wrk stopped (at most one per connection) may or may not have; nothing else may have moved.
    counts = status_counts()
    issued_delivered = set()
    for t, entries in enumerate(plan):
        issued_delivered |= {d for d, status in entries[:result["issued"].get(t, 0)] if status == "delivered"}
    moved = delivered_now() - set(in_process_ids)
    unexpected, in_flight = moved - issued_delivered, issued_delivered - moved
    issued = sum(result["issued"].values())
    in_process_ok = delivered_ids(in_process_ids) == len(in_process_ids)
    ok = (result["status_errors"] == 0 and not unexpected and len(in_flight) <= args.connections
          and result["requests"] <= issued and set(counts) <= {"sent", "delivered"} and in_process_ok)
    print(f"deliveries now: {counts}; wrk issued {issued:,} callbacks ({len(issued_delivered):,} `delivered`), "
          f"{result['requests']:,} answered, all 2xx: {result['status_errors'] == 0}; moved: {len(moved):,}, "
          f"{len(unexpected)} never sent, {len(in_flight)} not moved (in flight at the stop, <= {args.connections})"
          + (f"; in-process callbacks all applied: {in_process_ok}" if in_process_ids else ""))
    print("OK: every answered callback moved its delivery to delivered" if ok else "MISMATCH")
    goal = 2000
    print(f"goal {goal:,}/s: {'met' if result['rps'] >= goal else 'missed'} "
          f"({result['rps'] / floor['rps']:.0%} of the /healthz floor)")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_with_blueprint("127.0.0.1", int(sys.argv[2]), int(sys.argv[3]) or None, sys.argv[4], int(sys.argv[5]),
                             sys.argv[6])
    else:
        main()
