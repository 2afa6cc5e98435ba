"""Twilio status callbacks' fast path: verify and apply a receipt in one statement, in front of Flask.

Twilio sends several status callbacks per SMS, so this is the hottest request Tidings serves.
`StatusFastPath` wraps the app's WSGI callable and takes only the common case: a POST to
/webhooks/twilio/status?d={id} whose signature verifies against a token this process already
trusts. A status that moves the delivery costs one autocommit UPDATE
(`receipts.apply_signed_twilio_status`) on a connection the process keeps: no pool checkout and
its pre-ping, no BEGIN/COMMIT round trips, no ORM session, no delivery/app lookup, no Flask
request context; the receipt is committed (durable) before the 204 goes out. One that moves
nothing (a duplicate, Twilio's "sent" for a delivery the send job already marked sent, a late
or unknown status, another message's sid) costs one more primary-key read, which confirms the
delivery belongs to an app using that token, and is answered 204 as the view would.

Everything else goes on to the Flask view (`webhooks.twilio.twilio_status`) unchanged, which is
the authority: forged or unsigned requests (403), unknown deliveries (404), malformed input
(400), 21610 failures (which also opt the number out), tokens not seen yet, non-PostgreSQL
databases, other query forms, and any error here. Handing over is always safe because the fast
path's only write is that one guarded statement: had it applied, the view finds the delivery
already moved and changes nothing.

Tokens are guesses, never authority: the signature is checked with the env token and app tokens
the view has verified before, and the statements themselves require the delivery's app to use
the token that verified (read in the same statement), so a rotated or changed token takes
effect at once.
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import re
import threading
from urllib.parse import parse_qsl, urlparse

from twilio.request_validator import add_port, remove_port

from tidings import db
from tidings.db import utcnow
from webhooks import receipts

log = logging.getLogger(__name__)

STATUS_PATH = "/webhooks/twilio/status"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_TOKENS = 32  # distinct app auth tokens kept as guesses; past that, the oldest is forgotten
MAX_IDLE_CONNECTIONS = 8  # per process; a sync gunicorn worker uses one
MAX_FIELDS = 200  # Twilio sends ~15; more is not a status callback we take here

# The query string exactly as Tidings writes it into StatusCallback; any other form goes to Flask.
_QUERY = re.compile(r"d=([0-9]{1,19})")


class Tokens:
    """Auth tokens worth trying, the env token first, then app tokens the view has verified."""

    def __init__(self) -> None:
        self._recent: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def remember(self, token: str | None) -> None:
        if not token or token in self._recent:
            return
        with self._lock:
            self._recent[token] = token.encode("utf-8")
            while len(self._recent) > MAX_TOKENS:
                del self._recent[next(iter(self._recent))]

    def candidates(self, env_token: str | None) -> list[tuple[str, bytes]]:
        found = [(env_token, env_token.encode("utf-8"))] if env_token else []
        with self._lock:
            found += [(token, key) for token, key in self._recent.items() if token != env_token]
        return found

    def clear(self) -> None:
        with self._lock:
            self._recent.clear()


tokens = Tokens()


_connections = db.KeptConnections(MAX_IDLE_CONNECTIONS)

_base_urls: dict[str, tuple[str, ...]] = {}


def _url_forms(public_base_url: str) -> tuple[str, ...]:
    """PUBLIC_BASE_URL as RequestValidator tries it: without, then with, its port."""
    forms = _base_urls.get(public_base_url)
    if forms is None:
        parsed = urlparse(public_base_url)
        forms = _base_urls[public_base_url] = tuple(dict.fromkeys((remove_port(parsed), add_port(parsed))))
    return forms


def signing_token(public_base_url: str, path: str, query: str, pairs: list[tuple[str, str]],
                  signature: str, candidates: list[tuple[str, bytes]]) -> str | None:
    """The candidate token that made `signature` for this URL and form, or None (which proves
    nothing: the caller hands over to RequestValidator).

    Twilio's algorithm as `RequestValidator.validate` runs it: base64 of HMAC-SHA1 over the URL
    followed by each form field name in sorted order, each followed by its distinct values in
    sorted order; the URL is tried without and with the default port. RequestValidator re-parses
    the whole URL and hashes both forms on every call; here the base URL's forms are worked out
    once and a good signature usually costs one HMAC.
    """
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        values.setdefault(name, set()).add(value)
    rest = path + ("?" + query if query else "") + "".join(
        name + value for name in sorted(values) for value in sorted(values[name]))
    expected = signature.encode("utf-8", "replace")
    for token, key in candidates:
        for base in _url_forms(public_base_url):
            mac = hmac.digest(key, (base + rest).encode("utf-8"), "sha1")
            if hmac.compare_digest(base64.b64encode(mac), expected):
                return token
    return None


class StatusFastPath:
    """WSGI middleware: applies the common status callback itself, passes everything on."""

    def __init__(self, app, wsgi_app):
        self.app = app  # the Flask app, for its settings
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == STATUS_PATH and environ.get("REQUEST_METHOD") == "POST":
            try:
                applied = self.apply(environ)
            except Exception:  # the view decides; see the module docstring
                log.warning("status callback fast path failed; the view takes it", exc_info=True)
                applied = False
            if applied:
                start_response("204 NO CONTENT", [])
                return []
        return self.wsgi_app(environ, start_response)

    def apply(self, environ) -> bool:
        """True when the callback was verified and taken (applied, or a no-op the view would also
        answer 204 to); False: the view decides."""
        match = _QUERY.fullmatch(environ.get("QUERY_STRING", ""))
        signature = environ.get("HTTP_X_TWILIO_SIGNATURE")
        engine = db.engine
        if (match is None or not signature or engine is None or engine.dialect.name != "postgresql"
                or environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() != FORM_TYPE):
            return False
        delivery_id = int(match.group(1))
        settings = self.app.config["TIDINGS"]
        length = environ.get("CONTENT_LENGTH", "")
        if not (0 < delivery_id <= receipts.MAX_ID) or not length.isdigit() or int(length) > settings.max_body_bytes:
            return False
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(body)  # for the view, if it comes to that
        if len(body) != int(length):
            return False
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                              errors="strict", max_num_fields=MAX_FIELDS)
        except ValueError:  # not UTF-8 or too many fields: the view (werkzeug) decides
            return False
        form: dict[str, str] = {}
        for name, value in pairs:
            form.setdefault(name, value)  # the first value, as the view's MultiDict.get
        sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
        if not sid:
            return False
        token = signing_token(settings.public_base_url, STATUS_PATH, match.group(0), pairs, signature,
                              tokens.candidates(settings.twilio_auth_token))
        if token is None:
            return False
        status = form.get("MessageStatus") or form.get("SmsStatus") or ""
        held = _connections.take(engine)
        try:
            receipt = receipts.apply_signed_twilio_status(held[1], delivery_id, sid, status, form.get("ErrorCode"),
                                                          token, settings.twilio_auth_token, utcnow())
        except BaseException:
            # A dead connection (server restart, network) or worse: whether or not the UPDATE
            # committed, the view re-reads and applies it or finds it applied.
            _connections.discard(held)
            raise
        _connections.give_back(held)
        return receipt is not receipts.SignedReceipt.HAND_OVER
