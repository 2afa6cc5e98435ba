"""Deterministic control/variant assignment: the one answer every path gives for a user.

The scheduler's fan-out, in-app pulls, previews and reports all ask this module which arm of a
campaign target a user is in, so the answer must be the same on every path, in every process
and on every Python version. It is a pure function of (campaign id, user key, target split).

How a draw is made
------------------
One 64-byte BLAKE2b digest is taken over the canonical bytes
``b"tidings/assign/v1" US block US campaign_id US user_key`` (US is the 0x1f separator,
``campaign_id`` and ``block`` are decimal text, the user key is its UTF-8 text; an int key is
its decimal text, so ``42`` and ``"42"`` are the same user). Pass the user's external id on
every path. The digest is read as eight big-endian unsigned 64-bit lanes: lane 0 is the
control draw and lane ``1 + i`` is variant ``i``'s draw (block 1, 2, ... hold the lanes of
variants beyond the seventh). Lanes of one digest are independent draws, so:

* Control: ``lane0 < control_percent / 100 * 2**64``, an exact integer threshold. Raising the
  control percentage only moves treated users into control and never moves a treated user to
  another variant, because the variant draws do not depend on it.
* Variant: weighted rendezvous hashing (an exponential race). Variant ``i`` scores
  ``ln(u_i) / w_i`` from its own uniform ``u_i`` in (0, 1) and the highest score wins, which
  happens with probability exactly ``w_i / sum(w)``. A variant's score depends only on its own
  draw and weight, hence:

  - adding a variant at the end moves users only into the new variant (the fewest possible);
  - raising a variant's weight moves users only into it, lowering it only out of it;
  - removing the last variant moves only its users; weight 0 retires a variant in place.

  A variant's identity is its position in the target's list, not its name: renaming a variant
  or editing its content moves nobody, but reordering the list or deleting a middle variant
  reshuffles the variants after it (set its weight to 0 instead).

With equal weights the race is won by the largest draw, so that common case compares integers
and takes no logarithm; one variant (or one with a weight above 0) needs no variant draw at all.

Cumulative integer thresholds with ``bisect`` would save the logarithms, but then adding a
variant or changing a weight moves users between the other variants, which corrupts a running
experiment; a ``math.log`` costs less than the hash. The logarithm is IEEE double arithmetic:
two platforms' libm could differ in the last bit, which can only change a choice when two
scores agree to about 1e-16, i.e. never in practice. ``bench/assignment.py`` measures the cost.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from numbers import Real
from typing import Any

from tidings.errors import InvalidError

__all__ = ["Assignment", "InvalidSplitError", "Splitter", "assign"]

SCHEME = b"tidings/assign/v1"
_SEP = b"\x1f"
_LANES = 8  # 64-bit lanes in one 64-byte digest
_SPACE = 1 << 64
_UNIT = 2.0**-53
_unpack_lanes = struct.Struct(">8Q").unpack


class InvalidSplitError(InvalidError, ValueError):
    """A target's control percentage or variant list cannot be split (422, and a ValueError)."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which arm of a target a user is in.

    Attributes:
        control: the user is held out and gets nothing.
        variant: the variant's name, None for control.
        variant_index: the variant's 0-based position in the target's list, None for control.
    """

    control: bool
    variant: str | None
    variant_index: int | None


CONTROL = Assignment(control=True, variant=None, variant_index=None)


class Splitter:
    """A target's split compiled for hot paths: ``Splitter(...).assign(user_key)``.

    Args:
        campaign_id: the campaign's id; every target of a campaign shares the draws.
        control_percent: share of users held out, 0 to 100, may be fractional (2.5).
        variants: ``(name, weight)`` pairs (or mappings with ``name`` and ``weight``) in the
            target's order. Weights are numbers >= 0, not all 0, in any scale.

    Raises:
        InvalidSplitError: (a ValueError) when an argument is out of range.
    """

    __slots__ = (
        "campaign_id",
        "control_percent",
        "variants",
        "_threshold",
        "_hashers",
        "_arms",
        "_live",
        "_only",
        "_even",
    )

    def __init__(
        self,
        campaign_id: int,
        control_percent: float,
        variants: Sequence[tuple[str, float]] | Sequence[Mapping[str, Any]],
    ) -> None:
        self.campaign_id = _check_campaign_id(campaign_id)
        self.control_percent = _check_control_percent(control_percent)
        self.variants: tuple[tuple[str, float], ...] = _check_variants(variants)
        self._threshold = int(Fraction(self.control_percent) * _SPACE / 100)
        blocks = (len(self.variants) + 1 + _LANES - 1) // _LANES
        self._hashers = tuple(
            hashlib.blake2b(
                _SEP.join([SCHEME, str(block).encode(), str(self.campaign_id).encode(), b""]),
                digest_size=_LANES * 8,
            )
            for block in range(blocks)
        )
        self._arms = tuple(
            Assignment(control=False, variant=name, variant_index=index)
            for index, (name, _) in enumerate(self.variants)
        )
        # (lane, max weight / weight, arm) for the variants that can win; weight 0 never does.
        # Scaling by the largest weight keeps the race exact for weights of any magnitude.
        top = max(weight for _, weight in self.variants)
        self._live = tuple(
            (index + 1, top / weight, self._arms[index])
            for index, (_, weight) in enumerate(self.variants)
            if weight > 0
        )
        self._only = self._live[0][2] if len(self._live) == 1 else None
        # Equal weights: the race is won by the largest draw, no logarithms needed.
        self._even = len({scale for _, scale, _ in self._live}) == 1

    @classmethod
    def from_target(cls, campaign_id: int, target: Mapping[str, Any]) -> Splitter:
        """Build from a target as the API stores it (``control_percent``, ``variants``).

        A missing ``control_percent`` means 0 and a variant without ``weight`` weighs 1.
        """
        variants = target.get("variants")
        if not isinstance(variants, Sequence) or isinstance(variants, (str, bytes)):
            raise InvalidSplitError("a target needs a list of variants", {"field": "variants"})
        pairs = []
        for index, variant in enumerate(variants):
            if not isinstance(variant, Mapping):
                raise InvalidSplitError(
                    f"variant {index} must be an object", {"field": f"variants[{index}]"}
                )
            pairs.append((variant.get("name"), variant.get("weight", 1)))
        return cls(campaign_id, target.get("control_percent", 0), pairs)

    def assign(self, user_key: str | int) -> Assignment:
        """The user's arm: control, or one variant. Same key, same answer, everywhere."""
        key = _key_bytes(user_key)
        hasher = self._hashers[0].copy()
        hasher.update(key)
        lanes = _unpack_lanes(hasher.digest())
        if lanes[0] < self._threshold:
            return CONTROL
        if self._only is not None:
            return self._only
        for extra in self._hashers[1:]:
            hasher = extra.copy()
            hasher.update(key)
            lanes += _unpack_lanes(hasher.digest())
        best = self._live[0][2]
        if self._even:
            best_draw = -1
            for lane, _, arm in self._live:
                draw = lanes[lane] >> 11
                if draw > best_draw:
                    best, best_draw = arm, draw
            return best
        log = math.log
        best_score = -math.inf
        for lane, inverse_weight, arm in self._live:
            # 53 random bits, centred in their cell so u is never 0 or 1.
            score = log(((lanes[lane] >> 11) + 0.5) * _UNIT) * inverse_weight
            if score > best_score:
                best, best_score = arm, score
        return best

    def __repr__(self) -> str:
        return (
            f"Splitter(campaign_id={self.campaign_id!r}, "
            f"control_percent={self.control_percent!r}, variants={list(self.variants)!r})"
        )


def assign(
    campaign_id: int,
    user_key: str | int,
    control_percent: float,
    variants: Sequence[tuple[str, float]] | Sequence[Mapping[str, Any]],
) -> Assignment:
    """One user's arm of a target; see :class:`Splitter` for the arguments.

    Recently used splits are kept compiled, so calling this per user is fine; hot loops over
    many users should still hold a :class:`Splitter`.
    """
    try:
        frozen = None if isinstance(variants, (str, bytes)) else tuple(_pair(v) for v in variants)
        hash((campaign_id, control_percent, frozen))
    except (TypeError, ValueError):
        frozen = None
    if frozen is None:  # malformed: the Splitter says what is wrong
        return Splitter(campaign_id, control_percent, variants).assign(user_key)
    return _cached_splitter(campaign_id, control_percent, frozen).assign(user_key)


@lru_cache(maxsize=1024, typed=True)
def _cached_splitter(
    campaign_id: int, control_percent: float, variants: tuple[tuple[Any, Any], ...]
) -> Splitter:
    return Splitter(campaign_id, control_percent, variants)


def _pair(variant: Any) -> tuple[Any, Any]:
    if isinstance(variant, Mapping):
        return (variant.get("name"), variant.get("weight"))
    name, weight = variant
    return (name, weight)


def _key_bytes(user_key: str | int) -> bytes:
    if isinstance(user_key, str):
        return str.encode(user_key, "utf-8", "surrogatepass")
    if isinstance(user_key, int) and not isinstance(user_key, bool):
        return str(int(user_key)).encode("ascii")
    raise TypeError(f"user key must be a str or an int, not {type(user_key).__name__}")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_campaign_id(campaign_id: Any) -> int:
    if not isinstance(campaign_id, int) or isinstance(campaign_id, bool):
        raise InvalidSplitError(
            f"campaign_id must be an integer, got {campaign_id!r}", {"field": "campaign_id"}
        )
    return int(campaign_id)


def _check_control_percent(control_percent: Any) -> float:
    if not _is_number(control_percent) or not 0 <= control_percent <= 100:
        raise InvalidSplitError(
            f"control_percent must be a number from 0 to 100, got {control_percent!r}",
            {"field": "control_percent"},
        )
    return control_percent


def _check_variants(variants: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(variants, Sequence) or isinstance(variants, (str, bytes)):
        raise InvalidSplitError("variants must be a list of (name, weight)", {"field": "variants"})
    if not variants:
        raise InvalidSplitError("a target needs at least one variant", {"field": "variants"})
    checked: list[tuple[str, float]] = []
    seen: set[str] = set()
    for index, variant in enumerate(variants):
        field = f"variants[{index}]"
        try:
            name, weight = _pair(variant)
        except (TypeError, ValueError):
            raise InvalidSplitError(
                f"variant {index} must be a (name, weight) pair, got {variant!r}",
                {"field": field},
            ) from None
        if not isinstance(name, str) or not name.strip():
            raise InvalidSplitError(
                f"variant {index} needs a non-empty name, got {name!r}", {"field": f"{field}.name"}
            )
        if name in seen:
            raise InvalidSplitError(
                f"variant name {name!r} is used twice in one target", {"field": f"{field}.name"}
            )
        seen.add(name)
        try:
            value = float(weight) if _is_number(weight) else math.nan
        except OverflowError:
            value = math.inf
        if not math.isfinite(value) or value < 0:
            raise InvalidSplitError(
                f"variant {name!r} weight must be a finite number >= 0, got {weight!r}",
                {"field": f"{field}.weight"},
            )
        checked.append((name, value))
    if not any(weight > 0 for _, weight in checked):
        raise InvalidSplitError(
            "at least one variant needs a weight above 0", {"field": "variants"}
        )
    return tuple(checked)
