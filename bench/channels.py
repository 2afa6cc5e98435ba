"""Benchmark: SMS and push sends per second through the channels, against the local fakes.

    python bench/channels.py                  # 20,000 SMS and 20,000 push, default settings
    python bench/channels.py -n 5000 --channels sms --concurrency 8,32 --latency 0.05

The fakes (FakeTwilio, FakeFCM) run in a separate process so that they do not share the GIL
with the sender; on a 2-core box sender and fakes each get about one core. Messages go in
`send_batch` calls of `--batch` (what one send job carries). For each channel it prints the
throughput, the sender's CPU per message (user + system, all threads) and the fake's, and
checks that the fake accepted every message exactly once.

In the same run it measures a floor: the same POST to the fake through a bare pooled
HTTP/1.1 client (no provider library), so figures from a loaded machine can be compared.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FROM_NUMBER = "+15005550006"


def _serve_fakes(conn, folder: str, latency: float) -> None:
    """Child process: run both fakes until told to stop, then report what they saw."""
    from tests.fakes import FakeFCM, FakeTwilio

    twilio, fcm = FakeTwilio().start(), FakeFCM().start()
    sa_path = fcm.write_service_account(Path(folder) / "service-account.json")
    conn.send({"twilio_url": twilio.url, "account_sid": twilio.account_sid, "auth_token": twilio.auth_token,
               "fcm_url": fcm.url, "credentials_path": str(sa_path)})
    while True:
        command = conn.recv()
        if command == "stop":
            break
        if command == "reset":
            twilio.reset()
            fcm.reset()
            if latency:
                twilio.fault_next(10**7, delay=latency)
                fcm.fault_next(10**7, delay=latency)
            conn.send(os.times())
        elif command == "report":
            ids = Counter()
            for record in twilio.messages:
                ids["sms", record.status_callback.rsplit("=", 1)[1]] += 1
            for record in fcm.messages:
                ids["push", record.data["delivery_id"]] += 1
            conn.send({"times": os.times(), "sms": len(twilio.messages), "push": len(fcm.messages),
                       "duplicates": sum(1 for n in ids.values() if n > 1),
                       "errors": len(twilio.errors) + len(fcm.errors)})
    twilio.stop()
    fcm.stop()


def _cpu(t: os.times_result) -> float:
    return t.user + t.system


def _messages(channel: str, n: int, offset: int = 0):
    from channels.base import OutboundMessage

    if channel == "sms":
        return [OutboundMessage(offset + i, f"+1415{(offset + i) % 10**7:07d}",
                                {"body": "Hi Ada, your cart misses you: 10% off today with code CART10"},
                                f"http://127.0.0.1:5000/webhooks/twilio/status?d={offset + i}")
                for i in range(n)]
    return [OutboundMessage(offset + i, f"dGVzdC10b2tlbi0{offset + i:010d}:APA91b" + "x" * 120,
                            {"title": "Your cart misses you", "body": "10% off today with code CART10",
                             "data": {"campaign_id": "12", "screen": "cart"}})
            for i in range(n)]


def _build(channel: str, info: dict, concurrency: int | None):
    from channels.registry import build_channel

    settings: dict = {"max_concurrency": concurrency}
    if channel == "sms":
        settings.update(account_sid=info["account_sid"], auth_token=info["auth_token"], from_number=FROM_NUMBER,
                        api_base_url=info["twilio_url"])
    else:
        settings.update(credentials_path=info["credentials_path"], api_base_url=info["fcm_url"])
    return build_channel(channel, settings)


def run_channel(conn, info: dict, channel_name: str, n: int, batch: int, concurrency: int | None) -> dict:
    from channels.base import SendResult

    channel = _build(channel_name, info, concurrency)
    try:
        channel.send_batch(_messages(channel_name, min(500, n), offset=10**9))  # connections, token
        conn.send("reset")
        fake_before = conn.recv()
        messages = _messages(channel_name, n)
        before, t0 = os.times(), time.perf_counter()
        failures = 0
        for start in range(0, n, batch):
            results = channel.send_batch(messages[start:start + batch])
            failures += sum(1 for r in results if not isinstance(r, SendResult))
        elapsed, after = time.perf_counter() - t0, os.times()
        conn.send("report")
        report = conn.recv()
    finally:
        channel.close()
    return {
        "rate": n / elapsed,
        "sender_us": (_cpu(after) - _cpu(before)) / n * 1e6,
        "fake_us": (_cpu(report["times"]) - _cpu(fake_before)) / n * 1e6,
        "failures": failures,
        "received": report[channel_name],
        "duplicates": report["duplicates"],
        "fake_errors": report["errors"],
        "concurrency": channel.max_concurrency,
    }


def floor(info: dict, n: int, threads: int) -> float:
    """Requests/s of a bare pooled client posting the same SMS form to the fake."""
    from channels.transport import ConnectionPool, form_encode

    pool = ConnectionPool(info["twilio_url"], maxsize=threads)
    path = f"/2010-04-01/Accounts/{info['account_sid']}/Messages.json"
    auth = base64.b64encode(f"{info['account_sid']}:{info['auth_token']}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded"}
    body = form_encode({"To": "+14155550100", "From": FROM_NUMBER, "Body": "floor",
                        "StatusCallback": "http://127.0.0.1:5000/webhooks/twilio/status?d=1"}).encode()

    def worker(count: int) -> None:
        for _ in range(count):
            assert pool.request("POST", path, body, headers).status == 201

    workers = [threading.Thread(target=worker, args=(n // threads,)) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rate = (n // threads * threads) / (time.perf_counter() - t0)
    pool.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages per channel (default 20000)")
    parser.add_argument("--channels", default="sms,push")
    parser.add_argument("--batch", type=int, default=500, help="messages per send_batch call (default 500)")
    parser.add_argument("--concurrency", default="", help="comma-separated max_concurrency values to try "
                                                          "(default: each channel's own default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the fakes wait before answering")
    parser.add_argument("--no-floor", action="store_true")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c] or [None]

    folder = tempfile.mkdtemp(prefix="tidings-bench-")
    parent, child = mp.get_context("spawn").Pipe()
    fakes = mp.get_context("spawn").Process(target=_serve_fakes, args=(child, folder, args.latency), daemon=True)
    fakes.start()
    info = parent.recv()
    print(f"cores: {os.cpu_count()}, n={args.n}, batch={args.batch}, fake latency={args.latency * 1000:.0f} ms, "
          f"fakes in a separate process")
    try:
        if not args.no_floor:
            rate = floor(info, min(args.n, 20_000), 8)
            print(f"floor: bare pooled HTTP/1.1 client -> FakeTwilio, 8 threads: {rate:,.0f} req/s")
        for name in args.channels.split(","):
            for concurrency in concurrencies:
                r = run_channel(parent, info, name, args.n, args.batch, concurrency)
                ok = r["received"] == args.n - r["failures"] and not r["duplicates"] and not r["fake_errors"]
                print(f"{name:>4}: {r['rate']:8,.0f} msg/s  concurrency={r['concurrency']:<3} "
                      f"sender {r['sender_us']:4.0f} us/msg  fake {r['fake_us']:4.0f} us/msg  "
                      f"failures={r['failures']} received={r['received']} duplicates={r['duplicates']}"
                      f"{'' if ok else '  MISMATCH'}")
    finally:
        parent.send("stop")
        fakes.join(timeout=10)


if __name__ == "__main__":
    main()
