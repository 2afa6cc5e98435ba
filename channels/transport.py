"""Keep-alive HTTP/1.1 connections to one origin, shared by a channel's threads.

Why not urllib3 or requests underneath the provider library: sending is CPU-bound in the
client, and per POST to a local fake (one core, measured) a request costs ~800 us of CPU
through a requests Session, ~355 us through a urllib3 PoolManager, ~245 us through a urllib3
connection pool and ~130 us through `http.client`. This module keeps what a provider
transport needs and no more:

* a pool of persistent connections (LIFO, so hot connections are reused), with a check that
  an idle connection was not closed by the server before it is reused;
* the request written in one `sendall` (head and body together, TCP_NODELAY on: no
  Nagle/delayed-ACK stalls, one wake-up of the server per request);
* a small response reader (status line, headers, Content-Length, chunked or read-to-close
  bodies, 1xx skipped, keep-alive rules): `http.client.HTTPResponse` builds an
  `email.message.Message` per response, which cost a third of a send;
* TLS with certifi's CA bundle; no retries (a retried POST could send twice; the scheduler
  retries, idempotently);
* fork safety: a forked child (a forking job worker) drops the connections it inherited.

`form_encode` is `urllib.parse.urlencode` for flat string mappings at a fraction of the cost
(the stdlib quotes character by character in Python; that was a fifth of an SMS send).
"""

from __future__ import annotations

import functools
import http.client
import json as jsonlib
import os
import re
import select
import socket
import ssl
import threading
import weakref
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.structures
import requests.utils

__all__ = ["ConnectionPool", "HTTPResponse", "PooledAdapter", "PooledSession", "form_encode"]

_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # no CR/LF (header injection) or other controls
_MAX_LINE = 65536
_MAX_HEADERS = 100


class HTTPResponse:
    """Status, headers (a dict, names lower-cased) and the whole body of one response."""

    __slots__ = ("status", "headers", "data")

    def __init__(self, status: int, headers: dict[str, str], data: bytes):
        self.status = status
        self.headers = headers
        self.data = data


class ConnectionPool:
    """Persistent connections to one `scheme://host:port`.

    Args:
        origin: `http://host:port` or `https://host[:port]`; any path is ignored.
        timeout: Socket timeout in seconds (connect, and each read).
        maxsize: Idle connections kept; more may be open at once, the extra ones are closed
            when returned.
    """

    def __init__(self, origin: str, *, timeout: float = 10.0, maxsize: int = 16):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.timeout = timeout
        self.maxsize = maxsize
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        _live_pools.add(self)
        self._ssl_context: ssl.SSLContext | None = None
        if self.scheme == "https":
            try:
                import certifi

                self._ssl_context = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # pragma: no cover - certifi comes with requests
                self._ssl_context = ssl.create_default_context()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float | None = None) -> HTTPResponse:
        """Send one request and read the whole response.

        Raises:
            TimeoutError: connect or read timed out.
            OSError, http.client.HTTPException: the connection failed or the answer was not HTTP.
            ValueError: control characters in the path or a header.
        """
        head = self._head(method, path, headers or {}, body)
        conn = self._checkout()
        try:
            conn.settimeout(self.timeout if timeout is None else timeout)
            conn.sock.sendall(head + body if body else head)
            response, will_close = _read_response(conn.rfile, method)
        except BaseException:
            conn.close()
            raise
        if will_close:
            conn.close()
        else:
            self._checkin(conn)
        return response

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _head(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        names, values = list(headers), [str(v) for v in headers.values()]
        if _UNSAFE.search("".join((method, path, *names, *values))) or " " in method + path:
            raise ValueError("control character or space in the request line or a header")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{n}: {v}" for n, v in zip(names, values) if n.lower() != "content-length"]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body) if body else 0}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _forget_after_fork(self) -> None:
        # A forked child must not talk on its parent's connections (replies would interleave).
        self._lock = threading.Lock()
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()  # closes the child's copy of the descriptor only

    def _checkout(self) -> _Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not conn.dropped():
                return conn
            conn.close()

    def _checkin(self, conn: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Connection:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)


_live_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool._forget_after_fork()  # noqa: SLF001


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Connection:
    """A socket and the buffered reader over it, alive across requests."""

    __slots__ = ("sock", "rfile", "timeout", "poller")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.timeout = sock.gettimeout()
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def settimeout(self, timeout: float | None) -> None:
        if timeout != self.timeout:  # each settimeout is a system call
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def dropped(self) -> bool:
        """True when an idle connection cannot be reused: an idle socket that is readable has
        seen the server hang up (EOF) or send bytes nobody asked for."""
        if self.sock.fileno() < 0:
            return True
        return bool(self.poller.poll(0))

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


def _read_response(rfile, method: str) -> tuple[HTTPResponse, bool]:
    """Read one response: (response, whether the server will close the connection)."""
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if not line:
            raise http.client.RemoteDisconnected("connection closed before any response")
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("status line")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, _reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise http.client.BadStatusLine(line.decode("latin-1", "replace"))
        status = int(code)
        headers = _read_headers(rfile)
        if status >= 200 or status == 101:
            break  # 1xx interim answers (100 Continue) are skipped
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if method == "HEAD" or status in (204, 304) or status < 200:
        data = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        data = _read_chunked(rfile)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise http.client.HTTPException("bad Content-Length") from None
        data = rfile.read(length)
        if len(data) != length:
            raise http.client.IncompleteRead(data, length - len(data))
    else:
        data = rfile.read()  # delimited by the server closing the connection
        will_close = True
    return HTTPResponse(status, headers, data), will_close


def _read_headers(rfile) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise http.client.HTTPException(f"bad header line {line!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise http.client.HTTPException("too many headers")


def _read_chunked(rfile) -> bytes:
    body = bytearray()
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {line!r}") from None
        if size == 0:
            _read_headers(rfile)  # trailers
            return bytes(body)
        chunk = rfile.read(size)
        if len(chunk) != size:
            raise http.client.IncompleteRead(bytes(body) + chunk)
        body += chunk
        rfile.readline(_MAX_LINE + 1)  # the CRLF after the chunk


class PooledAdapter(requests.adapters.BaseAdapter):
    """A `requests` transport adapter on a `ConnectionPool`, for libraries that send through a
    requests Session we do not own (firebase-admin): mount it on their session for one
    origin. No proxies (mount it only where none applies), no retries, no redirects, no
    response compression (it asks for `identity`).
    """

    def __init__(self, origin: str, *, timeout: float = 10.0, maxsize: int = 16):
        super().__init__()
        self._pool = ConnectionPool(origin, timeout=timeout, maxsize=maxsize)

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout=None, verify=True,
             cert=None, proxies=None) -> requests.Response:
        return self._send(request, dict(request.headers), timeout)

    def _send(self, request: requests.PreparedRequest, headers: dict[str, str], timeout) -> requests.Response:
        """Send `request` with `headers` (a plain dict we may change) as the wire headers."""
        path = _request_target(request.url)
        headers["Accept-Encoding"] = "identity"
        body = request.body.encode("utf-8") if isinstance(request.body, str) else request.body
        if isinstance(timeout, tuple):
            timeout = max((t for t in timeout if t is not None), default=None)
        try:
            resp = self._pool.request(request.method or "GET", path, body, headers, timeout)
        except TimeoutError as exc:
            raise requests.exceptions.Timeout(exc, request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        response = requests.Response()
        response.status_code = resp.status
        response.headers = requests.structures.CaseInsensitiveDict(resp.headers)
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.reason = http.client.responses.get(resp.status, "")
        response.url = request.url
        response.request = request
        response.connection = self
        response._content = resp.data  # noqa: SLF001 - a fully read body, as requests stores it
        response._content_consumed = True  # noqa: SLF001
        return response

    def close(self) -> None:
        self._pool.close()


@functools.lru_cache(maxsize=256)
def _request_target(url: str) -> str:
    """The path and query of `url`, as the request line carries them (a provider's few URLs
    come back on every request: parse each once)."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class PooledSession(requests.Session):
    """A `requests.Session` that hands plain requests straight to a mounted `PooledAdapter`.

    For libraries that call `session.request(...)` on a session we may choose (firebase-admin
    through google-auth's `AuthorizedSession`). `requests.Session.request` spends most of a small
    POST's CPU on generality a provider call does not use: merging session and environment
    settings, the cookie jar, hooks, re-parsing and re-quoting the URL, redirects (measured
    through a `PooledAdapter` to a local fake: ~60% of a send). Here a request that uses none
    of it (method, URL, headers of `str`, a `str`/`bytes` body or `json`, timeout), on a
    session that has none of it set, to a URL mounted on a `PooledAdapter`, is prepared in a few
    lines and handed to the adapter; it gets the same `requests.Response` (`raise_for_status`,
    `json()`, case-insensitive headers) and fails with the same requests exceptions. Anything
    else takes requests' own path.

    On the short path no cookies are stored or sent and a redirect is returned as it is (our
    providers' APIs neither set cookies nor redirect). `trust_env` is off: whoever builds the
    session reads proxy settings from the environment once, if it wants them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False

    def request(self, method, url, params=None, data=None, headers=None, cookies=None, files=None, auth=None,
                timeout=None, allow_redirects=True, proxies=None, hooks=None, stream=None, verify=None, cert=None,
                json=None):
        wire = None
        if not (params or cookies or files or auth or proxies or hooks or stream or cert or verify is False
                or (data and not isinstance(data, (str, bytes))) or self._has_settings()):
            adapter = self.get_adapter(url)
            if isinstance(adapter, PooledAdapter):
                wire = _merge_headers(self.headers, headers)
        if wire is None:
            return super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                   files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                                   proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert, json=json)
        if not data and json is not None:  # as requests: JSON only without a body, never NaN
            body = jsonlib.dumps(json, allow_nan=False).encode("utf-8")
            if not any(name.lower() == "content-type" for name in wire):
                wire["Content-Type"] = "application/json"
        else:
            body = data or None
        prepared = requests.PreparedRequest()
        prepared.method = str(method).upper()
        prepared.url = url
        prepared.headers = requests.structures.CaseInsensitiveDict(wire)
        prepared.body = body
        return adapter._send(prepared, wire, timeout)  # noqa: SLF001 - our own adapter

    def _has_settings(self) -> bool:
        """Whether session-wide settings the short path does not apply are set."""
        return bool(self.trust_env or self.auth or self.params or self.proxies or self.cert or self.stream
                    or self.verify is not True or any(self.hooks.values())
                    or next(iter(self.cookies), None) is not None)


def _merge_headers(session_headers: Mapping[str, object], headers: Mapping[str, object] | None) -> dict[str, str] | None:
    """Session headers overridden by request headers, names compared case-insensitively and
    headers set to None dropped, as requests merges them; None when a value is not a `str`
    (bytes and the like: requests' path knows their rules)."""
    merged = {name.lower(): (name, value) for name, value in session_headers.items()}
    if headers:
        merged.update({name.lower(): (name, value) for name, value in headers.items()})
    wire = {}
    for name, value in merged.values():
        if value is None:
            continue
        if not isinstance(value, str):
            return None
        wire[name] = value
    return wire


def _quote_table() -> dict[int, str]:
    safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
    table = {b: f"%{b:02X}" for b in range(256) if chr(b) not in safe}
    table[ord(" ")] = "+"
    return table


_QUOTE_PLUS = _quote_table()


def form_encode(fields: Mapping[str, object]) -> str:
    """`application/x-www-form-urlencoded`, identical to `urllib.parse.urlencode(fields)` for
    flat mappings of strings (lists repeat the key, as with `doseq=True`; other values go
    through `str`)."""
    parts = []
    for key, value in fields.items():
        name = _quote(str(key))
        if isinstance(value, (list, tuple)):
            parts += [f"{name}={_quote(str(v))}" for v in value]
        else:
            parts.append(f"{name}={_quote(value if isinstance(value, str) else str(value))}")
    return "&".join(parts)


def _quote(text: str) -> str:
    # UTF-8 bytes viewed as latin-1 code points, then one C-level translate per value
    return text.encode("utf-8").decode("latin-1").translate(_QUOTE_PLUS)
