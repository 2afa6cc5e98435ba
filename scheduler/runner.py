"""The scheduler loop: one `tick` starts due work and sweeps; safe with several schedulers."""

from __future__ import annotations

import logging
import threading
import time

from scheduler import sweeper
from tidings.db import session_scope

log = logging.getLogger(__name__)


def tick() -> None:
    """One pass: sweep lost work. (Campaign runs join here with the delivery issue.)"""
    with session_scope() as session:
        sweeper.requeue_stuck_imports(session)


def start_embedded_scheduler(interval: float = 5.0) -> threading.Thread:
    def loop():
        while True:
            try:
                tick()
            except Exception:  # the loop must survive a bad pass
                log.exception("scheduler pass failed")
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="tidings-embedded-scheduler", daemon=True)
    thread.start()
    return thread
