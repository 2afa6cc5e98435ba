"""The HTTP server under the provider fakes: a small asyncio HTTP/1.1 server on 127.0.0.1.

Why not `http.server`: with one thread per connection and the stdlib's email-based header
parser it tops out near the throughput we want to measure the senders at, so the fake would be
the bottleneck of every benchmark. This server runs one event loop in one background thread,
keeps connections alive (HTTP/1.1), sends each response in a single write, and leaves
TCP_NODELAY on (asyncio sets it on every TCP transport), so a request costs tens of
microseconds. Each connection is a plain `asyncio.Protocol` that parses requests out of the
bytes as they arrive and answers from the same callback: no stream reader, task or future per
request (those were half of the fake's CPU per request). It speaks just enough HTTP/1.1 for the
clients we point at it: Content-Length and chunked request bodies, keep-alive,
`Connection: close`, `Expect: 100-continue`, pipelining (answers go out in request order, a
late one holding back those behind it).

Subclasses implement `handle(request) -> Response`; it runs on the server thread, so shared
state must be guarded by `self.lock`. A `Response.delay` makes the server wait before answering
without blocking other connections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import traceback
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote_plus

__all__ = ["FakeHTTPServer", "Request", "Response", "unused_local_url"]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def form(self) -> dict[str, str]:
        """The urlencoded body as a dict (last value wins, as Twilio reads single fields).

        Same result as `dict(parse_qsl(body, keep_blank_values=True))`, at a third of the
        cost (this runs once per request in the fakes' hot path)."""
        fields = {}
        for pair in self.body.decode("utf-8").split("&"):
            if pair:
                name, _, value = pair.partition("=")
                fields[unquote_plus(name)] = unquote_plus(value)
        return fields

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None, delay: float = 0.0) -> Response:
        return cls(
            status,
            json.dumps(payload, separators=(",", ":")).encode(),
            {"Content-Type": "application/json", **(headers or {})},
            delay,
        )


class _BadRequest(Exception):
    pass


def unused_local_url() -> str:
    """A loopback URL on which nothing listens (for connection-refused tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Faults:
    """What a fake answers instead of succeeding: the next `n` requests, or every (or the next
    `times`) request for one recipient, which comes first. Any fault value; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: deque = deque()
        self._for: dict[str, list] = {}  # recipient -> [fault, remaining or None]

    def add_next(self, fault, n: int = 1) -> None:
        with self._lock:
            self._next.extend([fault] * n)

    def add_for(self, recipient: str, fault, times: int | None = None) -> None:
        with self._lock:
            self._for[recipient] = [fault, times]

    def clear(self) -> None:
        with self._lock:
            self._next.clear()
            self._for.clear()

    def take(self, recipient: str | None):
        """The fault for this request, used up; None: succeed."""
        with self._lock:
            entry = self._for.get(recipient) if recipient is not None else None
            if entry is not None:
                fault, remaining = entry
                if remaining is not None:
                    if remaining <= 1:
                        del self._for[recipient]
                    else:
                        entry[1] = remaining - 1
                return fault
            return self._next.popleft() if self._next else None


class FakeHTTPServer:
    """Base of the provider fakes: start/stop, a context manager, `url`, `lock`, `errors`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        #: Exceptions raised by `handle` (answered 500); tests may assert it stays empty.
        self.errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        #: Open connections' transports (`get_extra_info("socket")` gives the socket).
        self._writers: set[asyncio.Transport] = set()
        self._connections_opened = 0

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far (keep-alive shows as few connections, many requests)."""
        with self.lock:
            return self._connections_opened

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeHTTPServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _Connection(self), self.host, self.port, backlog=1024)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for transport in list(self._writers):
                transport.close()
            await self._server.wait_closed()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(timeout=10)
        self._thread = None
        self._server = None
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- to override -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def _answer(self, request: Request) -> Response:
        try:
            return self.handle(request)
        except Exception as exc:  # noqa: BLE001 - a fake bug must not kill the connection
            with self.lock:
                self.errors.append(exc)
            return Response(500, traceback.format_exc().encode(), {"Content-Type": "text/plain"})


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed from the bytes as they come, answered in order."""

    def __init__(self, server: FakeHTTPServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        #: The request whose head is read and whose body is still arriving:
        #: (request, keep_alive, chunked, length, where the body starts in the buffer).
        self.waiting: tuple[Request, bool, bool, int, int] | None = None
        self.closing = False
        #: Answers held back by a delayed one ahead of them: (when, bytes, close after).
        self.pending: deque[tuple[float, bytes, bool]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server._writers.add(transport)  # noqa: SLF001
        with self.server.lock:
            self.server._connections_opened += 1  # noqa: SLF001

    def connection_lost(self, exc) -> None:
        self.server._writers.discard(self.transport)  # noqa: SLF001
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:  # the client reads slower than we answer: stop reading
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.closing and self._one_request():
            pass

    def _one_request(self) -> bool:
        """Answer the request at the front of the buffer if it is all there; False when not."""
        if self.waiting is None:
            end = self.buffer.find(b"\r\n\r\n", 0, _MAX_HEADER_BYTES + 4)
            if end < 0:
                if len(self.buffer) > _MAX_HEADER_BYTES:
                    self._fail(Response(431))
                return False
            try:
                request, keep_alive, expect_continue, chunked, length = _parse_head(bytes(self.buffer[:end]))
            except _BadRequest as exc:
                self._fail(Response(400, str(exc).encode()))
                return False
            self.waiting = (request, keep_alive, chunked, length, end + 4)
            if expect_continue:
                self._emit(b"HTTP/1.1 100 Continue\r\n\r\n", 0.0, False)
        request, keep_alive, chunked, length, start = self.waiting
        if chunked:
            try:
                parsed = _parse_chunked(self.buffer, start)
            except _BadRequest as exc:
                self._fail(Response(400, str(exc).encode()))
                return False
            if parsed is None:
                return False
            request.body, end = parsed
        else:
            end = start + length
            if len(self.buffer) < end:
                return False
            request.body = bytes(self.buffer[start:end])
        del self.buffer[:end]
        self.waiting = None
        response = self.server._answer(request)  # noqa: SLF001
        self._emit(_encode(response, close=not keep_alive), response.delay, not keep_alive)
        if not keep_alive:
            self.closing = True
        return True

    def _fail(self, response: Response) -> None:
        self._emit(_encode(response, close=True), 0.0, True)
        self.closing = True

    def _emit(self, payload: bytes, delay: float, close: bool) -> None:
        if not self.pending and delay <= 0:
            self._write(payload, close)
            return
        loop = asyncio.get_running_loop()
        self.pending.append((loop.time() + max(delay, 0.0), payload, close))
        if self.timer is None:
            self.timer = loop.call_at(self.pending[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = asyncio.get_running_loop().time()
        while self.pending and self.pending[0][0] <= now:
            _, payload, close = self.pending.popleft()
            self._write(payload, close)
        if self.pending:
            self.timer = asyncio.get_running_loop().call_at(self.pending[0][0], self._flush)

    def _write(self, payload: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            self.pending.clear()  # the client went away; nobody to answer
            return
        self.transport.write(payload)
        if close:
            self.pending.clear()
            self.transport.close()  # after the buffered answer is written


def _parse_head(head: bytes) -> tuple[Request, bool, bool, bool, int]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes everything
        raise _BadRequest("undecodable head") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"bad request line {lines[0]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(f"bad header line {line!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise _BadRequest("bad Content-Length") from exc
    if length < 0 or length > _MAX_BODY_BYTES:
        raise _BadRequest("bad Content-Length")
    path, _, query = target.partition("?")
    request = Request(method, target, path, parse_qs(query, keep_blank_values=True) if query else {}, headers, b"")
    expect_continue = headers.get("expect", "").lower() == "100-continue"
    return request, keep_alive, expect_continue, chunked, length


def _parse_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body starting at `start`: (body, where the request ends), or None when it has
    not all arrived yet."""
    body = bytearray()
    pos = start
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buffer[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequest("bad chunk size") from exc
        pos = eol + 2
        if size == 0:
            # trailers, if any, end with an empty line
            while True:
                eol = buffer.find(b"\r\n", pos)
                if eol < 0:
                    return None
                empty, pos = eol == pos, eol + 2
                if empty:
                    return bytes(body), pos
        if len(buffer) < pos + size + 2:
            return None
        body += buffer[pos:pos + size]
        pos += size + 2
        if len(body) > _MAX_BODY_BYTES:
            raise _BadRequest("body too large")


def _encode(response: Response, close: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Length: {len(response.body)}"]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
