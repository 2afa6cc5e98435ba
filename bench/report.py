"""Benchmark: `GET /campaigns/{id}/report` for a campaign over 1M people (goal <= 2 s).

    python -m bench.segments --generate-only     # once: 1M users / 10M events in tidings_bench
    python bench/report.py                       # write the campaign, time, delete it
    python bench/report.py --keep                # leave the campaign for the next run to reuse
    python bench/report.py --explain /tmp/report-plan.txt   # also EXPLAIN (ANALYZE, BUFFERS)

Uses the dataset of bench/segments.py (database `tidings_bench`): writes one finished SMS
campaign whose run reached every user of the app (2 targets, 2 variants each, 10% control,
delivery statuses and send times spread like a real send, a sprinkle of interactions) with SQL
(INSERT ... SELECT), then times `campaigns.reports.report` (the service the endpoint calls)
`--repeat` (5) times after a warm-up, with the campaign's conversion event being one of the
dataset's events. The campaign is deleted again at the end unless `--keep`; a kept campaign
("bench report", finished) is reused by the next run instead of being written again (~1 min).
Besides wall time it prints the server's CPU time per report from /proc: the backend's, and
that of the parallel workers it starts (the report's parts run side by side in them), less
sensitive to other load on the 2 cores; and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

URL = "postgresql://postgres@127.0.0.1:5432/tidings_bench"


NAME = "bench report"


def write_campaign(s, app_id: int, event: str) -> int:
    from campaigns.models import Campaign

    spec = {"audience": None, "schedule": {"type": "now"}, "local_time": False, "quiet_hours": None,
            "conversion": {"event": event, "window_hours": 72},
            "targets": [{"segment": 'attr.loyalty = "gold"', "control_percent": 10,
                         "variants": [{"name": "A", "weight": 1, "content": {"body": "a"}},
                                      {"name": "B", "weight": 1, "content": {"body": "b"}}]},
                        {"segment": None, "control_percent": 10,
                         "variants": [{"name": "A", "weight": 1, "content": {"body": "a"}},
                                      {"name": "B", "weight": 1, "content": {"body": "b"}}]}]}
    campaign = Campaign(app_id=app_id, name=NAME, channel="sms", status="finished", spec=spec)
    s.add(campaign)
    s.flush()
    campaign_id = campaign.id
    run_id = s.scalar(sa.text(
        "INSERT INTO campaign_runs (app_id, campaign_id, scheduled_for, status, cursor_user_id, audience_count,"
        " started_at, fanned_out_at, finished_at, updated_at) VALUES (:a, :c, now() - interval '20 days',"
        " 'finished', 0, 0, now() - interval '20 days', now() - interval '20 days', now(), now()) RETURNING id"),
        {"a": app_id, "c": campaign_id})
    s.execute(sa.text("""
        INSERT INTO deliveries (app_id, campaign_id, run_id, user_id, dedupe_key, target_index, variant, control,
                                status, send_after, attempts, created_at, updated_at, sent_at)
        SELECT :a, :c, :r, u.id, 'run:' || :r, t.target, CASE WHEN t.h < 10 THEN NULL WHEN t.h < 55 THEN 'A' ELSE 'B' END,
               t.h < 10,
               CASE WHEN t.h < 10 THEN 'control' WHEN t.h % 17 = 0 THEN 'failed'
                    WHEN t.h % 2 = 0 THEN 'delivered' ELSE 'sent' END,
               now() - interval '20 days', 1, now(), now(),
               CASE WHEN t.h < 10 THEN NULL ELSE now() - interval '20 days' + (u.id % 3600) * interval '1 second' END
        FROM users u
        CROSS JOIN LATERAL (SELECT CASE WHEN u.attributes @> '{"loyalty": "gold"}' THEN 0 ELSE 1 END AS target,
                                   (hashtext(u.external_id) & 2147483647) % 100 AS h) t
        WHERE u.app_id = :a"""), {"a": app_id, "c": campaign_id, "r": run_id})
    s.execute(sa.text("""
        INSERT INTO interactions (app_id, delivery_id, type, created_at)
        SELECT app_id, id, 'impression', now() FROM deliveries WHERE campaign_id = :c AND id % 7 = 0"""),
              {"c": campaign_id})
    return campaign_id


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far, from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerCPU:
    """CPU time a session's backend and the parallel workers it starts use inside the block.

    Workers live only as long as their query, so a thread looks for them by their process title
    ("parallel worker for PID <backend>") every 10 ms and keeps the last reading of each: their
    last few milliseconds are missed. Processes with another title are not read again.
    """

    def __init__(self, backend_pid: int):
        self.pid = backend_pid
        self.tag = f"parallel worker for PID {backend_pid}".encode()
        self.workers: dict[int, float] = {}
        self.others: set[int] = set()
        self.stop = threading.Event()

    def __enter__(self) -> ServerCPU:
        self.backend0 = process_cpu_seconds(self.pid)
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.backend = (process_cpu_seconds(self.pid) or 0.0) - (self.backend0 or 0.0)
        self.stop.set()
        self.thread.join()
        self._look()

    def _watch(self) -> None:
        while not self.stop.wait(0.01):
            self._look()

    def _look(self) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in self.others:
                continue
            pid = int(name)
            if pid not in self.workers:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        title = fh.read()
                except OSError:
                    continue
                if self.tag not in title:
                    if b": " in title or b"postgres" not in title:  # a fresh fork has no title yet
                        self.others.add(pid)
                    continue
                self.workers[pid] = 0.0
            cpu = process_cpu_seconds(pid)
            if cpu is not None:
                self.workers[pid] = cpu

    @property
    def parallel(self) -> float:
        return sum(self.workers.values())


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up")
    p.add_argument("--keep", action="store_true", help="leave the campaign for the next run to reuse")
    p.add_argument("--fresh", action="store_true", help="delete a kept campaign and write it again")
    p.add_argument("--explain", metavar="PATH", help="write the statement and its EXPLAIN (ANALYZE, BUFFERS)")
    args = p.parse_args()

    import tidings.schema  # noqa: F401
    from campaigns.models import Campaign
    from campaigns.reports import report
    from tidings import db
    from tidings.config import normalize_database_url

    from tidings import migrate

    migrate.upgrade(normalize_database_url(URL))  # a dataset made before the report's index gets it
    db.configure(normalize_database_url(URL))
    with db.session_scope() as s:
        app_id, users = s.execute(sa.text(
            "SELECT app_id, count(*) FROM users GROUP BY app_id ORDER BY count(*) DESC LIMIT 1")).one()
        kept = s.scalars(sa.select(Campaign.id).where(Campaign.app_id == app_id, Campaign.name == NAME)).all()
        if args.fresh or len(kept) != 1:
            for campaign_id in kept:
                s.execute(sa.text("DELETE FROM campaigns WHERE id = :c"), {"c": campaign_id})
            kept = []
    if kept:
        campaign_id = kept[0]
        print(f"reusing the kept campaign {campaign_id}")
    else:
        with db.session_scope() as s:
            event = s.scalar(sa.text("SELECT name FROM events WHERE app_id = :a GROUP BY name ORDER BY count(*) DESC "
                                     "OFFSET 1 LIMIT 1"), {"a": app_id})
            t0 = time.perf_counter()
            campaign_id = write_campaign(s, app_id, event)
            print(f"wrote a campaign over {users:,} people in {time.perf_counter() - t0:.1f} s "
                  f"(conversion event {event!r})")
    with db.engine.connect() as conn:
        # VACUUM as autovacuum would soon after the fan-out: sets the visibility map, so the plan
        # and its index-only scans are the ones a report sees on settled data.
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM (ANALYZE) deliveries, interactions"))
    print(f"before: {load()}")
    try:
        times, backend, workers = [], [], []
        for i in range(args.repeat + 1):
            with db.session_scope() as s:
                c = s.get(Campaign, campaign_id)
                with ServerCPU(s.scalar(sa.text("SELECT pg_backend_pid()"))) as cpu:
                    t0 = time.perf_counter()
                    data = report(s, c)
                    elapsed = time.perf_counter() - t0
                if i:
                    times.append(elapsed)
                    backend.append(cpu.backend)
                    workers.append(cpu.parallel)
        totals = data["totals"]
        print(f"totals: {totals}")
        print(f"report over {totals['audience']:,} people: min/median/max = {min(times) * 1000:.0f}/"
              f"{statistics.median(times) * 1000:.0f}/{max(times) * 1000:.0f} ms (goal <= 2000 ms)")
        print(f"server CPU per report, median: backend {statistics.median(backend) * 1000:.0f} ms, parallel workers "
              f"{statistics.median(workers) * 1000:.0f} ms, both {statistics.median(map(sum, zip(backend, workers))) * 1000:.0f} ms")
        print(f"after: {load()}")
        if args.explain:
            explain(campaign_id, args.explain)
            print(f"plan: {args.explain}")
        print("command: python bench/report.py " + " ".join(sys.argv[1:]))
    finally:
        if not args.keep:
            with db.session_scope() as s:
                s.execute(sa.text("DELETE FROM campaigns WHERE id = :c"), {"c": campaign_id})


def explain(campaign_id: int, path: str) -> None:
    import datetime as dt

    from sqlalchemy.dialects import postgresql

    from campaigns import reports
    from campaigns.models import Campaign
    from tidings import db

    with db.session_scope() as s:
        c = s.get(Campaign, campaign_id)
        reports.prepare_session(s)
        stmt = reports.arms_statement(c, "postgresql", 30, dt.datetime.now(dt.UTC), reports.user_cuts(s, c),
                                       reports.conversion_bounds(s, c))
        compiled = stmt.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"literal_binds": True})
        plan = "\n".join(r[0] for r in s.connection().exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled)).all())
    with open(path, "w") as fh:
        fh.write(f"{compiled}\n\n{plan}\n")


if __name__ == "__main__":
    main()
