"""Benchmark: `GET /campaigns/{id}/report` for a campaign over 1M people (goal <= 2 s).

    python -m bench.segments --generate-only     # once: 1M users / 10M events in tidings_bench
    python bench/report.py

Uses the dataset of bench/segments.py (database `tidings_bench`): writes one finished SMS
campaign whose run reached every user of the app (2 targets, 2 variants each, 10% control,
delivery statuses and send times spread like a real send, a sprinkle of interactions) with SQL
(INSERT ... SELECT), then times `campaigns.reports.report` (the service the endpoint calls)
5 times after a warm-up, with the campaign's conversion event being one of the dataset's
events. The campaign is deleted again at the end.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

URL = "postgresql://postgres@127.0.0.1:5432/tidings_bench"


def main() -> None:
    import tidings.schema  # noqa: F401
    from campaigns.models import Campaign
    from campaigns.reports import report
    from tidings import db
    from tidings.config import normalize_database_url

    db.configure(normalize_database_url(URL))
    with db.session_scope() as s:
        app_id, users = s.execute(sa.text(
            "SELECT app_id, count(*) FROM users GROUP BY app_id ORDER BY count(*) DESC LIMIT 1")).one()
        event = s.scalar(sa.text("SELECT name FROM events WHERE app_id = :a GROUP BY name ORDER BY count(*) DESC "
                                 "OFFSET 1 LIMIT 1"), {"a": app_id})
        spec = {"audience": None, "schedule": {"type": "now"}, "local_time": False, "quiet_hours": None,
                "conversion": {"event": event, "window_hours": 72},
                "targets": [{"segment": 'attr.loyalty = "gold"', "control_percent": 10,
                             "variants": [{"name": "A", "weight": 1, "content": {"body": "a"}},
                                          {"name": "B", "weight": 1, "content": {"body": "b"}}]},
                            {"segment": None, "control_percent": 10,
                             "variants": [{"name": "A", "weight": 1, "content": {"body": "a"}},
                                          {"name": "B", "weight": 1, "content": {"body": "b"}}]}]}
        campaign = Campaign(app_id=app_id, name="bench report", channel="sms", status="finished", spec=spec)
        s.add(campaign)
        s.flush()
        campaign_id = campaign.id
        t0 = time.perf_counter()
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
        print(f"wrote a campaign over {users:,} people in {time.perf_counter() - t0:.1f} s "
              f"(conversion event {event!r})")
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE deliveries, interactions"))
    try:
        times = []
        for i in range(6):
            with db.session_scope() as s:
                c = s.get(Campaign, campaign_id)
                t0 = time.perf_counter()
                data = report(s, c)
                if i:
                    times.append(time.perf_counter() - t0)
        totals = data["totals"]
        print(f"totals: {totals}")
        print(f"report over {totals['audience']:,} people: min/median/max = {min(times) * 1000:.0f}/"
              f"{statistics.median(times) * 1000:.0f}/{max(times) * 1000:.0f} ms (goal <= 2000 ms)")
        print("command: python bench/report.py")
    finally:
        with db.session_scope() as s:
            s.execute(sa.text("DELETE FROM campaigns WHERE id = :c"), {"c": campaign_id})


if __name__ == "__main__":
    main()
