"""The channel interface: what the scheduler hands a provider adapter and what it gets back.

A channel turns one `OutboundMessage` into one provider API call. It never sees ORM rows and
never decides who gets what; it sends, and it says how the send went: a `SendResult`, a
`TransientChannelError` (try again later, honouring `retry_after`) or a
`PermanentChannelError` (do not retry; maybe deactivate the address); see `channels.errors`.
"""

from __future__ import annotations

import abc
import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from channels.errors import (
    ChannelConfigError,
    ChannelError,
    PermanentChannelError,
    TransientChannelError,
)

_T = TypeVar("_T")
_R = TypeVar("_R")

__all__ = [
    "Channel",
    "ChannelConfigError",
    "ChannelError",
    "OutboundMessage",
    "PermanentChannelError",
    "SendResult",
    "TransientChannelError",
    "settings_kwargs",
]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One rendered message for one address.

    Attributes:
        delivery_id: Our delivery row's id; carried to the provider (push `data.delivery_id`,
            SMS status-callback URL) so receipts and interactions find their way back.
        to: An E.164 phone number (sms) or a device push token (push).
        content: Rendered content: sms `{"body"}`; push `{"title", "body", "data"}`.
        status_callback: Where the provider should report delivery status, if it does.
    """

    delivery_id: int
    to: str
    content: Mapping[str, Any]
    status_callback: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """The provider accepted the message.

    Attributes:
        provider_id: The provider's id for it (Twilio `SM...` sid, FCM message name).
        status: The provider's status on acceptance, e.g. "queued", "accepted", "sent".
    """

    provider_id: str
    status: str


class Channel(abc.ABC):
    """A provider adapter.

    Subclasses implement `send`; `send_batch` sends concurrently on a thread pool of
    `max_concurrency` threads (network-bound sends release the GIL), and may be overridden
    with a provider's own batch call.
    """

    name: ClassVar[str]
    #: Concurrent sends in `send_batch`; also the size of the connection pool.
    max_concurrency: int = 16

    def __init__(self) -> None:
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_pid = 0
        self._executor_lock = threading.Lock()

    @abc.abstractmethod
    def send(self, message: OutboundMessage) -> SendResult:
        """Send one message.

        Raises:
            TransientChannelError: retry later.
            PermanentChannelError: do not retry.
        """

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult | ChannelError]:
        """Send many messages concurrently.

        Returns one entry per message, in input order: its `SendResult`, or the
        `ChannelError` it failed with. One failure does not stop the others; only a bug (an
        exception that is not a `ChannelError`) propagates.
        """
        if not messages:
            return []
        return self._map(self._send_captured, messages)

    def close(self) -> None:
        """Release threads and connections. The channel must not be used afterwards."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _send_captured(self, message: OutboundMessage) -> SendResult | ChannelError:
        try:
            return self.send(message)
        except ChannelError as exc:
            return exc

    def _map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """`[fn(item) for item in items]`, run on up to `max_concurrency` of the channel's threads.

        Each thread takes the next item as it finishes one, so a batch costs one pool task per
        thread rather than one per item (a `Future` per message was a tenth of a push send's
        CPU). An exception in `fn` propagates once every thread has stopped.
        """
        if len(items) <= 1:
            return [fn(item) for item in items]
        results: list[Any] = [None] * len(items)
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(items)):
            todo.put(i)
        failed = threading.Event()

        def drain() -> None:
            while not failed.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[i] = fn(items[i])
                except BaseException:
                    failed.set()  # the other threads stop taking items
                    raise

        pool = self._pool()
        tasks = [pool.submit(drain) for _ in range(min(self.max_concurrency, len(items)))]
        for task in tasks:
            exc = task.exception()
            if exc is not None:
                for other in tasks:
                    other.exception()  # wait for the rest before propagating
                raise exc
        return results

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None or self._executor_pid != os.getpid():
            with self._executor_lock:
                # an executor inherited through fork has no threads in the child: make a new one
                if self._executor is None or self._executor_pid != os.getpid():
                    self._executor_pid = os.getpid()
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.max_concurrency, thread_name_prefix=f"channel-{self.name}"
                    )
        return self._executor


def settings_kwargs(settings: Mapping[str, Any], required: Sequence[str], optional: Sequence[str]) -> dict[str, Any]:
    """Constructor keyword arguments from a plain settings mapping.

    Keys not named are ignored (one settings mapping may carry several providers'); a
    required key that is missing or empty raises `ChannelConfigError`; optional keys set to
    None are left to the constructor's defaults.
    """
    missing = [k for k in required if not settings.get(k)]
    if missing:
        raise ChannelConfigError(f"missing channel settings: {', '.join(missing)}", {"missing": missing})
    kwargs = {k: settings[k] for k in required}
    kwargs.update({k: settings[k] for k in optional if settings.get(k) is not None})
    return kwargs
