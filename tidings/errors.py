"""Error classes raised by services; the API maps each to the contract's JSON error shape."""

from __future__ import annotations

from typing import Any


class TidingsError(Exception):
    """Base of every error a service raises on purpose."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class InvalidError(TidingsError):
    """The request is well-formed but its content is invalid (422)."""

    status = 422
    code = "invalid"


class NotFoundError(TidingsError):
    status = 404
    code = "not_found"


class ConflictError(TidingsError):
    """Conflicting state: a name taken, a wrong campaign state (409)."""

    status = 409
    code = "conflict"


class ForbiddenError(TidingsError):
    status = 403
    code = "forbidden"


class RateLimitedError(TidingsError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, details: dict[str, Any] | None = None):
        super().__init__(message, details)
        self.retry_after = retry_after
