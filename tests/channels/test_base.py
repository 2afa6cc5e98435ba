"""Channel.send_batch on the base class: order, failures in place, bounded threads, bugs surface."""

from __future__ import annotations

import threading
import time

import pytest

from channels.base import Channel, OutboundMessage, SendResult
from channels.errors import PermanentChannelError, TransientChannelError


class Recording(Channel):
    """Sends nowhere: answers by delivery id, remembering which threads sent and how many at once."""

    name = "recording"

    def __init__(self, max_concurrency: int = 4, bug_at: int | None = None):
        super().__init__()
        self.max_concurrency = max_concurrency
        self.bug_at = bug_at
        self.threads: set[int] = set()
        self.sent: list[int] = []
        self._lock = threading.Lock()
        self._busy = 0
        self.most_at_once = 0

    def send(self, message: OutboundMessage) -> SendResult:
        with self._lock:
            self.threads.add(threading.get_ident())
            self._busy += 1
            self.most_at_once = max(self.most_at_once, self._busy)
        try:
            time.sleep(0.001)  # a network wait: lets the other threads in
            if message.delivery_id == self.bug_at:
                raise ZeroDivisionError("a bug, not a provider answer")
            if message.delivery_id % 10 == 3:
                raise PermanentChannelError("invalid_number", True)
            if message.delivery_id % 10 == 7:
                raise TransientChannelError(5.0, code="rate_limited")
            with self._lock:
                self.sent.append(message.delivery_id)
            return SendResult(f"id-{message.delivery_id}", "sent")
        finally:
            with self._lock:
                self._busy -= 1


def _messages(n: int) -> list[OutboundMessage]:
    return [OutboundMessage(i, f"+1415555{i:04d}", {"body": "hi"}) for i in range(n)]


def test_results_come_back_in_input_order_with_failures_in_place():
    with Recording() as channel:
        results = channel.send_batch(_messages(200))

    assert len(results) == 200
    for i, result in enumerate(results):
        if i % 10 == 3:
            assert isinstance(result, PermanentChannelError) and result.deactivate_token
        elif i % 10 == 7:
            assert isinstance(result, TransientChannelError) and result.retry_after == 5.0
        else:
            assert result == SendResult(f"id-{i}", "sent")
    assert sorted(channel.sent) == [i for i in range(200) if i % 10 not in (3, 7)]


def test_sends_run_on_at_most_max_concurrency_threads_kept_across_batches():
    with Recording(max_concurrency=4) as channel:
        channel.send_batch(_messages(100))
        channel.send_batch(_messages(100))

        assert 1 < channel.most_at_once <= 4
        assert len(channel.threads) <= 4


def test_a_bug_in_send_propagates_and_stops_the_batch():
    with Recording(max_concurrency=2, bug_at=5) as channel:
        with pytest.raises(ZeroDivisionError):
            channel.send_batch(_messages(400))

        assert len(channel.sent) < 300  # the other threads stopped taking messages
        assert channel.send_batch(_messages(3))[0] == SendResult("id-0", "sent")  # and the channel still works


def test_empty_and_single_batches():
    with Recording() as channel:
        assert channel.send_batch([]) == []
        assert channel.send_batch(_messages(1)) == [SendResult("id-0", "sent")]
