"""The pooled HTTP/1.1 transport under the channels, against small scripted servers."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.transport import ConnectionPool, PooledAdapter, PooledSession, form_encode
from tests.fakes import FakeHTTPServer, Response, unused_local_url


class Echo(FakeHTTPServer):
    def handle(self, request):
        if request.path == "/close":
            return Response(200, b"bye", {"Connection": "close"})
        return Response.json(200, {"method": request.method, "target": request.target,
                                   "body": request.body.decode(), "headers": request.headers})


@pytest.fixture
def echo():
    with Echo() as server:
        yield server


@settings(deadline=None)
@given(st.dictionaries(st.text(), st.text() | st.integers().map(str), max_size=5))
def test_form_encode_matches_urlencode(fields):
    assert form_encode(fields) == urllib.parse.urlencode(fields)


def test_form_encode_repeats_keys_for_lists():
    assert form_encode({"MediaUrl": ["a b", "c"]}) == urllib.parse.urlencode({"MediaUrl": ["a b", "c"]}, doseq=True)


def test_requests_reuse_one_connection(echo):
    pool = ConnectionPool(echo.url)
    for i in range(10):
        resp = pool.request("POST", f"/x?i={i}", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 200
    pool.close()

    assert echo.connections_opened == 1
    assert resp.headers["content-type"] == "application/json"
    body = resp.data.decode()
    assert '"target":"/x?i=9"' in body and '"content-length":"3"' in body


def test_server_closing_the_connection_is_followed_by_a_new_one(echo):
    pool = ConnectionPool(echo.url)
    assert pool.request("GET", "/close").data == b"bye"
    assert pool.request("GET", "/again").status == 200
    pool.close()

    assert echo.connections_opened == 2


def test_idle_connection_dropped_by_the_server_is_not_reused(echo):
    pool = ConnectionPool(echo.url)
    pool.request("GET", "/one")
    echo.stop()  # closes every connection
    echo.start()  # same port
    assert pool.request("GET", "/two").status == 200
    pool.close()


def test_header_injection_is_refused(echo):
    pool = ConnectionPool(echo.url)
    with pytest.raises(ValueError):
        pool.request("GET", "/x", headers={"X-Evil": "a\r\nInjected: yes"})
    with pytest.raises(ValueError):
        pool.request("GET", "/x HTTP/1.1\r\nHost: other")
    pool.close()


def test_connection_refused_raises_oserror():
    pool = ConnectionPool(unused_local_url())
    with pytest.raises(OSError):
        pool.request("GET", "/")


def _raw_server(reply: bytes):
    """A one-shot server that answers any request with `reply`, then closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_chunked_response_is_read_whole():
    url = _raw_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    pool = ConnectionPool(url)
    assert pool.request("GET", "/").data == b"hello world"
    pool.close()


def test_response_without_length_reads_to_close_and_interim_answers_are_skipped():
    url = _raw_server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nX-A: 1\r\nX-A: 2\r\n\r\nall of it")
    pool = ConnectionPool(url)
    resp = pool.request("GET", "/")
    assert (resp.status, resp.data, resp.headers["x-a"]) == (200, b"all of it", "1, 2")
    pool.close()


def test_truncated_body_is_an_error():
    url = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    pool = ConnectionPool(url)
    with pytest.raises(Exception) as caught:
        pool.request("GET", "/")
    assert isinstance(caught.value, (OSError, __import__("http.client").client.HTTPException))
    pool.close()


def test_not_http_is_an_error():
    url = _raw_server(b"SSH-2.0-OpenSSH\r\n")
    pool = ConnectionPool(url)
    with pytest.raises(__import__("http.client").client.HTTPException):
        pool.request("GET", "/")
    pool.close()


def test_read_timeout_raises_timeouterror(echo):
    class Slow(FakeHTTPServer):
        def handle(self, request):
            return Response(200, b"late", delay=1.0)

    with Slow() as slow:
        pool = ConnectionPool(slow.url, timeout=0.2)
        with pytest.raises(TimeoutError):
            pool.request("GET", "/")
        pool.close()


def test_requests_adapter_speaks_for_a_session(echo):
    session = requests.Session()
    session.trust_env = False
    session.mount(echo.url + "/", PooledAdapter(echo.url))

    resp = session.post(echo.url + "/send?x=1", json={"a": 1}, headers={"X-Test": "1"})
    session.post(echo.url + "/send", json={"a": 2})

    assert resp.status_code == 200 and resp.json()["body"] == '{"a": 1}'
    assert resp.json()["headers"]["x-test"] == "1"
    assert resp.json()["headers"]["accept-encoding"] == "identity"
    assert resp.headers["Content-Type"] == "application/json"  # case-insensitive, like requests
    assert echo.connections_opened == 1
    session.close()


def test_requests_adapter_maps_failures_to_requests_exceptions():
    session = requests.Session()
    url = unused_local_url()
    session.mount(url + "/", PooledAdapter(url))
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url + "/")
    session.close()


def _plain_session(url: str) -> PooledSession:
    session = PooledSession()
    session.mount(url + "/", PooledAdapter(url))
    return session


def test_pooled_session_sends_plain_requests_without_requests_preparation(echo, monkeypatch):
    session = _plain_session(echo.url)

    def refuse(*args, **kwargs):
        raise AssertionError("took requests' own path")

    monkeypatch.setattr(requests.Session, "request", refuse)
    resp = session.request("post", echo.url + "/send?x=1", json={"a": 1, "b": "é"},
                           headers={"X-Test": "1", "User-Agent": None}, timeout=5)
    raw = session.post(echo.url + "/raw", data=b"a=1&b=2", headers={"content-type": "application/x-www-form-urlencoded"})
    session.close()

    seen = resp.json()
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert seen["method"] == "POST" and seen["target"] == "/send?x=1"
    assert json.loads(seen["body"]) == {"a": 1, "b": "é"}  # requests' encoding: ASCII-escaped JSON
    assert seen["headers"]["content-type"] == "application/json" and seen["headers"]["x-test"] == "1"
    assert "user-agent" not in seen["headers"]  # a header set to None is removed, as requests does
    assert raw.json()["body"] == "a=1&b=2"
    assert raw.json()["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert echo.connections_opened == 1


def test_pooled_session_sends_the_same_request_as_requests_would(echo):
    plain, pooled = requests.Session(), _plain_session(echo.url)
    plain.trust_env = False
    plain.mount(echo.url + "/", PooledAdapter(echo.url))

    seen = [s.post(echo.url + "/x", json={"k": [1, 2.5, None]}, headers={"Authorization": "Bearer t"}).json()
            for s in (plain, pooled)]
    plain.close()
    pooled.close()

    assert seen[0] == seen[1]


def test_pooled_session_leaves_anything_else_to_requests(echo):
    session = _plain_session(echo.url)

    with_params = session.get(echo.url + "/p", params={"q": "a b"}).json()
    session.cookies.set("c", "1")
    with_cookie = session.get(echo.url + "/c").json()
    session.close()

    assert with_params["target"] == "/p?q=a+b"
    assert with_cookie["headers"]["cookie"] == "c=1"


def test_pooled_session_answers_and_failures_are_requests_ones(echo):
    url = unused_local_url()
    session = _plain_session(url)
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(url + "/x", json={})
    session.close()

    class NotFound(FakeHTTPServer):
        def handle(self, request):
            return Response.json(404, {"error": {"status": "NOT_FOUND"}}, {"Retry-After": "3"})

    with NotFound() as server:
        session = _plain_session(server.url)
        resp = session.post(server.url + "/x", json={})
        with pytest.raises(requests.exceptions.HTTPError) as caught:
            resp.raise_for_status()
        session.close()
    assert caught.value.response is resp and resp.headers["retry-after"] == "3"
    assert resp.json() == {"error": {"status": "NOT_FOUND"}}


def test_a_per_request_timeout_applies_on_a_kept_alive_connection():
    class SlowPath(FakeHTTPServer):
        def handle(self, request):
            return Response(200, b"ok", delay=1.0 if request.path == "/slow" else 0.0)

    with SlowPath() as server:
        pool = ConnectionPool(server.url, timeout=5.0)
        assert pool.request("GET", "/fast").status == 200
        with pytest.raises(TimeoutError):
            pool.request("GET", "/slow", timeout=0.2)
        assert pool.request("GET", "/fast", timeout=0.5).data == b"ok"
        started = time.monotonic()
        assert pool.request("GET", "/slow").data == b"ok"  # back to the pool's 5 s
        assert time.monotonic() - started >= 0.9
        pool.close()
