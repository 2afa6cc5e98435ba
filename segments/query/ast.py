"""The segment query AST: frozen, hashable dataclasses, and `to_text` that prints them back.

`parse(to_text(node)) == node` for every node the parser makes. Positions (kept on
`SegmentRef` for error reporting) take no part in equality.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Union

COMPARE_OPS = ("=", "!=", "<", "<=", ">", ">=")
COUNT_OPS = (">=", ">", "=", "<", "<=")
DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DISTANCE_UNITS = {"km": 1.0, "mi": 1.609344}


# ---- values ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Str:
    value: str


@dataclasses.dataclass(frozen=True)
class Num:
    """A number literal; ints stay ints (exact text), both compare as float."""

    value: int | float


@dataclasses.dataclass(frozen=True)
class Bool:
    value: bool


@dataclasses.dataclass(frozen=True)
class Duration:
    amount: int
    unit: str  # one of DURATION_UNITS

    @property
    def delta(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.amount * DURATION_UNITS[self.unit])


@dataclasses.dataclass(frozen=True)
class Ago:
    duration: Duration


Value = Union[Str, Num, Bool, Ago]


# ---- conditions -----------------------------------------------------------------------------
# `field` is a built-in field name ("country"), "attr.NAME" for a custom attribute, or, inside
# `Did.where`, the bare name of an event property.

@dataclasses.dataclass(frozen=True)
class Compare:
    field: str
    op: str  # one of COMPARE_OPS
    value: Value


@dataclasses.dataclass(frozen=True)
class In:
    field: str
    values: tuple[Value, ...]


@dataclasses.dataclass(frozen=True)
class Between:
    field: str
    low: Value
    high: Value


@dataclasses.dataclass(frozen=True)
class Exists:
    field: str


@dataclasses.dataclass(frozen=True)
class Match:
    field: str
    op: str  # "contains" | "starts_with"
    text: str


@dataclasses.dataclass(frozen=True)
class Count:
    op: str  # one of COUNT_OPS
    n: int


@dataclasses.dataclass(frozen=True)
class Did:
    event: str
    where: Node | None = None
    count: Count | None = None
    window: Duration | None = None


@dataclasses.dataclass(frozen=True)
class Near:
    lat: float
    lon: float
    distance: float
    unit: str  # "km" | "mi"

    @property
    def km(self) -> float:
        return self.distance * DISTANCE_UNITS[self.unit]


@dataclasses.dataclass(frozen=True)
class SegmentRef:
    name: str
    position: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Not:
    item: Node


Node = Union[Compare, In, Between, Exists, Match, Did, Near, SegmentRef, And, Or, Not]


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents first; does not enter `Did.where` (another scope)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (And, Or)):
            stack.extend(reversed(n.items))
        elif isinstance(n, Not):
            stack.append(n.item)


# ---- printing -------------------------------------------------------------------------------

def format_number(value: int | float) -> str:
    """Positional notation (the grammar has no exponents) that reads back to the same float."""
    if isinstance(value, int):
        return str(value)
    return format(Decimal(repr(value)), "f")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_text(value: Value) -> str:
    if isinstance(value, Str):
        return quote(value.value)
    if isinstance(value, Bool):
        return "true" if value.value else "false"
    if isinstance(value, Num):
        return format_number(value.value)
    if isinstance(value, Ago):
        return f"{duration_text(value.duration)} ago"
    raise TypeError(f"not a value: {value!r}")


def duration_text(d: Duration) -> str:
    return f"{d.amount}{d.unit}"


def to_text(node: Node) -> str:
    """The canonical text of a query."""
    if isinstance(node, Or):
        return " or ".join(_wrap(i, Or) for i in node.items)
    if isinstance(node, And):
        return " and ".join(_wrap(i, (And, Or)) for i in node.items)
    if isinstance(node, Not):
        return "not " + _wrap(node.item, (And, Or))
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {value_text(node.value)}"
    if isinstance(node, In):
        return f"{node.field} in ({', '.join(value_text(v) for v in node.values)})"
    if isinstance(node, Between):
        return f"{node.field} between {value_text(node.low)} and {value_text(node.high)}"
    if isinstance(node, Exists):
        return f"{node.field} exists"
    if isinstance(node, Match):
        return f"{node.field} {node.op} {quote(node.text)}"
    if isinstance(node, Did):
        text = f"did {quote(node.event)}"
        if node.where is not None:
            text += f" where ({to_text(node.where)})"
        if node.count is not None:
            text += f" {node.count.op} {node.count.n} times"
        if node.window is not None:
            text += f" in last {duration_text(node.window)}"
        return text
    if isinstance(node, Near):
        return (f"near({format_number(node.lat)}, {format_number(node.lon)}, "
                f"{format_number(node.distance)}{node.unit})")
    if isinstance(node, SegmentRef):
        return f"segment({quote(node.name)})"
    raise TypeError(f"not a query node: {node!r}")


def _wrap(node: Node, kinds) -> str:
    text = to_text(node)
    return f"({text})" if isinstance(node, kinds) else text
