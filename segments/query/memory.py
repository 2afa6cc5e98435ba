"""Evaluating a (resolved) query for one person in Python: the in-app pull and preview path.

Must select exactly whom `segments.query.sql` selects; tests/segments/test_query_agreement.py
checks the two against each other on PostgreSQL. `compile_predicate` does the per-query work
once, so evaluating a profile is a few attribute lookups and comparisons.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from segments.query.ast import (
    Ago, And, Between, Bool, Compare, Did, Exists, In, Match, Near, Node, Not, Num, Or,
    SegmentRef, Str, Value, walk,
)
from segments.query.fields import (
    FIELDS, OPS, Haversine, Kind, field_kind, json_number, local_hour, parse_datetime, require_aware, since,
    window_start,
)
from segments.versions import version_key

Predicate = Callable[["Profile"], bool]


@dataclasses.dataclass(frozen=True)
class DeviceView:
    platform: str | None = None
    device_type: str | None = None
    os_version: str | None = None
    app_version: str | None = None
    # As stored (segments.versions.version_key of the versions); see `with_versions`.
    os_version_key: str | None = None
    app_version_key: str | None = None

    @classmethod
    def with_versions(cls, **fields: Any) -> DeviceView:
        """A device whose version keys are computed from its versions."""
        fields.setdefault("os_version_key", version_key(fields.get("os_version")))
        fields.setdefault("app_version_key", version_key(fields.get("app_version")))
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class EventView:
    name: str
    time: dt.datetime
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Profile:
    """What a query can see of one person."""

    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    language: str | None = None
    timezone: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    sms_opt_in: bool | None = False
    push_opt_in: bool | None = True
    created_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None
    devices: tuple[DeviceView, ...] = ()
    events: tuple[EventView, ...] = ()  # only those the query needs; see load_profile
    id: int | None = None


def evaluate(node: Node, profile: Profile, now: dt.datetime) -> bool:
    """Whether the person matches the resolved query at `now`."""
    return compile_predicate(node, now)(profile)


def compile_predicate(node: Node, now: dt.datetime) -> Predicate:
    """The resolved query as a function of a Profile, with everything query-only precomputed."""
    return _Compiler(require_aware(now)).node(node)


# ---- which events a query needs ---------------------------------------------------------------

def referenced_event_names(node: Node) -> set[str]:
    """Names of the events the (resolved) query looks at."""
    return set(event_windows(node))


def event_windows(node: Node) -> dict[str, dt.timedelta | None]:
    """Per event name, the widest window the query looks back, or None when one is unbounded."""
    windows: dict[str, dt.timedelta | None] = {}
    for n in walk(node):
        if isinstance(n, SegmentRef):
            raise ValueError("resolve segment references before evaluating a query")
        if isinstance(n, Did):
            delta = n.window.delta if n.window is not None else None
            if n.event not in windows:
                windows[n.event] = delta
            elif windows[n.event] is not None:
                windows[n.event] = None if delta is None else max(windows[n.event], delta)
    return windows


def load_profile(session, user, node: Node, now: dt.datetime) -> Profile:
    """A user's Profile with their devices and only the events the resolved query needs."""
    from segments.models import Device, Event

    devices = tuple(
        DeviceView(*row) for row in session.execute(
            sa.select(Device.platform, Device.device_type, Device.os_version, Device.app_version,
                      Device.os_version_key, Device.app_version_key)
            .where(Device.user_id == user.id).order_by(Device.id)))
    events: tuple[EventView, ...] = ()
    windows = event_windows(node)
    if windows:
        require_aware(now)
        unbounded = sorted(name for name, w in windows.items() if w is None)
        clauses = [Event.name.in_(unbounded)] if unbounded else []
        for name, w in sorted(windows.items()):
            if w is not None:
                clauses.append(sa.and_(Event.name == name, Event.time >= window_start(now, w)))
        events = tuple(
            EventView(name, time, props if props is not None else {})
            for name, time, props in session.execute(
                sa.select(Event.name, Event.time, Event.properties)
                .where(Event.user_id == user.id, Event.app_id == user.app_id, sa.or_(*clauses))
                .order_by(Event.time, Event.id)))
    return Profile(
        attributes=user.attributes if user.attributes is not None else {},
        language=user.language, timezone=user.timezone, country=user.country,
        region=user.region, city=user.city, lat=user.lat, lon=user.lon,
        sms_opt_in=user.sms_opt_in, push_opt_in=user.push_opt_in,
        created_at=user.created_at, last_seen_at=user.last_seen_at,
        devices=devices, events=events, id=user.id,
    )


# ---- the compiler -----------------------------------------------------------------------------

_PROFILE_GETTERS = {name: (lambda p, _n=name: getattr(p, _n)) for name in FIELDS}


def _attr_test(op: str, value: Value) -> Callable[[Any], bool]:
    """A test of one raw JSON value: a literal only ever matches a value of its own JSON type."""
    cmp = OPS[op]
    if isinstance(value, Num):
        lit = float(value.value)
        return lambda v: (type(v) is int or type(v) is float) and cmp(json_number(v), lit)
    if isinstance(value, Str):
        s = value.value
        return lambda v: type(v) is str and cmp(v, s)
    if isinstance(value, Bool):
        b = value.value
        return lambda v: type(v) is bool and cmp(v, b)
    raise TypeError(f"no attribute comparison with {value!r}")


def _any(tests: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(t(v) for t in tests)


def _both(a: Callable[[Any], bool], b: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: a(v) and b(v)


class _Compiler:
    def __init__(self, now: dt.datetime):
        self.now = now

    def node(self, node: Node, props: bool = False) -> Predicate:
        if isinstance(node, And):
            parts = [self.node(i, props) for i in node.items]
            return lambda p: all(f(p) for f in parts)
        if isinstance(node, Or):
            parts = [self.node(i, props) for i in node.items]
            return lambda p: any(f(p) for f in parts)
        if isinstance(node, Not):
            inner = self.node(node.item, props)
            return lambda p: not inner(p)
        if isinstance(node, Did):
            return self.did(node)
        if isinstance(node, Near):
            geo = Haversine(node)
            return lambda p: geo.matches(p.lat, p.lon)
        if isinstance(node, SegmentRef):
            raise ValueError("resolve segment references before evaluating a query")
        if props:  # inside `did ... where (...)`: the subject is an event's properties
            test = self.value_test(node, Kind.ATTRIBUTE)
            name = node.field
            return lambda props_: test(props_.get(name))
        kind = field_kind(node.field)
        if kind is Kind.LOCAL_HOUR:
            test = self.value_test(node, kind)
            now = self.now
            return lambda p: test(local_hour(p.timezone, now))
        test = self.value_test(node, kind)
        if kind is Kind.ATTRIBUTE:
            name = node.field.split(".", 1)[1]
            return lambda p: test((p.attributes or {}).get(name))
        if kind in (Kind.DEVICE_TEXT, Kind.VERSION):
            column = node.field
            if kind is Kind.VERSION and not isinstance(node, Exists):
                column += "_key"
            return lambda p: any(test(getattr(d, column)) for d in p.devices)
        getter = _PROFILE_GETTERS[node.field]
        return lambda p: test(getter(p))

    def did(self, node: Did) -> Predicate:
        name = node.event
        where = self.node(node.where, props=True) if node.where is not None else None
        cutoff = since(self.now, node.window) if node.window is not None else None

        def count(p: Profile, limit: int | None) -> int:
            n = 0
            for e in p.events:
                if e.name != name or (cutoff is not None and e.time < cutoff):
                    continue
                if where is not None and not where(e.properties if e.properties is not None else {}):
                    continue
                n += 1
                if limit is not None and n >= limit:
                    break
            return n

        if node.count is None:
            return lambda p: count(p, 1) >= 1
        cmp, n = OPS[node.count.op], node.count.n
        # Counting past n + 1 never changes the outcome of `count op n`.
        return lambda p: cmp(count(p, n + 1), n)

    def value_test(self, node: Node, kind: Kind) -> Callable[[Any], bool]:
        """A test of the field's value (None: missing) for a leaf condition."""
        if isinstance(node, Exists):
            return lambda v: v is not None
        if isinstance(node, Match):
            text = node.text
            if node.op == "contains":
                return lambda v: type(v) is str and text in v
            return lambda v: type(v) is str and v.startswith(text)
        if isinstance(node, Compare):
            return self.compare_test(kind, node.op, node.value)
        if isinstance(node, In):
            return _any([self.compare_test(kind, "=", v) for v in node.values])
        if isinstance(node, Between):
            return _both(self.compare_test(kind, ">=", node.low),
                         self.compare_test(kind, "<=", node.high))
        raise TypeError(f"not a leaf condition: {node!r}")

    def compare_test(self, kind: Kind, op: str, value: Value) -> Callable[[Any], bool]:
        cmp = OPS[op]
        if kind is Kind.ATTRIBUTE:
            return _attr_test(op, value)
        if kind is Kind.VERSION:
            lit: Any = version_key(value.value)
        elif kind is Kind.TIME:
            lit = since(self.now, value.duration) if isinstance(value, Ago) else parse_datetime(
                value.value)
        elif kind is Kind.LOCAL_HOUR:
            lit = int(value.value)
        else:  # text and flags: the parser already checked the literal's type
            lit = value.value
        return lambda v: v is not None and cmp(v, lit)
