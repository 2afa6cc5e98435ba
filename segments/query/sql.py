"""A resolved query as a SQLAlchemy Core condition over `users`, for PostgreSQL and SQLite.

Only bind parameters reach the database. Every leaf is strictly true or false, never NULL
(a missing value is guarded, not compared), so `not` means "everyone else", exactly like
`segments.query.memory`. Event and device conditions are EXISTS semi-joins on `users.id`:
PostgreSQL runs a top-level EXISTS / NOT EXISTS as a hash semi- / anti-join (events through
the (app_id, name, time, user_id) index), and one nested under `or` as a hashed subplan or
an index probe per user. Never `NOT IN (subquery)`: once its set outgrows work_mem,
PostgreSQL rescans it for every user (measured: over 60 s for 1M users, against 1.0 s).
Given the event rollups' mark, a plain `did "X"` reads one row per person from event_rollups
plus the X events stored after the mark (segments.rollups), not every X event ever stored.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from segments.models import Device, Event, EventRollup, User
from segments.query.ast import (
    Ago, And, Between, Bool, Compare, Did, Exists, In, Match, Near, Node, Not, Num, Or,
    SegmentRef, Str, Value, walk,
)
from segments.query.fields import (
    DEG, FLOAT_OVERFLOW, FLOAT_UNDERFLOW, OPS, Haversine, Kind, field_kind, parse_datetime,
    require_aware, since, zones_where,
)
from segments.versions import version_key

users = User.__table__
devices = Device.__table__
events = Event.__table__
rollups = EventRollup.__table__

DIALECTS = ("postgresql", "sqlite")
_OPERATORS = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def user_condition(node: Node, *, app_id: int, now: dt.datetime, dialect: str,
                   rolled_up_to: int | None = None) -> ColumnElement[bool]:
    """The resolved query as a boolean condition on `users` (never NULL).

    `rolled_up_to`: the event rollups' mark (segments.rollups.usable_mark), or None to read
    events alone. With it, `did "X" [in last d]` (no count, no where) reads event_rollups plus
    the events after the mark.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}")
    return _Compiler(app_id, require_aware(now), dialect, rolled_up_to).node(node)


def select_user_ids(node: Node, *, app_id: int, now: dt.datetime, dialect: str,
                    rolled_up_to: int | None = None) -> sa.Select | sa.CompoundSelect:
    """SELECT users.id of the app's users the resolved query selects.

    The same condition as `user_condition`, arranged for the planner: negations pushed down
    to the leaves, and an `or` over event or device conditions turned into
    `users.id IN (<branch> UNION ALL <branch>)`, so every EXISTS / NOT EXISTS sits in a
    top-level conjunct, where PostgreSQL runs it as a hash semi- or anti-join over the whole
    set instead of one index probe per user.

    With `rolled_up_to` (see `user_condition`) and a `did` the rollups answer, two disjoint
    parts: the people with no events after the mark of those `did` names, for whom the
    rollups alone decide (and `did "X" and not did "X" in last 30d` is one range over their
    last X time); and the few people with such events, checked in full one by one.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}")
    now = require_aware(now)
    node = negation_normal_form(node)
    full = _Compiler(app_id, now, dialect, rolled_up_to)
    names = sorted({n.event for n in walk(node) if full.rolled(n)})
    if not names:
        return sa.select(users.c.id).where(users.c.app_id == app_id, full.planned(node))
    settled = _Compiler(app_id, now, dialect, rolled_up_to, tail=False)
    after_mark = sa.select(events.c.user_id).where(
        events.c.app_id == app_id, events.c.name.in_(names),
        events.c.id > sa.literal(rolled_up_to, sa.BigInteger()))
    return sa.union_all(
        sa.select(users.c.id).where(users.c.app_id == app_id,
                                    ~sa.exists(after_mark.where(events.c.user_id == users.c.id)),
                                    settled.planned(node)),
        sa.select(users.c.id).where(users.c.app_id == app_id, users.c.id.in_(after_mark),
                                    full.node(node)))


def negation_normal_form(node: Node) -> Node:
    """`not` pushed down to the leaves (De Morgan); sound because no leaf is ever NULL."""
    if isinstance(node, Not):
        inner = node.item
        if isinstance(inner, Not):
            return negation_normal_form(inner.item)
        if isinstance(inner, (And, Or)):
            dual = Or if isinstance(inner, And) else And
            return negation_normal_form(dual(tuple(Not(i) for i in inner.items)))
        return node
    if isinstance(node, (And, Or)):
        items: list[Node] = []
        for item in (negation_normal_form(i) for i in node.items):
            items.extend(item.items if type(item) is type(node) else (item,))
        return type(node)(tuple(items))
    return node


def _joins_other_tables(node: Node) -> bool:
    """Whether the query has an event or device condition (a semi-join) anywhere."""
    for n in walk(node):
        if isinstance(n, Did):
            return True
        if isinstance(n, (Compare, In, Between, Exists, Match)) and field_kind(n.field) in (
                Kind.DEVICE_TEXT, Kind.VERSION):
            return True
    return False


def _cmp(op: str, a, b) -> ColumnElement[bool]:
    return _OPERATORS[op](a, b)


class _Compiler:
    def __init__(self, app_id: int, now: dt.datetime, dialect: str, rolled_up_to: int | None = None,
                 tail: bool = True):
        self.app_id = app_id
        self.now = now
        self.pg = dialect == "postgresql"
        self.rolled_up_to = rolled_up_to
        self.tail = tail  # False: for people with no events after the mark (rollups alone)

    # ---- structure ----------------------------------------------------------------------

    def node(self, node: Node, props: bool = False) -> ColumnElement[bool]:
        if isinstance(node, And):
            return sa.and_(*(self.node(i, props) for i in node.items))
        if isinstance(node, Or):
            return sa.or_(*(self.node(i, props) for i in node.items))
        if isinstance(node, Not):
            if self.rolled(node.item):  # NOT (EXISTS OR EXISTS) would not become anti-joins
                return sa.and_(*(~e for e in self._did_exists(node.item)))
            return sa.not_(self.node(node.item, props))
        if isinstance(node, SegmentRef):
            raise ValueError("resolve segment references before compiling a query")
        if isinstance(node, Did):
            return self.did(node)
        if isinstance(node, Near):
            return self.near(node)
        if props:
            return self.json_leaf(events.c.properties, node.field, node)
        kind = field_kind(node.field)
        if kind is Kind.ATTRIBUTE:
            return self.json_leaf(users.c.attributes, node.field.split(".", 1)[1], node)
        if kind is Kind.LOCAL_HOUR:
            return self.local_hour(node)
        if kind in (Kind.DEVICE_TEXT, Kind.VERSION):
            return self.device(node, kind)
        return self.column_leaf(users.c[node.field], kind, node)

    def planned(self, node: Node) -> ColumnElement[bool]:
        """`node` (in negation normal form) as a top-level conjunct; see select_user_ids."""
        if isinstance(node, And):
            items, lapsed = self._lapsed(node.items) if not self.tail else (node.items, [])
            return sa.and_(*lapsed, *(self.planned(i) for i in items))
        if isinstance(node, Or) and _joins_other_tables(node):
            branches = [
                sa.select(users.c.id).where(users.c.app_id == self.app_id, self.planned(i))
                .correlate(None)  # each branch scans users itself
                for i in node.items]
            return users.c.id.in_(sa.union_all(*branches))
        return self.node(node)

    def _lapsed(self, items) -> tuple[list[Node], list[ColumnElement[bool]]]:
        """A conjunction's rolled-up `did "X" [in last d]` and `not did "X" in last d` on one
        name, as one range over each person's last X time: (the other items, the ranges).

        From the rollups alone (one row per person and name, last_at their newest X),
        `did X in last d` is last_at >= since(d), and `not did X in last d` is "no row, or
        last_at < since(d)"; beside a positive the row exists, so together they are one range.
        """
        lows: dict[str, list] = {}
        highs: dict[str, list] = {}
        rest, negated = [], []
        for item in items:
            if self.rolled(item):
                lows.setdefault(item.event, []).append(self._since(item))
            elif isinstance(item, Not) and self.rolled(item.item) and item.item.window is not None:
                highs.setdefault(item.item.event, []).append(self._since(item.item))
                negated.append(item)
            else:
                rest.append(item)
        ranges = []
        for name, since_list in lows.items():
            conds = [rollups.c.app_id == self.app_id, rollups.c.name == sa.literal(name, sa.String())]
            known = [s for s in since_list if s is not None]
            if known:
                conds.append(rollups.c.last_at >= sa.literal(max(known), rollups.c.last_at.type))
            if name in highs:
                conds.append(rollups.c.last_at < sa.literal(min(highs[name]), rollups.c.last_at.type))
            ranges.append(users.c.id.in_(sa.select(rollups.c.user_id).where(*conds)))
        # A negation with no positive on its name stays as it is (a person may have no row).
        return rest + [i for i in negated if i.item.event not in lows], ranges

    # ---- plain columns ------------------------------------------------------------------

    def literal(self, kind: Kind, value: Value):
        if kind is Kind.TIME:
            return since(self.now, value.duration) if isinstance(value, Ago) else parse_datetime(
                value.value)
        if kind is Kind.VERSION:
            return version_key(value.value)
        return value.value

    def column_leaf(self, col, kind: Kind, node: Node) -> ColumnElement[bool]:
        """A leaf on one nullable column: NULL (missing) makes it false, never NULL."""
        present = col.is_not(None)
        if isinstance(node, Exists):
            return present
        text = kind in (Kind.PROFILE_TEXT, Kind.DEVICE_TEXT)
        ordered = sa.collate(col, "C") if (text and self.pg) else col
        if isinstance(node, Compare):
            target = ordered if node.op not in ("=", "!=") else col
            test = _cmp(node.op, target, self.typed(col, self.literal(kind, node.value)))
        elif isinstance(node, In):
            test = col.in_([self.typed(col, self.literal(kind, v)) for v in node.values])
        elif isinstance(node, Between):
            test = sa.and_(ordered >= self.typed(col, self.literal(kind, node.low)),
                           ordered <= self.typed(col, self.literal(kind, node.high)))
        elif isinstance(node, Match):
            test = self.match(col, node)
        else:
            raise TypeError(f"not a leaf condition: {node!r}")
        return sa.and_(present, test)

    @staticmethod
    def typed(col, value):
        return sa.literal(value, col.type)

    def match(self, text_expr, node: Match) -> ColumnElement[bool]:
        """Case-sensitive substring / prefix: not LIKE, which SQLite folds case for."""
        needle = sa.literal(node.text, sa.String())
        if node.op == "contains":
            find = sa.func.strpos if self.pg else sa.func.instr
            return find(text_expr, needle) > 0
        length = sa.literal(len(node.text), sa.Integer())
        return sa.func.substr(text_expr, 1, length) == needle

    # ---- JSON attributes and event properties -------------------------------------------

    def json_leaf(self, col, key: str, node: Node) -> ColumnElement[bool]:
        if self.pg:
            doc = sa.type_coerce(col, postgresql.JSONB())
            item = doc.op("->")(sa.literal(key, sa.Text()))
            kind = sa.func.jsonb_typeof(item)
            text = doc.op("->>", return_type=sa.Text())(sa.literal(key, sa.Text()))
        else:
            path = sa.literal('$."' + key + '"', sa.String())
            kind = sa.func.json_type(col, path)
            text = sa.func.json_extract(col, path)
        jt = _JsonTerms(self.pg, doc if self.pg else col, key, kind, text)
        if isinstance(node, Exists):
            return jt.present()
        if isinstance(node, Match):
            return sa.and_(jt.is_type("string"), self.match(jt.string(), node))
        if isinstance(node, Compare):
            return jt.compare(node.op, node.value)
        if isinstance(node, In):
            return sa.or_(*(jt.compare("=", v) for v in node.values))
        if isinstance(node, Between):
            return sa.and_(jt.compare(">=", node.low), jt.compare("<=", node.high))
        raise TypeError(f"not a leaf condition: {node!r}")

    # ---- local hour ---------------------------------------------------------------------

    def local_hour(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, Exists):
            test = lambda h: True  # noqa: E731
        elif isinstance(node, Compare):
            cmp, lit = OPS[node.op], int(node.value.value)
            test = lambda h: cmp(h, lit)  # noqa: E731
        elif isinstance(node, In):
            hours = {int(v.value) for v in node.values}
            test = hours.__contains__
        elif isinstance(node, Between):
            lo, hi = int(node.low.value), int(node.high.value)
            test = lambda h: lo <= h <= hi  # noqa: E731
        else:
            raise TypeError(f"not a local_hour condition: {node!r}")
        zones = zones_where(self.now, test)
        if not zones:
            return sa.false()
        return sa.func.coalesce(users.c.timezone, "UTC").in_(zones)

    # ---- devices ------------------------------------------------------------------------

    def device(self, node: Node, kind: Kind) -> ColumnElement[bool]:
        """Any of the user's devices matches."""
        if kind is Kind.VERSION and not isinstance(node, Exists):
            col = devices.c[node.field + "_key"]
        else:
            col = devices.c[node.field]
        return sa.exists().where(devices.c.user_id == users.c.id,
                                 devices.c.app_id == self.app_id,
                                 self.column_leaf(col, kind, node))

    # ---- events -------------------------------------------------------------------------

    def did(self, node: Did) -> ColumnElement[bool]:
        if self.rolled(node):
            return sa.or_(*self._did_exists(node))
        conds = [events.c.app_id == self.app_id,
                 events.c.name == sa.literal(node.event, sa.String())]
        if node.window is not None:
            conds.append(events.c.time >= sa.literal(since(self.now, node.window),
                                                     events.c.time.type))
        if node.where is not None:
            conds.append(self.node(node.where, props=True))
        if node.count is None:
            return sa.exists().where(events.c.user_id == users.c.id, *conds)
        op, n = node.count.op, node.count.n
        having = _cmp(op, sa.func.count(), sa.literal(n, sa.Integer()))
        if OPS[op](0, n):
            # Satisfied by zero events: everyone but those with some events and a failing count.
            return sa.not_(self._counted(conds, sa.not_(having)))
        return self._counted(conds, having)

    def rolled(self, node: Node) -> bool:
        """Whether `node` is a `did "X" [in last d]` (no count, no where) the rollups answer."""
        return (self.rolled_up_to is not None and isinstance(node, Did) and node.count is None
                and node.where is None)

    def _since(self, node: Did) -> dt.datetime | None:
        return None if node.window is None else since(self.now, node.window)

    def _did_exists(self, node: Did) -> list[ColumnElement[bool]]:
        """EXISTS conditions of which any says a person did it: their rollup row up to the
        mark, and (unless `tail` is off) their X events after it.

        A person whose events are in both is found twice, which EXISTS does not mind; so a
        mark read before a rollup that moved it since only makes the second part longer.
        Rollups hold the newest time (last_at), so a window is a bound on it.
        """
        name = sa.literal(node.event, sa.String())
        at = self._since(node)
        rolled = [rollups.c.app_id == self.app_id, rollups.c.name == name]
        after = [events.c.app_id == self.app_id, events.c.name == name,
                 events.c.id > sa.literal(self.rolled_up_to, sa.BigInteger())]
        if at is not None:
            rolled.append(rollups.c.last_at >= sa.literal(at, rollups.c.last_at.type))
            after.append(events.c.time >= sa.literal(at, events.c.time.type))
        parts = [(rollups, rolled)] + ([(events, after)] if self.tail else [])
        return [sa.exists().where(t.c.user_id == users.c.id, *conds) for t, conds in parts]

    @staticmethod
    def _counted(conds, having) -> ColumnElement[bool]:
        counts = (sa.select(events.c.user_id).where(*conds)
                  .group_by(events.c.user_id).having(having).subquery("counts"))
        return sa.exists().where(counts.c.user_id == users.c.id)

    # ---- geo ----------------------------------------------------------------------------

    def near(self, node: Near) -> ColumnElement[bool]:
        geo = Haversine(node)
        lat, lon = users.c.lat, users.c.lon
        present = sa.and_(lat.is_not(None), lon.is_not(None))
        if geo.everywhere:
            return present

        def f(x: float):
            return sa.literal(x, sa.Float())

        def flush(x):  # as fields._flush (see Haversine)
            return sa.case((sa.and_(x > f(-geo.FLUSH), x < f(geo.FLUSH)), f(0.0)), else_=x)

        deg, half = f(DEG), f(2.0)
        s1 = sa.func.sin(flush(lat - f(geo.lat0)) * deg / half)
        s2 = sa.func.sin(flush(lon - f(geo.lon0)) * deg / half)
        term = s1 * s1 + f(geo.cos_lat0) * sa.func.cos(flush(lat) * deg) * s2 * s2
        # A prefilter only: it can never drop a valid coordinate the formula keeps.
        box = [lat.between(f(geo.lat_box[0]), f(geo.lat_box[1]))]
        if geo.lon_box is not None:
            box.append(lon.between(f(geo.lon_box[0]), f(geo.lon_box[1])))
        invalid = sa.or_(lat < f(-90.0), lat > f(90.0), lon < f(-180.0), lon > f(180.0))
        return sa.and_(present, sa.or_(sa.and_(*box), invalid), term <= f(geo.limit))


class _JsonTerms:
    """Typed access to one key of a JSON document: a literal only matches its own JSON type."""

    def __init__(self, pg: bool, doc, key: str, kind, text):
        self.pg, self.doc, self.key, self.kind, self.text = pg, doc, key, kind, text

    def is_type(self, json_type: str) -> ColumnElement[bool]:
        """Never NULL: a missing key has no type."""
        if self.pg:
            names = {"string": ["string"], "number": ["number"], "boolean": ["boolean"]}[json_type]
        else:
            names = {"string": ["text"], "number": ["integer", "real"],
                     "boolean": ["true", "false"]}[json_type]
        test = self.kind == names[0] if len(names) == 1 else self.kind.in_(names)
        return sa.func.coalesce(test, sa.false())

    def present(self) -> ColumnElement[bool]:
        return sa.func.coalesce(self.kind != "null", sa.false())

    def string(self):
        return sa.collate(self.text, "C") if self.pg else self.text

    def number(self):
        if self.pg:
            # jsonb prints numbers in plain digits, so fewer than 300 characters is well inside
            # the double range and a plain cast is safe. Longer ones go through numeric and are
            # clamped (see fields.json_number): ::float8 would raise "out of range" on 1e400
            # and fail the whole query.
            double = postgresql.DOUBLE_PRECISION()
            n = sa.cast(self.doc.op("->")(sa.literal(self.key, sa.Text())), sa.Numeric())
            big = sa.literal(Decimal(FLOAT_OVERFLOW), sa.Numeric())
            return sa.case(
                (self.kind != "number", sa.null()),
                (sa.func.length(self.text) < 300, sa.cast(self.text, double)),
                (n >= big, sa.literal(math.inf, double)),
                (n <= -big, sa.literal(-math.inf, double)),
                (sa.func.abs(n) <= sa.literal(FLOAT_UNDERFLOW, sa.Numeric()), sa.literal(0.0, double)),
                else_=sa.cast(n, double))
        return sa.case((self.kind.in_(["integer", "real"]), sa.cast(self.text, sa.Float())))

    def compare(self, op: str, value: Value) -> ColumnElement[bool]:
        if isinstance(value, Num):
            return sa.and_(self.is_type("number"),
                           _cmp(op, self.number(), sa.literal(float(value.value), sa.Float())))
        if isinstance(value, Str):
            if op == "=" and self.pg:
                return self.contains(value.value)
            return sa.and_(self.is_type("string"),
                           _cmp(op, self.string(), sa.literal(value.value, sa.String())))
        if isinstance(value, Bool):
            if op == "=" and self.pg:
                return self.contains(value.value)
            if self.pg:
                truth = self.text == "true"
                return sa.and_(self.is_type("boolean"), truth if (op == "=") == value.value
                               else sa.not_(truth))
            wanted = "true" if (op == "=") == value.value else "false"
            return sa.func.coalesce(self.kind == wanted, sa.false())
        raise TypeError(f"no JSON comparison with {value!r}")

    def contains(self, value) -> ColumnElement[bool]:
        """`doc @> {"key": value}`: what the jsonb_path_ops GIN index answers."""
        probe = sa.literal({self.key: value}, postgresql.JSONB())
        return self.doc.op("@>", return_type=sa.Boolean())(probe)
