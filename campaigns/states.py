"""The one transition table for delivery statuses: nothing ever moves backwards.

Every writer (send jobs, the sweeper, provider callbacks) asks `can_move(old, new)`; SQL
writers use `allowed_from(new)` in their WHERE clause so the check and the write are atomic.
"""

from __future__ import annotations

from campaigns.models import DeliveryStatus as S

# Rank along the happy path; a move must go up. Final statuses never move again.
RANK = {S.PENDING: 0, S.SENDING: 1, S.SENT: 2, S.DELIVERED: 3, S.FAILED: 3, S.SUPPRESSED: 3, S.CONTROL: 3}
FINAL = frozenset({S.DELIVERED, S.FAILED, S.SUPPRESSED, S.CONTROL})

# Special moves that go "down": a send that failed transiently goes back to pending for a retry,
# and the sweeper returns a send whose worker died (no receipt) to pending.
RETRY = {(S.SENDING, S.PENDING)}


def can_move(old: str, new: str) -> bool:
    old, new = S(old), S(new)
    if old in FINAL:
        return False
    if (old, new) in RETRY:
        return True
    return RANK[new] > RANK[old]


def allowed_from(new: str) -> list[str]:
    """Statuses a delivery may be in for a move to `new` (for `WHERE status IN (...)`)."""
    return [s.value for s in S if can_move(s, new)]


# Twilio's MessageStatus values mapped onto ours, in one literal dict (GOV.UK Notify's habit).
TWILIO_STATUS = {
    "accepted": S.SENT,
    "scheduled": S.SENT,
    "queued": S.SENT,
    "sending": S.SENT,
    "sent": S.SENT,
    "delivered": S.DELIVERED,
    "read": S.DELIVERED,
    "undelivered": S.FAILED,
    "failed": S.FAILED,
    "canceled": S.FAILED,
}
