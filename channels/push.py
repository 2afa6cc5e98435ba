"""Push through Firebase Cloud Messaging: `OutboundMessage` -> FCM v1 `messages:send`.

Every send goes through the real `firebase-admin` library (`messaging.send`: its message
encoding, its request, its error classes), on a firebase_admin `App` of our own: one per
channel instance, with a unique name, so several credentials and base URLs coexist in one
process and nothing global is touched. The App is given google-auth service-account
credentials read from the JSON file (scoped to FCM), so the OAuth token comes from the file's
`token_uri` (google-auth posts a signed JWT there).

firebase-admin has no setting for the FCM host: `_MessagingService.__init__` formats the
hard-coded `https://fcm.googleapis.com/v1/projects/{p}/messages:send` into the instance
attribute `_fcm_url`. So our App gets its messaging service from a subclass,
`_TidingsMessagingService`, which after the library's own `__init__`:

* sets `_fcm_url` to `{api_base_url}/v1/projects/{p}/messages:send` (only when `api_base_url`
  is not the default; the request body, headers, auth, error parsing all stay the library's);
* gives the service a new `_client`, the library's own `JsonHttpClient` built with its
  `session=` argument and no retries (the default retries 500/503 four times with backoff
  and re-sends after a read error, which can deliver a push twice and blocks a worker for
  seconds; retrying is the scheduler's job, honouring Retry-After). The session is
  google-auth's `AuthorizedSession` (token on every request, refresh and retry on 401) over
  `channels.transport.PooledSession`, which hands plain requests straight to our pooled
  keep-alive connections (`PooledAdapter`) instead of through requests' per-request
  preparation;
* reads proxy settings from the environment once, when built, instead of on every request
  (`trust_env = False`); with a proxy configured, requests' own path and adapter are used.

A batch is sent one `messaging.send` per message on the channel's own long-lived threads
(`max_concurrency`), not with `messaging.send_each`, which starts a thread per message on
every call. Measured against the local fake (bench/channels.py, 2 cores, 64 threads): ~520-650
us of sender CPU per message with `send_each` over requests' path, ~160 us now. Fewer threads
cost less CPU against a fake that answers at once (~130 us with 8), but FCM answers in tens of
milliseconds and a batch goes at most `max_concurrency` / latency per second (64 threads,
50 ms: ~1,100 msg/s per process), so the default stays 64.

It is registered on our App through `firebase_admin._utils.get_app_service`, the same call
`messaging` uses to create the service lazily, so `messaging.send(..., app=our_app)` then
finds ours. This relies on private names of firebase-admin (`_MessagingService`, its
`_fcm_url` and `_client`, the `_messaging` service slot); the contract tests fail loudly if a
release moves them.

Two more adjustments, both on objects we own:

* firebase-admin 7.7 deprecates `Message(token=...)` for Firebase installation IDs (`fid`).
  Addresses shaped like an installation ID go out as `fid`; registration tokens (what apps
  send us today) still go in `message.token`, set as an attribute so the request is the same
  without a DeprecationWarning per message.
* When the service account's `token_uri` is not Google's (a sandbox, the local fake), the
  credentials skip google-auth's background Regional Access Boundary lookup at
  iamcredentials.googleapis.com, which cannot succeed for a token Google did not issue.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import requests
import requests.adapters
from firebase_admin import _http_client as firebase_http
from firebase_admin import _utils as firebase_utils
from firebase_admin import exceptions as firebase_exceptions
from firebase_admin import messaging
from google.oauth2 import service_account

from channels.base import Channel, OutboundMessage, SendResult, settings_kwargs
from channels.errors import (
    ChannelConfigError,
    ChannelError,
    PermanentChannelError,
    TransientChannelError,
    parse_retry_after,
)
from channels.transport import PooledAdapter, PooledSession

__all__ = ["FCM_ERRORS", "FCMPush"]

DEFAULT_API_BASE_URL = "https://fcm.googleapis.com"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
#: A Firebase installation ID (22 base64url characters, the first one of c-f); anything else
#: is taken for a registration token (those run to 150+ characters).
_FID = re.compile(r"^[c-f][A-Za-z0-9_-]{21}$")

_TRANSIENT = "transient"
_PERMANENT = "permanent"
#: FCM errorCode (or, without one, the canonical status) -> (kind, our code, deactivate token).
#: INVALID_ARGUMENT deactivates only when FCM says the token is what is invalid.
FCM_ERRORS: dict[str, tuple[str, str, bool]] = {
    "UNREGISTERED": (_PERMANENT, "unregistered", True),
    "INVALID_ARGUMENT": (_PERMANENT, "invalid_argument", False),
    "SENDER_ID_MISMATCH": (_PERMANENT, "sender_id_mismatch", False),
    "THIRD_PARTY_AUTH_ERROR": (_PERMANENT, "third_party_auth", False),
    "UNAUTHENTICATED": (_PERMANENT, "provider_auth", False),
    "PERMISSION_DENIED": (_PERMANENT, "provider_auth", False),
    "NOT_FOUND": (_PERMANENT, "not_found", False),
    "QUOTA_EXCEEDED": (_TRANSIENT, "rate_limited", False),
    "RESOURCE_EXHAUSTED": (_TRANSIENT, "rate_limited", False),
    "UNAVAILABLE": (_TRANSIENT, "provider_unavailable", False),
    "INTERNAL": (_TRANSIENT, "provider_unavailable", False),
    "DEADLINE_EXCEEDED": (_TRANSIENT, "timeout", False),
    "UNKNOWN": (_TRANSIENT, "provider_error", False),
}

_app_ids = itertools.count(1)
_FCM_SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",)


class _NonGoogleTokenCredentials(service_account.Credentials):
    """Service-account credentials whose `token_uri` is not Google's (a sandbox, a local fake).

    After the first token, google-auth looks up the account's Regional Access Boundary at
    iamcredentials.googleapis.com in a background thread. With a token Google did not issue
    that lookup can only fail, and it is the one request that would leave the sandbox, so it
    is switched off for these credentials only (Google-issued credentials keep it).
    """

    def _is_regional_access_boundary_lookup_required(self) -> bool:
        return False


def _load_credentials(path: str | os.PathLike) -> service_account.Credentials:
    """google-auth credentials from a service-account JSON, `token_uri` and all, scoped to FCM."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise ValueError('not a service-account JSON (its "type" must be "service_account")')
        token_host = urlsplit(info.get("token_uri") or "").hostname or ""
        cls = service_account.Credentials if token_host.endswith(".googleapis.com") else _NonGoogleTokenCredentials
        return cls.from_service_account_info(info, scopes=list(_FCM_SCOPES))
    except (OSError, ValueError) as exc:  # google-auth's MalformedError is a ValueError
        raise ChannelConfigError(f"cannot use FCM credentials {os.fspath(path)}: {exc}") from exc


class _FCMSession(google.auth.transport.requests.AuthorizedSession, PooledSession):
    """google-auth's authorised session (token on every request, refresh and retry once on 401)
    over `PooledSession`: `AuthorizedSession.request` calls `super().request`, which by the
    method resolution order is `PooledSession.request`, the short path to our pooled adapter."""


class _TidingsMessagingService(messaging._MessagingService):  # noqa: SLF001 - see module docstring
    """firebase-admin's FCM service, aimed at `api_base_url`, on a pooled no-retry session."""

    def __init__(self, app: firebase_admin.App, api_base_url: str, pool_size: int, timeout: float):
        super().__init__(app)
        base = api_base_url.rstrip("/")
        if base != DEFAULT_API_BASE_URL:
            self._fcm_url = f"{base}/v1/projects/{self._project_id}/messages:send"
            self._fcm_topic_url = f"{base}/v1/projects/{self._project_id}/registrations"
        # The library's own client is a JsonHttpClient on a plain AuthorizedSession with a
        # retrying adapter; ours is the same class (its `session=` argument), without retries,
        # on a session that skips requests' per-request preparation.
        self._client.close()
        session = _FCMSession(self._credential)
        # Proxy settings are read from the environment once, here, not on every request.
        proxies = requests.utils.get_environ_proxies(self._fcm_url)
        session.proxies.update(proxies)
        if proxies:  # requests' own path and adapter, which know proxies
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        else:
            adapter = PooledAdapter(base, timeout=timeout, maxsize=pool_size)
        session.mount(base + "/", adapter)
        self._client = firebase_http.JsonHttpClient(session=session, retries=False, timeout=timeout)

    def close(self) -> None:
        super().close()  # closes the library's async client only
        self._client.close()  # the session, its adapters and google-auth's token session


class FCMPush(Channel):
    """Push notifications through FCM's HTTP v1 API.

    Args:
        credentials_path: A Firebase service-account JSON file; its `project_id` and
            `token_uri` are used as written.
        api_base_url: FCM's origin; a local fake in tests.
        timeout: Seconds to wait for FCM (and the token endpoint) per request.
        max_concurrency: Threads sending a batch at once, and pooled connections.
    """

    name = "push"

    def __init__(self, credentials_path: str | os.PathLike, *, api_base_url: str | None = None,
                 timeout: float = 10.0, max_concurrency: int = 64):
        super().__init__()
        self.max_concurrency = int(max_concurrency)
        self.api_base_url = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        if not self.api_base_url.startswith(("http://", "https://")):
            raise ChannelConfigError(f"FCM api_base_url must be an http(s) URL, not {api_base_url!r}")
        self._credential = _load_credentials(credentials_path)
        self.project_id: str = self._credential.project_id
        if not self.project_id:
            raise ChannelConfigError(f"FCM credentials {credentials_path!s} have no project_id")
        self._app = firebase_admin.initialize_app(
            self._credential,
            options={"projectId": self.project_id, "httpTimeout": timeout},
            name=f"tidings-push-{os.getpid()}-{next(_app_ids)}",
        )
        try:
            service = _TidingsMessagingService(self._app, self.api_base_url, self.max_concurrency, timeout)
            registered = firebase_utils.get_app_service(self._app, messaging._MESSAGING_ATTRIBUTE,  # noqa: SLF001
                                                        lambda app: service)
            if registered is not service:  # pragma: no cover - only if firebase-admin changes
                raise RuntimeError("could not install the FCM service on our firebase_admin App")
        except BaseException:
            firebase_admin.delete_app(self._app)
            raise
        self._token_session = requests.Session()
        self._token_request = functools.partial(google.auth.transport.requests.Request(self._token_session),
                                                timeout=timeout)
        self._token_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FCMPush:
        """Build from a plain mapping: `credentials_path` (or `credentials`), `api_base_url`,
        `timeout`, `max_concurrency`."""
        settings = dict(settings)
        if not settings.get("credentials_path") and settings.get("credentials"):
            settings["credentials_path"] = settings["credentials"]
        return cls(**settings_kwargs(settings, ("credentials_path",),
                                     ("api_base_url", "timeout", "max_concurrency")))

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        fcm_message = _build(message)
        self._ensure_token()
        outcome = self._send_one_captured(fcm_message)
        if isinstance(outcome, ChannelError):
            raise outcome
        return outcome

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult | ChannelError]:
        """Send concurrently, one `messaging.send` per message on the channel's threads, in
        input order.

        Not `messaging.send_each`: it starts a new thread per message on every call (up to
        500), which under load cost more CPU than the sends themselves; our threads live as
        long as the channel.
        """
        results: list[SendResult | ChannelError | None] = [None] * len(messages)
        built: list[tuple[int, messaging.Message]] = []
        for i, message in enumerate(messages):
            try:
                built.append((i, _build(message)))
            except PermanentChannelError as exc:
                results[i] = exc
        if built:
            try:
                self._ensure_token()
            except ChannelError as exc:
                for i, _ in built:
                    results[i] = exc
                built = []
        outcomes = self._map(self._send_one_captured, [m for _, m in built])
        for (i, _), outcome in zip(built, outcomes):
            results[i] = outcome
        return results  # type: ignore[return-value] - every slot is filled

    def _send_one_captured(self, fcm_message: messaging.Message) -> SendResult | ChannelError:
        try:
            return SendResult(provider_id=messaging.send(fcm_message, app=self._app), status="sent")
        except Exception as exc:  # noqa: BLE001 - mapped below; anything unknown is re-raised
            error = _map_send_exception(exc)
            error.__cause__ = exc
            return error

    def _ensure_token(self) -> None:
        """Fetch the access token once, before fanning out: otherwise every thread of a batch
        sees no token and posts its own JWT to the token endpoint."""
        if self._credential.valid:
            return
        with self._token_lock:
            if self._credential.valid:
                return
            try:
                self._credential.refresh(self._token_request)
            except google.auth.exceptions.GoogleAuthError as exc:
                raise _map_auth_error(exc) from exc

    def close(self) -> None:
        super().close()
        try:
            firebase_admin.delete_app(self._app)
        except ValueError:  # already deleted
            pass
        self._token_session.close()


# -- message building and error mapping --------------------------------------------------------


def _build(message: OutboundMessage) -> messaging.Message:
    """The FCM message for one device (a registration token, or a Firebase installation ID):
    notification title/body, string data with delivery_id."""
    content = message.content
    data: dict[str, str] = {}
    for key, value in (content.get("data") or {}).items():
        if value is None:
            continue
        key = str(key)
        if key in _RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
            raise PermanentChannelError("invalid_content", message=f"push data key {key!r} is reserved by FCM")
        data[key] = _as_string(value)
    data["delivery_id"] = str(message.delivery_id)
    title, body = content.get("title"), content.get("body")
    notification = messaging.Notification(title=title, body=body) if title or body else None
    if not message.to:
        raise PermanentChannelError("unregistered", True, message="no push token")
    if _FID.match(message.to):
        return messaging.Message(fid=message.to, notification=notification, data=data)
    fcm_message = messaging.Message(notification=notification, data=data)
    # A registration token. firebase-admin 7.7 deprecates the `token=` argument in favour of
    # Firebase installation IDs, but FCM still takes registration tokens in `message.token`
    # and the library still encodes the attribute; setting it after construction sends the
    # same request without a DeprecationWarning per message.
    fcm_message.token = message.to
    return fcm_message


def _as_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _map_send_exception(exc: Exception) -> ChannelError:
    """What a failed `messaging.send` means for us; exceptions we do not know propagate."""
    if isinstance(exc, firebase_exceptions.FirebaseError):
        return _map_firebase_error(exc)
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):  # token refresh inside the request
        return _map_auth_error(exc)
    if isinstance(exc, (KeyError, TypeError, json.JSONDecodeError)):  # a 2xx answer we cannot read
        return TransientChannelError(code="provider_error", message=f"unreadable FCM answer: {exc!r}")
    if isinstance(exc, ValueError):  # the library's own validation of the message
        return PermanentChannelError("invalid_content", message=str(exc))
    raise exc


def _map_firebase_error(exc: firebase_exceptions.FirebaseError) -> TransientChannelError | PermanentChannelError:
    response = exc.http_response
    status = response.status_code if response is not None else None
    error = _error_body(response)
    fcm_code = _fcm_error_code(error) or str(exc.code)
    kind, code, deactivate = FCM_ERRORS.get(fcm_code, (_PERMANENT, "rejected", False))
    if status is not None and (status == 429 or status >= 500):
        kind = _TRANSIENT  # whatever the body says, the provider asked us to come back
    message = f"FCM {status or '-'} {fcm_code}: {error.get('message') or exc}"
    details = {"status": status} if status is not None else None
    if kind == _TRANSIENT:
        if status is None and isinstance(exc.cause, requests.exceptions.ConnectionError):
            code = "network"
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        return TransientChannelError(retry_after, code=code, message=message, details=details)
    if fcm_code == "INVALID_ARGUMENT":
        deactivate = _is_token_error(error)
    return PermanentChannelError(code, deactivate, provider_code=fcm_code, message=message, details=details)


def _map_auth_error(exc: google.auth.exceptions.GoogleAuthError) -> TransientChannelError | PermanentChannelError:
    """The access token could not be had: the token endpoint is down (transient) or refused
    our service account (permanent: no message can go until the credentials are fixed)."""
    if isinstance(exc, google.auth.exceptions.TransportError) or getattr(exc, "retryable", False):
        return TransientChannelError(code="provider_unavailable", message=f"FCM token endpoint: {exc}")
    return PermanentChannelError("provider_auth", message=f"FCM credentials refused: {exc}")


def _error_body(response: requests.Response | None) -> dict:
    if response is None:
        return {}
    try:
        payload = response.json()
    except ValueError:
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def _fcm_error_code(error: dict) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE and detail.get("errorCode"):
            return str(detail["errorCode"])
    return error.get("status") or None


def _is_token_error(error: dict) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token (not the payload)."""
    for detail in error.get("details") or ():
        for violation in (detail.get("fieldViolations") or ()) if isinstance(detail, dict) else ():
            if str(violation.get("field", "")).endswith("token"):
                return True
    return "registration token" in str(error.get("message", "")).lower()
