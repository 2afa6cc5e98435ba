"""How a send can fail: the errors every channel raises, whatever the provider said.

`TransientChannelError`: try again later (network, timeout, 5xx, 429), after `retry_after`
seconds if the provider said. `PermanentChannelError`: never retry this message (4xx); with
`deactivate_token`, stop using the address. `ChannelConfigError`: the channel cannot be built
from the settings given (campaigns refuse to launch with its message).
"""

from __future__ import annotations

from typing import Any

from tidings.errors import TidingsError

__all__ = [
    "ChannelConfigError",
    "ChannelError",
    "PermanentChannelError",
    "TransientChannelError",
    "parse_retry_after",
]


class ChannelError(TidingsError):
    """A send did not go through. `code` is ours (see each channel's error table)."""

    status = 502
    code = "channel_error"

    def __init__(self, message: str, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message, details, code)

    def __reduce__(self):
        # Rebuild from state, not from `args`: the subclasses take keyword-only arguments, and
        # results may cross process boundaries (RQ job results, bench workers).
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


class TransientChannelError(ChannelError):
    """Retry later: network error, timeout, provider 5xx, 429 (rate limited).

    Attributes:
        retry_after: Seconds the provider asked us to wait (`Retry-After`), if it said.
        code: "network", "timeout", "rate_limited", "provider_unavailable", "provider_error".
    """

    code = "transient"

    def __init__(self, retry_after: float | None = None, *, code: str | None = None,
                 message: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message or f"transient provider error ({code or self.code})", code, details)
        self.retry_after = retry_after


class PermanentChannelError(ChannelError):
    """Do not retry this message: the provider refused it.

    Attributes:
        code: Ours, e.g. "invalid_number", "unsubscribed", "unregistered", "invalid_argument".
        deactivate_token: The address itself is dead (unregistered push token, a number that is
            invalid, not a mobile, or unsubscribed at the carrier): do not send to it again
            until the user gives a new one (or, for SMS, opts back in).
        provider_code: The provider's own code ("21211", "UNREGISTERED"), for logs and reports.
    """

    code = "permanent"

    def __init__(self, code: str, deactivate_token: bool = False, *, provider_code: str | None = None,
                 message: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message or f"provider refused the message ({code})", code, details)
        self.deactivate_token = deactivate_token
        self.provider_code = provider_code


class ChannelConfigError(TidingsError):
    """The channel's settings are missing or invalid (raised when building a channel)."""

    status = 422
    code = "channel_not_configured"


def _rebuild(cls: type[ChannelError], message: str, state: dict[str, Any]) -> ChannelError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds; None when absent or not a number of seconds.

    HTTP also allows an HTTP-date; the providers we use send seconds, and a date would make us
    trust two clocks, so it falls back to our own backoff.
    """
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(seconds, 0.0)
