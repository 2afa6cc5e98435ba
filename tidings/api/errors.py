"""One error handler for the whole app: every error leaves as {"error": {code, message, details}}."""

from __future__ import annotations

import logging

from flask import jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from tidings.errors import RateLimitedError, TidingsError
from tidings.limits import retry_after

log = logging.getLogger(__name__)

HTTP_CODES = {400: "malformed", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
              422: "invalid", 429: "rate_limited"}


BATCH_KEYS = {"users", "events"}


def error_response(status: int, code: str, message: str, details: dict | None = None):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def first_problem(messages, path=()) -> tuple[list, str]:
    """The first (path, message) in a marshmallow error tree, for a one-line message."""
    if isinstance(messages, dict):
        for key in sorted(messages, key=lambda k: (not isinstance(k, int), str(k))):
            return first_problem(messages[key], (*path, key))
    if isinstance(messages, list) and messages:
        if all(isinstance(m, str) for m in messages):
            return list(path), messages[0]
        return first_problem(messages[0], path)
    return list(path), str(messages)


def validation_details(messages) -> tuple[str, dict]:
    path, message = first_problem(messages)
    details: dict = {"errors": messages}
    # A batch item: {"users": {3: {"timezone": [...]}}} -> index 3, field "timezone".
    if len(path) >= 3 and path[0] in BATCH_KEYS and isinstance(path[1], int):
        details["index"] = path[1]
        path = path[2:]
    named = [p for p in path if p != "_schema"]
    field = ".".join(str(p) for p in named)
    if field:
        details["field"] = field
    where = (f"item {details['index']}: " if "index" in details else "") + (f"{field}: " if field else "")
    return where + message, details


def init_app(app) -> None:
    @app.errorhandler(TidingsError)
    def tidings_error(exc: TidingsError):
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if isinstance(exc, RateLimitedError):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(ValidationError)
    def validation_error(exc: ValidationError):
        message, details = validation_details(exc.messages)
        return error_response(422, "invalid", message, details)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return error_response(413, "too_large", "the request body is too large",
                              {"max_bytes": request.max_content_length})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not (request.path.startswith("/api/") or request.path.startswith("/webhooks/")):
            return exc
        status = exc.code or 500
        response = error_response(status, HTTP_CODES.get(status, "error"), exc.description or exc.name)
        if status == 429:  # flask-limiter refused it
            response.headers["Retry-After"] = str(retry_after())
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "something went wrong on our side; nothing was changed")
