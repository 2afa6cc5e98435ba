"""FakeFCM: a local stand-in for Google's OAuth token endpoint and the FCM v1 send API.

The real firebase-admin library is pointed at it through a service-account JSON written by
`FakeFCM.write_service_account` (its `token_uri` is the fake's `/token`; its RSA key is
generated here and registered with the fake, so the signed JWT that google-auth posts is
verified). `/v1/projects/{project}/messages:send` checks the Bearer token the fake issued,
validates the message like FCM, records it and answers `{"name": "projects/p/messages/<id>"}`;
or, when told to, answers with FCM's error bodies (UNREGISTERED, INVALID_ARGUMENT, ...), 429
with Retry-After, 5xx, or late.

    with FakeFCM() as fake:
        path = fake.write_service_account(tmp_path / "sa.json")
        fake.fault_for("dead-token", code="UNREGISTERED")
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as google_auth_exceptions
from google.auth import jwt

from tests.fakes.server import FakeHTTPServer, Faults, Request, Response

__all__ = ["FakeFCM", "FCMMessage", "FCM_ERRORS", "service_account_info"]

_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"

#: FCM error codes the fake can answer with: errorCode -> (HTTP status, canonical status, message).
FCM_ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}
_STATUS_TO_CODE = {429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE", 404: "UNREGISTERED", 400: "INVALID_ARGUMENT"}


@dataclass(frozen=True)
class Fault:
    """How to answer instead of succeeding. `code` None with a `delay`: succeed, but late."""

    code: str | None = None
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None


@dataclass(frozen=True)
class FCMMessage:
    """One request the fake received on messages:send."""

    name: str | None  # None when the fake answered with an error
    status: int
    project: str
    message: dict
    validate_only: bool
    headers: dict[str, str]

    @property
    def token(self) -> str | None:
        """The device addressed: registration token or Firebase installation ID (`fid`)."""
        return self.message.get("token") or self.message.get("fid")

    @property
    def data(self) -> dict:
        return self.message.get("data") or {}

    @property
    def notification(self) -> dict:
        return self.message.get("notification") or {}


@functools.lru_cache(maxsize=1)
def _rsa_key() -> tuple[str, str]:
    """One RSA key per process (generation costs ~50 ms): (private PKCS8 PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


def service_account_info(token_uri: str, project_id: str = "tidings-test") -> tuple[dict, str]:
    """A service-account JSON object whose `token_uri` is `token_uri`, and its public key PEM."""
    private_pem, public_pem = _rsa_key()
    key_id = secrets.token_hex(20)
    email = f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": private_pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    return info, public_pem


class FakeFCM(FakeHTTPServer):
    """A fake OAuth token endpoint plus FCM v1 `messages:send`."""

    def __init__(self, token_ttl: int = 3600, **server_kwargs):
        super().__init__(**server_kwargs)
        self.token_ttl = token_ttl
        self._keys: dict[str, tuple[str, str]] = {}  # private_key_id -> (public PEM, project)
        self._tokens: dict[str, tuple[float, str]] = {}  # access token -> (expiry, project)
        self._requests: list[FCMMessage] = []
        self._token_requests = 0
        self.faults = Faults()
        self._ids = itertools.count(1)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def write_service_account(self, path: str | os.PathLike, project_id: str = "tidings-test") -> Path:
        """Write a service-account JSON pointing at this fake and trust its key; returns the path."""
        info, public_pem = service_account_info(self.token_uri, project_id)
        with self.lock:
            self._keys[info["private_key_id"]] = (public_pem, project_id)
        path = Path(path)
        path.write_text(json.dumps(info, indent=2))
        return path

    # -- knobs -------------------------------------------------------------------------------

    def fault_next(self, n: int = 1, *, code: str | None = None, status: int | None = None,
                   retry_after: float | None = None, delay: float = 0.0, message: str | None = None) -> None:
        """Make the next `n` send requests fail (or, with only `delay`, answer late).

        `code` is an FCM errorCode (UNREGISTERED, INVALID_ARGUMENT, SENDER_ID_MISMATCH,
        QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL, THIRD_PARTY_AUTH_ERROR); `status` alone picks the
        usual code for it (429 QUOTA_EXCEEDED, 500 INTERNAL, 503 UNAVAILABLE).
        """
        fault = _fault(code, status, retry_after, delay, message)
        self.faults.add_next(fault, n)

    def fault_for(self, token: str, *, code: str | None = None, status: int | None = None,
                  retry_after: float | None = None, delay: float = 0.0, message: str | None = None,
                  times: int | None = None) -> None:
        """Make sends to device `token` (or fid) fail, every time or the next `times` times."""
        self.faults.add_for(token, _fault(code, status, retry_after, delay, message), times)

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        with self.lock:
            self.clear_faults()
            self._requests.clear()
            self.errors.clear()

    # -- what was received -------------------------------------------------------------------

    @property
    def requests(self) -> list[FCMMessage]:
        """Every send request, answered or failed, in arrival order."""
        with self.lock:
            return list(self._requests)

    @property
    def messages(self) -> list[FCMMessage]:
        """The messages FCM accepted (answered 200), in arrival order."""
        with self.lock:
            return [m for m in self._requests if m.name is not None]

    @property
    def token_requests(self) -> int:
        """How many access tokens the fake issued."""
        with self.lock:
            return self._token_requests

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/token":
            return self._token(request)
        match = _SEND_PATH.match(request.path)
        if request.method == "POST" and match is not None:
            return self._send(request, match["project"])
        return _google_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found.")

    def _token(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode()))
        if form.get("grant_type") != _JWT_GRANT or not form.get("assertion"):
            return Response.json(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        try:
            header = json.loads(_b64decode(form["assertion"].split(".")[0]))
            with self.lock:
                public_pem, project = self._keys[header.get("kid")]
            # google-auth always addresses the assertion to Google's endpoint, whatever token_uri is
            claims = jwt.decode(form["assertion"], certs=public_pem, audience=[_GOOGLE_TOKEN_URI, self.token_uri])
        except (KeyError, ValueError, google_auth_exceptions.GoogleAuthError) as exc:
            return Response.json(400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"})
        if "firebase.messaging" not in claims.get("scope", "") and "cloud-platform" not in claims.get("scope", ""):
            return Response.json(400, {"error": "invalid_scope", "error_description": "no FCM scope"})
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self.lock:
            self._tokens[token] = (time.time() + self.token_ttl, project)
            self._token_requests += 1
        return Response.json(200, {"access_token": token, "expires_in": self.token_ttl, "token_type": "Bearer"})

    def _send(self, request: Request, project: str) -> Response:
        auth = request.headers.get("authorization", "")
        with self.lock:
            issued = self._tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if issued is None or issued[0] < time.time():
            return _google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if issued[1] != project:
            return _fcm_error("SENDER_ID_MISMATCH", None, None)
        try:
            body = request.json()
            message = body["message"]
            if not isinstance(message, dict):
                raise TypeError("message must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return _google_error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        fault = self.faults.take(message.get("token") or message.get("fid"))
        if fault is not None and fault.code is not None:
            response = _fcm_error(fault.code, fault.status, fault.retry_after, fault.message)
        else:
            response = _validate(message)
        name = None
        if response is None:
            name = f"projects/{project}/messages/0:{next(self._ids)}%{secrets.token_hex(8)}"
            response = Response.json(200, {"name": name})
        response.delay = fault.delay if fault else 0.0
        record = FCMMessage(name, response.status, project, message, bool(body.get("validate_only")), dict(request.headers))
        with self.lock:
            self._requests.append(record)
        return response


def _validate(message: dict) -> Response | None:
    targets = [k for k in ("token", "fid", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return _google_error(400, "INVALID_ARGUMENT", "Exactly one of token, fid, topic or condition must be set.")
    data = message.get("data") or {}
    if not isinstance(data, dict):
        return _google_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data'")
    for i, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            return _google_error(400, "INVALID_ARGUMENT", f"Invalid value at 'message.data[{i}].value' ({key}), TYPE_STRING")
    return None


def _fault(code: str | None, status: int | None, retry_after: float | None, delay: float, message: str | None) -> Fault:
    if code is None and status is not None:
        code = _STATUS_TO_CODE.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    if code is not None and code not in FCM_ERRORS and status is None:
        raise ValueError(f"unknown FCM error code {code!r}; pass status= too")
    return Fault(code, status, retry_after, delay, message)


def _fcm_error(code: str, status: int | None, retry_after: float | None, message: str | None = None) -> Response:
    default_status, canonical, default_message = FCM_ERRORS.get(code, (status or 400, "UNKNOWN", "Error"))
    details = [{"@type": _FCM_ERROR_TYPE, "errorCode": code}]
    if code == "INVALID_ARGUMENT" and message is None:
        # what FCM says about a malformed registration token
        details.append({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
        })
    return _google_error(status or default_status, canonical, message or default_message, details, retry_after)


def _google_error(status: int, canonical: str, message: str, details: list | None = None,
                  retry_after: float | None = None) -> Response:
    error: dict = {"code": status, "message": message, "status": canonical}
    if details:
        error["details"] = details
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return Response.json(status, {"error": error}, headers)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
