"""SMS through Twilio: `OutboundMessage` -> `client.messages.create(...)` -> `SendResult`.

The real `twilio` library builds and parses every request; underneath it we plug our own
`twilio.http.HttpClient` (the library's documented extension point for custom transports):

* it sends on pooled keep-alive connections shared by all threads (`channels.transport`;
  the library's default `requests` session costs ~6x more CPU per request, which is what
  limits throughput);
* it points the library at `api_base_url` (a sandbox or a local fake) by swapping the origin
  of the URLs the library builds, which is how Twilio's support suggests reaching a
  different host (twilio/twilio-python#521); nothing global is touched, and with the default
  base URL no URL is rewritten at all;
* it turns anything retryable (network errors, timeouts, 429, 5xx) into
  `TransientChannelError` right where the response headers are still at hand, so
  `Retry-After` is honoured (the library's `TwilioRestException` drops headers).

4xx answers come back through the library as `TwilioRestException` and are mapped to
`PermanentChannelError` by `TWILIO_ERRORS`.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from channels.base import Channel, OutboundMessage, SendResult, settings_kwargs
from channels.errors import ChannelConfigError, PermanentChannelError, TransientChannelError, parse_retry_after
from channels.transport import ConnectionPool, form_encode

__all__ = ["TWILIO_ERRORS", "TwilioHttpClient", "TwilioSMS"]

_logger = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://api.twilio.com"

#: Twilio REST error code -> (our code, deactivate the address). Anything 4xx not listed is
#: permanent with code "rejected"; 429 and 5xx never get here (they are transient).
TWILIO_ERRORS: dict[int, tuple[str, bool]] = {
    21211: ("invalid_number", True),  # 'To' is not a valid phone number
    21614: ("not_mobile", True),  # 'To' is not a mobile number
    21610: ("unsubscribed", True),  # recipient replied STOP; only START lets us send again
    21612: ("unreachable", False),  # 'To' not reachable via SMS from this sender
    21408: ("region_not_enabled", False),  # account may not send to that country
    21606: ("invalid_sender", False),  # 'From' is not a valid SMS-capable number of ours
    21659: ("invalid_sender", False),
    21603: ("invalid_sender", False),  # no From / MessagingServiceSid
    21602: ("invalid_content", False),  # empty body
    21617: ("invalid_content", False),  # body too long
    20003: ("provider_auth", False),  # bad account sid / auth token
    20404: ("provider_auth", False),  # account not found
}


class TwilioHttpClient(HttpClient):
    """A `twilio.http.HttpClient` on pooled keep-alive connections, aimed at `base_url`.

    Thread-safe: one instance serves all the threads of a channel.
    """

    def __init__(self, base_url: str = DEFAULT_API_BASE_URL, *, timeout: float = 10.0, pool_size: int = 16):
        super().__init__(_logger, is_async=False, timeout=timeout)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChannelConfigError(f"Twilio api_base_url must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._rewrite = self.base_url != DEFAULT_API_BASE_URL
        self._prefix = parts.path.rstrip("/")
        self._pool_size = pool_size
        self._pools: dict[str, ConnectionPool] = {}
        self._pools_lock = threading.Lock()
        self._auth_header: tuple[tuple[str, str], str] | None = None

    def request(self, method: str, url: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> TwilioResponse:
        headers = dict(headers or {})
        origin, path = self._target(url)
        if params:
            path += ("&" if "?" in path else "?") + form_encode(params)
        body: bytes | None = None
        if data:
            if headers.get("Content-Type", "").endswith("json"):
                body = json.dumps(data).encode()
            else:
                body = form_encode(data).encode()
        if auth:
            headers["Authorization"] = self._basic(auth)
        try:
            resp = self._pool(origin).request(method.upper(), path, body, headers, timeout)
        except TimeoutError as exc:
            raise TransientChannelError(code="timeout", message=f"Twilio timed out: {exc!r}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransientChannelError(code="network", message=f"Twilio unreachable: {exc!r}") from exc
        if resp.status == 429 or resp.status >= 500:
            raise TransientChannelError(
                parse_retry_after(resp.headers.get("retry-after")),
                code="rate_limited" if resp.status == 429 else "provider_unavailable",
                message=f"Twilio answered {resp.status}: {resp.data[:200]!r}",
                details={"status": resp.status},
            )
        return TwilioResponse(resp.status, resp.data.decode("utf-8", "replace"), resp.headers)

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    def _target(self, url: str) -> tuple[str, str]:
        """(origin, path with query) to send the library's `url` to."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if not self._rewrite:
            return f"{parts.scheme}://{parts.netloc}", path
        # The library builds https://api.twilio.com/... (or an edge/region host such as
        # api.dublin.ie1.twilio.com): keep the path and query, swap the origin.
        if not (parts.hostname or "").endswith(".twilio.com"):
            raise ValueError(f"refusing to send Twilio credentials to {parts.hostname}")
        return self.base_url, self._prefix + path

    def _pool(self, origin: str) -> ConnectionPool:
        pool = self._pools.get(origin)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.get(origin)
                if pool is None:
                    pool = ConnectionPool(origin, timeout=self.timeout or 10.0, maxsize=self._pool_size)
                    self._pools[origin] = pool
        return pool

    def _basic(self, auth: tuple[str, str]) -> str:
        cached = self._auth_header
        if cached is None or cached[0] != auth:
            cached = (auth, "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
            self._auth_header = cached
        return cached[1]


class TwilioSMS(Channel):
    """SMS through Twilio's Messages API.

    Args:
        account_sid: The Twilio account (`AC...`).
        auth_token: Its auth token.
        from_number: The sending number (E.164); or
        messaging_service_sid: a Messaging Service (`MG...`) to send from instead.
        api_base_url: Twilio's REST origin; a sandbox or a local fake in tests.
        timeout: Seconds to wait for Twilio per request.
        max_concurrency: Concurrent sends in `send_batch` (and pooled connections).
    """

    name = "sms"

    def __init__(self, account_sid: str, auth_token: str, *, from_number: str | None = None,
                 messaging_service_sid: str | None = None, api_base_url: str | None = None,
                 timeout: float = 10.0, max_concurrency: int = 64):
        super().__init__()
        if not account_sid or not auth_token:
            raise ChannelConfigError("Twilio needs an account SID and an auth token")
        if not from_number and not messaging_service_sid:
            raise ChannelConfigError("Twilio needs a sending number (from_number) or a messaging_service_sid")
        self.max_concurrency = int(max_concurrency)
        self.from_number = from_number or None
        self.messaging_service_sid = messaging_service_sid or None
        self._http = TwilioHttpClient(api_base_url or DEFAULT_API_BASE_URL, timeout=timeout,
                                      pool_size=self.max_concurrency)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        # Resolve the lazy properties once: client.messages builds a new MessageList per access.
        self._messages = self._client.api.v2010.account.messages

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TwilioSMS:
        """Build from a plain mapping with the constructor's argument names as keys."""
        return cls(**settings_kwargs(settings, ("account_sid", "auth_token"), (
            "from_number", "messaging_service_sid", "api_base_url", "timeout", "max_concurrency")))

    @property
    def api_base_url(self) -> str:
        return self._http.base_url

    def send(self, message: OutboundMessage) -> SendResult:
        body = message.content.get("body")
        if not isinstance(body, str) or not body:
            raise PermanentChannelError("invalid_content", message="SMS content needs a non-empty 'body'")
        try:
            created = self._messages.create(
                to=message.to,
                body=body,
                from_=self.from_number,
                messaging_service_sid=self.messaging_service_sid,
                status_callback=message.status_callback,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_rest_error(exc) from exc
        except (TwilioException, ValueError, KeyError) as exc:  # an answer we cannot read
            raise TransientChannelError(code="provider_error", message=f"unreadable Twilio answer: {exc!r}") from exc
        return SendResult(provider_id=created.sid, status=str(created.status or "queued"))

    def close(self) -> None:
        super().close()
        self._http.close()


def _map_rest_error(exc: TwilioRestException | TwilioServiceException) -> TransientChannelError | PermanentChannelError:
    """A Twilio error answer (legacy or RFC 9457 shape) as ours, through `TWILIO_ERRORS`."""
    status = int(exc.status or 0)
    detail = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
    message = f"Twilio {status} {exc.code}: {detail}"
    if status == 429 or status >= 500:
        return TransientChannelError(code="provider_unavailable", message=message)
    code, deactivate = TWILIO_ERRORS.get(int(exc.code) if str(exc.code).isdigit() else -1, ("rejected", False))
    return PermanentChannelError(code, deactivate, provider_code=str(exc.code), message=message,
                                 details={"status": status})

