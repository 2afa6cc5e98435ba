"""Query text to tokens, each with its 0-based offset for error messages."""

from __future__ import annotations

import dataclasses
import enum
import re

from segments.query.errors import QueryError


class T(enum.StrEnum):
    STRING = "string"
    NUMBER = "number"
    QUANTITY = "quantity"  # a number with a unit glued on: 7d, 25km
    WORD = "word"          # keyword, field or property name (may contain dots)
    OP = "op"              # = != < <= > >=
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    END = "end"


@dataclasses.dataclass(frozen=True)
class Token:
    kind: T
    text: str  # as written
    pos: int
    value: object = None  # STRING: str; NUMBER: int|float; QUANTITY: (number, unit)

    def describe(self) -> str:
        if self.kind is T.END:
            return "the end of the query"
        return f'"{self.text}"' if self.kind is not T.STRING else self.text

    def is_word(self, *words: str) -> bool:
        return self.kind is T.WORD and self.text.lower() in words


_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_UNIT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]*)*")
_OPS = ("!=", "<=", ">=", "=", "<", ">")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while True:
        m = _SPACE.match(text, i)
        if m:
            i = m.end()
        if i >= n:
            tokens.append(Token(T.END, "", n))
            return tokens
        c = text[i]
        if c in "\"'":
            tok, i = _string(text, i)
            tokens.append(tok)
            continue
        if c.isdigit() or (c == "-" and i + 1 < n and text[i + 1].isdigit()):
            tok, i = _number(text, i)
            tokens.append(tok)
            continue
        m = _WORD.match(text, i)
        if m:
            tokens.append(Token(T.WORD, m.group(), i))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(Token(T.OP, op, i))
                i += len(op)
                break
        else:
            if c in "(),":
                tokens.append(Token(T(c), c, i))
                i += 1
            elif c == "!":
                raise QueryError('unexpected "!" (did you mean "!="?)', i)
            else:
                raise QueryError(f'unexpected character "{c}"', i)


def _string(text: str, start: int) -> tuple[Token, int]:
    quote = text[start]
    out = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            value = "".join(out)
            if "\x00" in value:
                raise QueryError("strings may not contain the NUL character", start)
            return Token(T.STRING, text[start:i + 1], start, value), i + 1
        if c == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt not in _ESCAPES:
                raise QueryError(f'unknown escape "\\{nxt}" in string (use \\" or \\\\)', i)
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(c)
        i += 1
    raise QueryError("unterminated string", start)


def _number(text: str, start: int) -> tuple[Token, int]:
    m = _NUMBER.match(text, start)
    raw = m.group()
    i = m.end()
    if i < len(text) and text[i] == "." :
        raise QueryError(f'malformed number "{raw}."', start)
    value: int | float = float(raw) if "." in raw else int(raw)
    unit = _UNIT.match(text, i)
    if unit:
        return Token(T.QUANTITY, text[start:unit.end()], start, (value, unit.group())), unit.end()
    return Token(T.NUMBER, raw, start, value), i
