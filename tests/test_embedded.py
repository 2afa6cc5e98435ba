"""The embedded default: no DATABASE_URL, no REDIS_URL -> SQLite and an in-process queue + worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method="GET", body=None, key=None, content_type="application/json"):
    req = urllib.request.Request(url, method=method, data=body)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read() or b"null")


@pytest.mark.slow
def test_serve_runs_csv_import_on_the_embedded_worker(tmp_path):
    env = {**os.environ, "DATABASE_URL": "", "REDIS_URL": "", "TIDINGS_INSTANCE_PATH": str(tmp_path)}
    demo = subprocess.run([sys.executable, "-m", "tidings.cli", "demo", "--users", "50"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    key = json.loads(demo.stdout)["server_key"]
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([sys.executable, "-m", "tidings.cli", "serve", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                call(base + "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        boundary = "xyzzy"
        csv = "external_id,country,attr.plan\nimported-1,US,pro\nimported-2,FR,free\n"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u.csv\"\r\n"
                f"Content-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n").encode()
        status, imp = call(base + "/api/v1/imports/users", "POST", body, key,
                           f"multipart/form-data; boundary={boundary}")
        assert status == 202
        for _ in range(100):
            _, imp = call(base + f"/api/v1/imports/{imp['id']}", key=key)
            if imp["status"] == "finished":
                break
            time.sleep(0.1)
        assert imp["status"] == "finished" and imp["imported_rows"] == 2
        _, user = call(base + "/api/v1/users/imported-1", key=key)
        assert user["attributes"] == {"plan": "pro"}
        _, size = call(base + "/api/v1/segments/preview", "POST", json.dumps({"query": 'attr.plan = "pro"'}).encode(), key)
        assert size["count"] == 1 and size["sample"] == ["imported-1"]
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
