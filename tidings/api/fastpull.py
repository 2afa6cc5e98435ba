"""In-app and hook pulls' fast path: a read-only pull answered in front of Flask.

Apps pull on every screen, so these two GETs are the API's hottest requests. `PullFastPath` wraps
the app's WSGI callable and answers only the common case: GET /api/v1/users/{id}/inapp or /hooks
with a key this process has already authenticated through Flask, for an app whose snapshot of
running campaigns this process holds, when the pull writes nothing (no first-pull delivery to
record, no triggered send to settle). That case costs one Redis call (the client budget, counted
where flask-limiter counts it) and one autocommit statement on a kept connection that checks the
key and the app's config version and reads the person (`campaigns.pulls.read_only_pull`): no
Flask request context, no ORM session, no pool checkout pre-ping, no BEGIN/COMMIT.

Everything else goes on to the Flask views, the authority: unknown or rotated keys (401),
first pulls, changed configs, refused budgets (429), non-PostgreSQL databases, any error here.
Handing over is always safe: the fast path writes nothing, and a request it counted against the
budget is marked so flask-limiter does not count it twice.
"""

from __future__ import annotations

import logging
import re
import threading

import orjson

from campaigns import pulls
from tidings import db, limits
from tidings.models import KeyKind, bearer_digest

log = logging.getLogger(__name__)

_PATH = re.compile(r"/api/v1/users/([^/]+)/(inapp|hooks)")
MAX_KEYS = 64  # distinct keys remembered per process; past that, the oldest is forgotten


class Keys:
    """Key digests Flask has authenticated, with their app and kind: guesses the fast path's
    statement confirms (a rotated key stops working at once)."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, KeyKind]] = {}
        self._lock = threading.Lock()

    def remember(self, digest: str, app_id: int, kind: KeyKind) -> None:
        if self._known.get(digest) == (app_id, kind):
            return
        with self._lock:
            self._known[digest] = (app_id, kind)
            while len(self._known) > MAX_KEYS:
                del self._known[next(iter(self._known))]

    def get(self, digest: str) -> tuple[int, KeyKind] | None:
        return self._known.get(digest)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()


keys = Keys()
_connections = db.KeptConnections()


class PullFastPath:
    """WSGI middleware: answers read-only pulls itself, passes everything else on."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
            if match is not None:
                try:  # WSGI paths are decoded bytes as latin-1; werkzeug reads them as UTF-8
                    body = self.answer(environ, match.group(1).encode("latin-1").decode(), match.group(2))
                except Exception:  # the view decides; see the module docstring
                    log.warning("pull fast path failed; the view takes it", exc_info=True)
                    body = None
                if body is not None:
                    start_response("200 OK", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(body)))])
                    return [body]
        return self.wsgi_app(environ, start_response)

    def answer(self, environ, external_id: str, kind: str) -> bytes | None:
        digest = bearer_digest(environ.get("HTTP_AUTHORIZATION", ""))
        engine = db.engine
        if digest is None or engine is None or engine.dialect.name != "postgresql":
            return None
        known = keys.get(digest)
        if known is None:
            return None
        app_id, key_kind = known
        if not limits.hit_client(app_id, key_kind):
            return None  # the view refuses it with a 429 and its Retry-After
        environ[limits.COUNTED] = True
        held = _connections.take(engine)
        try:
            answer = pulls.read_only_pull(held[1], kind, app_id, digest, external_id)
        except BaseException:
            _connections.discard(held)
            raise
        _connections.give_back(held)
        if answer is None:
            return None
        try:
            return orjson.dumps(answer)
        except TypeError:  # an integer past 64 bits in a hook's value: the view answers it
            return None
