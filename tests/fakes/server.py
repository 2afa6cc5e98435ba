"""The HTTP server under the provider fakes: a small asyncio HTTP/1.1 server on 127.0.0.1.

Why not `http.server`: with one thread per connection and the stdlib's email-based header
parser it tops out near the throughput we want to measure the senders at, so the fake would be
the bottleneck of every benchmark. This server runs one event loop in one background thread,
keeps connections alive (HTTP/1.1), sends each response in a single write, and leaves
TCP_NODELAY on (asyncio sets it on every TCP transport), so a request costs tens of
microseconds. It speaks just enough HTTP/1.1 for the clients we point at it: Content-Length and
chunked request bodies, keep-alive, `Connection: close`, `Expect: 100-continue`, pipelining.

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
        self._writers: set[asyncio.StreamWriter] = set()
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
                    asyncio.start_server(self._serve_connection, self.host, self.port, backlog=1024)
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
            for writer in list(self._writers):
                writer.close()
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

    # -- HTTP/1.1 ----------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with self.lock:
            self._connections_opened += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_encode(Response(431), close=True))
                    return
                try:
                    request, keep_alive, expect_continue, chunked, length = _parse_head(head)
                    if expect_continue:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    if chunked:
                        request.body = await _read_chunked(reader)
                    elif length:
                        request.body = await reader.readexactly(length)
                except _BadRequest as exc:
                    writer.write(_encode(Response(400, str(exc).encode()), close=True))
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                try:
                    response = self.handle(request)
                except Exception as exc:  # noqa: BLE001 - a fake bug must not kill the connection
                    with self.lock:
                        self.errors.append(exc)
                    response = Response(500, traceback.format_exc().encode(), {"Content-Type": "text/plain"})
                if response.delay:
                    await asyncio.sleep(response.delay)
                writer.write(_encode(response, close=not keep_alive))
                if writer.transport.get_write_buffer_size() > 256 * 1024:
                    await writer.drain()
                if not keep_alive:
                    await writer.drain()
                    return
        except asyncio.CancelledError:
            # stop() cancels open connections; finishing quietly (rather than re-raising) keeps
            # asyncio's stream callback from logging every cancelled connection as an error.
            return
        finally:
            self._writers.discard(writer)
            writer.close()


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


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequest("bad chunk size") from exc
        if size == 0:
            # trailers, if any, end with an empty line
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
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
