"""FakeTwilio: a local stand-in for Twilio's Messages API, called by the real twilio library.

Serves `POST /2010-04-01/Accounts/{sid}/Messages.json`, checks HTTP Basic auth, answers like
Twilio (201 and the message resource, or Twilio's JSON error body), records every request, and
can be told to fail: the next N requests, or every request to a given number.

    with FakeTwilio() as fake:
        fake.fault_next(2, status=429, retry_after=3)
        fake.fault_for("+15005550001", code=21211)
        ...
        fake.messages          # accepted messages, in arrival order

It can also build the signed status callback Twilio would POST later
(`status_callback_request`), for webhook tests.
"""

from __future__ import annotations

import base64
import itertools
import re
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote_plus, urlencode

from twilio.request_validator import RequestValidator

from tests.fakes.server import FakeHTTPServer, Faults, Request, Response

__all__ = ["FakeTwilio", "SignedCallback", "TwilioMessage", "TWILIO_ERRORS"]

_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-fA-F]{32})/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

#: Twilio error codes the fake can answer with: code -> (HTTP status, message).
TWILIO_ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21211: (400, "Invalid 'To' Phone Number"),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"),
    21602: (400, "Message body is required."),
    21603: (400, "The 'From' number is required to send a SMS"),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21612: (400, "The 'To' phone number is not currently reachable via SMS"),
    21614: (400, "'To' number is not a valid mobile number"),
}
_STATUS_TO_CODE = {429: 20429, 500: 20500, 503: 20503, 401: 20003, 404: 20404}


@dataclass(frozen=True)
class Fault:
    """How to answer instead of succeeding. `status` None with a `delay`: succeed, but late."""

    status: int | None = None
    code: int | None = None
    retry_after: float | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class TwilioMessage:
    """One request the fake received on the Messages endpoint."""

    sid: str | None  # None when the fake answered with an error
    status: int  # the HTTP status the fake answered
    account_sid: str
    request: Request  # as received; `fields` decodes its form when asked

    @property
    def fields(self) -> dict[str, str]:
        return self.request.form()

    @property
    def headers(self) -> dict[str, str]:
        return self.request.headers

    @property
    def to(self) -> str | None:
        return self.fields.get("To")

    @property
    def body(self) -> str | None:
        return self.fields.get("Body")

    @property
    def status_callback(self) -> str | None:
        return self.fields.get("StatusCallback")


@dataclass(frozen=True)
class SignedCallback:
    """A status callback as Twilio would POST it: URL, form fields, headers with the signature."""

    url: str
    form: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)

    def post(self, timeout: float = 10.0) -> int:
        """POST it to `url` (a live server); returns the HTTP status."""
        req = urllib.request.Request(self.url, data=urlencode(self.form).encode(), headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback test URL
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code


class FakeTwilio(FakeHTTPServer):
    """A fake Twilio REST API for one account."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None, **server_kwargs):
        super().__init__(**server_kwargs)
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self._authorization = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        self._requests: list[TwilioMessage] = []
        self._by_sid: dict[str, TwilioMessage] = {}
        self.faults = Faults()
        self._ids = itertools.count(1)

    # -- knobs -------------------------------------------------------------------------------

    def fault_next(self, n: int = 1, *, status: int | None = None, code: int | None = None,
                   retry_after: float | None = None, delay: float = 0.0) -> None:
        """Make the next `n` message requests fail (or, with only `delay`, answer late).

        `code` is a Twilio error code (21211, 21610, ...); `status` defaults to the code's
        status. `status` alone (429, 500, 503) uses Twilio's generic code for it.
        """
        fault = _fault(status, code, retry_after, delay)
        self.faults.add_next(fault, n)

    def fault_for(self, to: str, *, status: int | None = None, code: int | None = None,
                  retry_after: float | None = None, delay: float = 0.0, times: int | None = None) -> None:
        """Make requests to number `to` fail, every time or the next `times` times."""
        self.faults.add_for(to, _fault(status, code, retry_after, delay), times)

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        """Forget faults and everything received."""
        with self.lock:
            self.clear_faults()
            self._requests.clear()
            self._by_sid.clear()
            self.errors.clear()

    # -- what was received -------------------------------------------------------------------

    @property
    def requests(self) -> list[TwilioMessage]:
        """Every request to the Messages endpoint, answered or failed, in arrival order."""
        with self.lock:
            return list(self._requests)

    @property
    def messages(self) -> list[TwilioMessage]:
        """The messages Twilio accepted (answered 201), in arrival order."""
        with self.lock:
            return [m for m in self._requests if m.sid is not None]

    def message(self, sid: str) -> TwilioMessage:
        with self.lock:
            return self._by_sid[sid]

    # -- callbacks ---------------------------------------------------------------------------

    def status_callback_request(self, message: TwilioMessage | str, status: str = "delivered", *,
                                error_code: int | str | None = None, url: str | None = None,
                                auth_token: str | None = None) -> SignedCallback:
        """The status callback Twilio would POST for `message` (a record or its sid).

        `url` defaults to the message's StatusCallback; the signature is computed with
        `twilio.request_validator.RequestValidator` over the URL and form, as Twilio does.
        """
        record = self.message(message) if isinstance(message, str) else message
        target = url or record.status_callback
        if not target:
            raise ValueError("message has no StatusCallback and no url was given")
        form = {
            "AccountSid": record.account_sid,
            "ApiVersion": "2010-04-01",
            "MessageSid": record.sid or "",
            "SmsSid": record.sid or "",
            "MessageStatus": status,
            "SmsStatus": status,
            "To": record.to or "",
        }
        if "From" in record.fields:
            form["From"] = record.fields["From"]
        if "MessagingServiceSid" in record.fields:
            form["MessagingServiceSid"] = record.fields["MessagingServiceSid"]
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        signature = RequestValidator(auth_token or self.auth_token).compute_signature(target, form)
        headers = {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
        }
        return SignedCallback(target, form, headers)

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        match = _MESSAGES_PATH.match(request.path)
        if request.method != "POST" or match is None:
            return _error(20404)
        if request.headers.get("authorization") != self._authorization:
            return _error(20003)
        if match["sid"] != self.account_sid:
            return _error(20404)
        fields = _form_fields(request.body)
        to = fields.get("To")
        fault = self.faults.take(to)
        delay = fault.delay if fault else 0.0
        if fault is not None and fault.code is not None:
            response = _error(fault.code, fault.status, fault.retry_after, to=to)
        else:
            response = self._validate(fields)
        sid = None
        if response is None:
            sid = f"SM{next(self._ids):032x}"
            response = Response.json(201, self._resource(sid, fields))
        response.delay = delay
        record = TwilioMessage(sid, response.status, match["sid"], request)
        with self.lock:
            self._requests.append(record)
            if sid is not None:
                self._by_sid[sid] = record
        return response

    @staticmethod
    def _validate(fields: dict[str, str]) -> Response | None:
        to = fields.get("To")
        if not to:
            return _error(21604)
        if not fields.get("Body") and not fields.get("MediaUrl") and not fields.get("ContentSid"):
            return _error(21602)
        if not fields.get("From") and not fields.get("MessagingServiceSid"):
            return _error(21603)
        if not _E164.match(to):
            return _error(21211, to=to)
        return None

    def _resource(self, sid: str, fields: dict[str, str]) -> dict:
        now = formatdate(usegmt=True)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"
        body = fields.get("Body", "")
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": fields.get("From"),
            "messaging_service_sid": fields.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": str(max(1, -(-len(body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if fields.get("MessagingServiceSid") and not fields.get("From") else "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": fields.get("To"),
            "uri": uri,
        }


_HOT_FIELDS = ("To", "From", "Body", "MessagingServiceSid", "MediaUrl", "ContentSid")


def _form_fields(body: bytes) -> dict[str, str]:
    """The form fields the fake answers from, decoded; the rest (StatusCallback: a URL full of
    escapes) is decoded only when a test reads `TwilioMessage.fields`. Keeps the fake cheap."""
    raw = dict(pair.partition("=")[::2] for pair in body.decode("utf-8").split("&") if pair)
    return {name: unquote_plus(raw[name]) for name in _HOT_FIELDS if name in raw}


def _fault(status: int | None, code: int | None, retry_after: float | None, delay: float) -> Fault:
    if code is None and status is not None:
        code = _STATUS_TO_CODE.get(status, 20500 if status >= 500 else 21211)
    if code is not None and code not in TWILIO_ERRORS and status is None:
        raise ValueError(f"unknown Twilio error code {code}; pass status= too")
    return Fault(status, code, retry_after, delay)


def _error(code: int, status: int | None = None, retry_after: float | None = None, to: str | None = None) -> Response:
    default_status, message = TWILIO_ERRORS.get(code, (status or 400, "Error"))
    status = status or default_status
    if code == 21211 and to:
        message = f"The 'To' number {to} is not a valid phone number."
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    payload = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
    return Response.json(status, payload, headers)
