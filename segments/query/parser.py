"""Query text to AST: the grammar of CONTRACT.md, with literals type-checked per field.

Errors are `QueryError`s a marketer can act on, positioned at the offending token.
"""

from __future__ import annotations

import difflib
import math
import re

from segments.query.ast import (
    COUNT_OPS, DISTANCE_UNITS, DURATION_UNITS, Ago, And, Between, Bool, Compare,
    Count, Did, Duration, Exists, In, Match, Near, Node, Not, Num, Or, SegmentRef, Str, Value,
)
from segments.query.errors import QueryError
from segments.query.fields import ATTR_PREFIX, FIELDS, Kind, parse_datetime
from segments.query.lexer import T, Token, tokenize
from segments.versions import version_key

MAX_DEPTH = 64
MAX_DURATION_DAYS = 366 * 1000  # "in last 1000 years" is already everything
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
KEYWORDS = frozenset({
    "and", "or", "not", "in", "between", "exists", "contains", "starts_with", "did", "where",
    "times", "last", "near", "segment", "true", "false", "ago",
})
_OPERATOR_LIST = "=, !=, <, <=, >, >=, in, between, exists, contains or starts_with"


def parse(text: str) -> Node:
    """Parse a segment query. Raises QueryError with the 0-based position of the problem."""
    if not isinstance(text, str):
        raise QueryError("the query must be a string", 0)
    tokens = tokenize(text)
    if tokens[0].kind is T.END:
        raise QueryError("the query is empty", 0)
    parser = _Parser(tokens)
    node = parser.query(depth=0, props=False)
    tok = parser.peek()
    if tok.kind is not T.END:
        if tok.kind is T.RPAREN:
            raise QueryError('unexpected ")" (no "(" to close)', tok.pos)
        raise QueryError(f'expected "and", "or" or the end of the query, found {tok.describe()}',
                         tok.pos)
    return node


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.i = 0

    # ---- token helpers ----------------------------------------------------------------------

    def peek(self, k: int = 0) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, kind: T, what: str, after: Token) -> Token:
        tok = self.peek()
        if tok.kind is not kind:
            raise QueryError(f"expected {what} after {after.describe()}", tok.pos)
        return self.next()

    def expect_word(self, word: str, after: Token) -> Token:
        tok = self.peek()
        if not tok.is_word(word):
            raise QueryError(f'expected "{word}" after {after.describe()}', tok.pos)
        return self.next()

    def close_paren(self) -> Token:
        tok = self.peek()
        if tok.kind is not T.RPAREN:
            raise QueryError('expected ")"', tok.pos)
        return self.next()

    # ---- boolean structure ------------------------------------------------------------------

    def query(self, depth: int, props: bool) -> Node:
        items = [self.conjunction(depth, props)]
        while self.peek().is_word("or"):
            self.next()
            items.append(self.conjunction(depth, props))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self, depth: int, props: bool) -> Node:
        items = [self.term(depth, props)]
        while self.peek().is_word("and"):
            self.next()
            items.append(self.term(depth, props))
        return items[0] if len(items) == 1 else And(tuple(items))

    def term(self, depth: int, props: bool) -> Node:
        tok = self.peek()
        if depth > MAX_DEPTH:
            raise QueryError("the query is nested too deeply", tok.pos)
        if tok.is_word("not"):
            self.next()
            return Not(self.term(depth + 1, props))
        if tok.kind is T.LPAREN:
            self.next()
            node = self.query(depth + 1, props)
            self.close_paren()
            return node
        return self.condition(props)

    # ---- conditions -------------------------------------------------------------------------

    def condition(self, props: bool) -> Node:
        tok = self.peek()
        if tok.kind is T.END:
            raise QueryError("expected a condition, found the end of the query", tok.pos)
        if tok.kind is not T.WORD:
            raise QueryError(f"expected a condition, found {tok.describe()}", tok.pos)
        word = tok.text.lower()
        if not props:
            if word == "did":
                return self.did()
            if word == "near" and self.peek(1).kind is T.LPAREN:
                return self.near()
            if word == "segment" and self.peek(1).kind is T.LPAREN:
                return self.segment()
        field, kind = self.field(props)
        return self.field_condition(tok, field, kind)

    def field(self, props: bool) -> tuple[str, Kind]:
        tok = self.next()
        text = tok.text
        if props:
            if text.lower() in KEYWORDS:
                raise QueryError(f"expected an event property name, found {tok.describe()}", tok.pos)
            if not _NAME.match(text):
                raise QueryError(
                    f'"{text}" is not an event property name (use a plain name like amount)',
                    tok.pos)
            return text, Kind.ATTRIBUTE
        lower = text.lower()
        if lower in FIELDS:
            return lower, FIELDS[lower]
        if lower.startswith(ATTR_PREFIX):
            name = text[len(ATTR_PREFIX):]
            if _NAME.match(name):
                return ATTR_PREFIX + name, Kind.ATTRIBUTE
            if name:
                raise QueryError(
                    f'unknown field "{text}": attribute names start with a letter or "_" and '
                    "hold only letters, digits and \"_\"", tok.pos)
            raise QueryError(f'unknown field "{text}"', tok.pos)
        if lower in KEYWORDS:
            raise QueryError(f"expected a condition, found {tok.describe()}", tok.pos)
        message = f'unknown field "{text}"'
        close = difflib.get_close_matches(lower, list(FIELDS), n=1, cutoff=0.6)
        prefix, _, rest = text.partition(".")
        if close:
            message += f', did you mean "{close[0]}"?'
        elif rest and _NAME.match(rest) and difflib.get_close_matches(prefix.lower(), ["attr"]):
            message += f', did you mean "attr.{rest}"?'
        elif "." not in text:
            message += f' (custom attributes are written attr.{text})'
        raise QueryError(message, tok.pos)

    def field_condition(self, field_tok: Token, field: str, kind: Kind) -> Node:
        tok = self.peek()
        if tok.kind is T.OP:
            self.next()
            if kind is Kind.FLAG and tok.text not in ("=", "!="):
                raise QueryError(f"{field} only takes = or != with true or false", tok.pos)
            value = self.value(field, kind, tok, ordered=tok.text not in ("=", "!="))
            if isinstance(value, Bool) and tok.text not in ("=", "!="):
                raise QueryError(f"true and false only go with = or !=, not {tok.text}",
                                 self.tokens[self.i - 1].pos)
            return Compare(field, tok.text, value)
        word = tok.text.lower() if tok.kind is T.WORD else None
        if word == "exists":
            self.next()
            if kind is Kind.FLAG:
                raise QueryError(f"{field} only takes = or != with true or false", tok.pos)
            return Exists(field)
        if word == "in":
            self.next()
            if kind is Kind.FLAG:
                raise QueryError(f"{field} only takes = or != with true or false", tok.pos)
            lparen = self.expect(T.LPAREN, '"("', tok)
            values = [self.value(field, kind, lparen)]
            while self.peek().kind is T.COMMA:
                comma = self.next()
                values.append(self.value(field, kind, comma))
            self.close_paren()
            return In(field, tuple(values))
        if word == "between":
            self.next()
            if kind is Kind.FLAG:
                raise QueryError(f"{field} only takes = or != with true or false", tok.pos)
            low_tok = self.peek()
            low = self.value(field, kind, tok, ordered=True)
            and_tok = self.expect_word("and", self.tokens[self.i - 1])
            high_tok = self.peek()
            high = self.value(field, kind, and_tok, ordered=True)
            for v, t in ((low, low_tok), (high, high_tok)):
                if isinstance(v, Bool):
                    raise QueryError("true and false only go with = or !=, not between", t.pos)
            if kind is not Kind.TIME and type(low) is not type(high):
                raise QueryError("between needs two values of the same kind", high_tok.pos)
            return Between(field, low, high)
        if word in ("contains", "starts_with"):
            self.next()
            if kind not in (Kind.PROFILE_TEXT, Kind.DEVICE_TEXT, Kind.ATTRIBUTE):
                raise QueryError(f"{word} only works on text fields, not on {field}", tok.pos)
            text_tok = self.expect(T.STRING, "a string", tok)
            text = text_tok.value
            if field == "country":
                text = text.upper()
            return Match(field, word, text)
        raise QueryError(f"expected {_OPERATOR_LIST} after {field_tok.describe()}", tok.pos)

    # ---- values -----------------------------------------------------------------------------

    def value(self, field: str, kind: Kind, after: Token, ordered: bool = False) -> Value:
        tok = self.peek()
        value = self.literal(after, _expected(field, kind, ordered), field)
        return _check(field, kind, value, tok, after)

    def literal(self, after: Token, expected: str = "a value", field: str = "") -> Value:
        tok = self.next()
        if tok.kind is T.STRING:
            return Str(tok.value)
        if tok.kind is T.NUMBER:
            return Num(_finite(tok))
        if tok.is_word("true", "false"):
            return Bool(tok.text.lower() == "true")
        if tok.kind is T.QUANTITY:
            duration = self.duration_of(tok)
            self.expect_word("ago", tok)
            return Ago(duration)
        note = f" ({field} is text)" if expected == "a string" else ""
        raise QueryError(f"expected {expected} after {after.describe()}{note}", tok.pos)

    def duration_of(self, tok: Token) -> Duration:
        amount, unit = tok.value
        if unit not in DURATION_UNITS:
            raise QueryError(
                f'unknown unit "{unit}" in "{tok.text}" (durations use m, h, d or w, as in 7d)',
                tok.pos)
        if not isinstance(amount, int) or amount < 0:
            raise QueryError(f'a duration takes a whole number, as in 7d, not "{tok.text}"', tok.pos)
        duration = Duration(amount, unit)
        if amount * DURATION_UNITS[unit] > MAX_DURATION_DAYS * 86400:
            raise QueryError(f'"{tok.text}" is too long (at most 1000 years)', tok.pos)
        return duration

    # ---- did, near, segment -----------------------------------------------------------------

    def did(self) -> Did:
        did_tok = self.next()
        name_tok = self.expect(T.STRING, "an event name in quotes", did_tok)
        if not name_tok.value:
            raise QueryError("the event name is empty", name_tok.pos)
        where = count = window = None
        if self.peek().is_word("where"):
            where_tok = self.next()
            self.expect(T.LPAREN, '"("', where_tok)
            where = self.query(depth=1, props=True)
            self.close_paren()
        tok = self.peek()
        if tok.kind is T.OP:
            if tok.text not in COUNT_OPS:
                raise QueryError(f"a count takes >=, >, =, < or <=, not {tok.text}", tok.pos)
            self.next()
            n_tok = self.peek()
            if n_tok.kind is not T.NUMBER or not isinstance(n_tok.value, int) or n_tok.value < 0:
                raise QueryError(f"expected a whole number of times after {tok.describe()}", n_tok.pos)
            self.next()
            self.expect_word("times", n_tok)
            count = Count(tok.text, n_tok.value)
        if self.peek().is_word("in"):
            in_tok = self.next()
            last_tok = self.expect_word("last", in_tok)
            d_tok = self.peek()
            if d_tok.kind is not T.QUANTITY:
                raise QueryError(f"expected a duration like 7d after {last_tok.describe()}", d_tok.pos)
            self.next()
            window = self.duration_of(d_tok)
        return Did(name_tok.value, where, count, window)

    def near(self) -> Near:
        near_tok = self.next()
        lparen = self.next()
        lat_tok = self.expect(T.NUMBER, "a latitude", lparen)
        comma = self.expect(T.COMMA, '","', lat_tok)
        lon_tok = self.expect(T.NUMBER, "a longitude", comma)
        comma = self.expect(T.COMMA, '","', lon_tok)
        d_tok = self.peek()
        if d_tok.kind is not T.QUANTITY or d_tok.value[1].lower() not in DISTANCE_UNITS:
            raise QueryError(f"expected a distance like 25km or 10mi after {comma.describe()}",
                             d_tok.pos)
        self.next()
        self.close_paren()
        lat, lon = float(_finite(lat_tok)), float(_finite(lon_tok))
        if not -90 <= lat <= 90:
            raise QueryError("latitude must be between -90 and 90", lat_tok.pos)
        if not -180 <= lon <= 180:
            raise QueryError("longitude must be between -180 and 180", lon_tok.pos)
        amount, unit = d_tok.value
        if amount < 0:
            raise QueryError("a distance can't be negative", d_tok.pos)
        del near_tok
        return Near(lat_tok.value, lon_tok.value, amount, unit.lower())

    def segment(self) -> SegmentRef:
        seg_tok = self.next()
        lparen = self.next()
        name_tok = self.expect(T.STRING, "a segment name in quotes", lparen)
        self.close_paren()
        return SegmentRef(name_tok.value, seg_tok.pos)


def _finite(tok: Token) -> int | float:
    try:
        ok = math.isfinite(float(tok.value))
    except OverflowError:
        ok = False
    if not ok:
        raise QueryError(f"the number {tok.text} is too large", tok.pos)
    return tok.value


def _expected(field: str, kind: Kind, ordered: bool) -> str:
    """What may follow an operator on this field, for "expected ... after" messages."""
    if kind is Kind.ATTRIBUTE:
        return "a number or a string" if ordered else "a value"
    return {
        Kind.PROFILE_TEXT: "a string",
        Kind.DEVICE_TEXT: "a string",
        Kind.VERSION: 'a version string like "3.2"',
        Kind.TIME: 'a date ("2024-05-01") or a duration like 7d ago',
        Kind.LOCAL_HOUR: "a number",
        Kind.FLAG: "true or false",
    }[kind]


def _check(field: str, kind: Kind, value: Value, tok: Token, after: Token) -> Value:
    """Type-check a literal against its field; returns it (normalized) or raises."""
    where = after.describe()
    if kind is Kind.ATTRIBUTE:
        if isinstance(value, Ago):
            raise QueryError(
                f'"{tok.text} ago" only works on created_at and last_seen_at; compare '
                f"{field} with a string, a number, true or false", tok.pos)
        return value
    if kind in (Kind.PROFILE_TEXT, Kind.DEVICE_TEXT):
        if not isinstance(value, Str):
            raise QueryError(f"expected a string after {where} ({field} is text)", tok.pos)
        return Str(value.value.upper()) if field == "country" else value
    if kind is Kind.VERSION:
        if not isinstance(value, Str):
            raise QueryError(f'expected a version string like "3.2" after {where}', tok.pos)
        if version_key(value.value) is None:
            raise QueryError(f'{tok.text} is not a version (expected something like "3.2.1")',
                             tok.pos)
        return value
    if kind is Kind.TIME:
        if isinstance(value, Ago):
            return value
        if isinstance(value, Str):
            if parse_datetime(value.value) is None:
                raise QueryError(
                    f'{tok.text} is not a date (expected "2024-05-01", "2024-05-01T10:00:00Z" '
                    'or a duration like 7d ago)', tok.pos)
            return value
        raise QueryError(
            f'expected a date ("2024-05-01") or a duration like 7d ago after {where}', tok.pos)
    if kind is Kind.LOCAL_HOUR:
        if not isinstance(value, Num):
            raise QueryError(f"expected a number after {where}", tok.pos)
        if not float(value.value).is_integer() or not 0 <= value.value <= 23:
            raise QueryError("local_hour takes a whole hour from 0 to 23", tok.pos)
        return Num(int(value.value))
    if kind is Kind.FLAG:
        if not isinstance(value, Bool):
            raise QueryError(f"expected true or false after {where}", tok.pos)
        return value
    raise AssertionError(kind)
