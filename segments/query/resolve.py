"""Inlining `segment("name")` references, with unknown names and cycles reported in place."""

from __future__ import annotations

from collections.abc import Callable

from segments.query.ast import And, Node, Not, Or, SegmentRef, walk
from segments.query.errors import QueryError
from segments.query.parser import parse

Lookup = Callable[[str], "str | None"]
MAX_DEPTH = 32


def referenced_segments(node: Node) -> set[str]:
    """Names of the segments this (unresolved) query refers to directly."""
    return {n.name for n in walk(node) if isinstance(n, SegmentRef)}


def is_resolved(node: Node) -> bool:
    return not any(isinstance(n, SegmentRef) for n in walk(node))


def resolve(node: Node, lookup: Lookup, *, name: str | None = None) -> Node:
    """Replace every `segment("x")` by x's own (resolved) query.

    `lookup(name)` returns a segment's query text, or None when there is no such segment.
    `name` is the segment this query belongs to, if any, so that a query referring back to
    its own segment is caught as a cycle. Every error, including one inside a referenced
    segment's text, is a QueryError positioned at the outer query's `segment(` call.
    """
    return _Resolver(lookup).resolve(node, (name,) if name is not None else ())


class _Resolver:
    def __init__(self, lookup: Lookup):
        self.lookup = lookup
        self.done: dict[str, Node] = {}

    def resolve(self, node: Node, stack: tuple[str, ...]) -> Node:
        if isinstance(node, SegmentRef):
            return self.inline(node, stack)
        if isinstance(node, (And, Or)):
            items = tuple(self.resolve(i, stack) for i in node.items)
            return node if items == node.items else type(node)(items)
        if isinstance(node, Not):
            item = self.resolve(node.item, stack)
            return node if item is node.item else Not(item)
        return node

    def inline(self, ref: SegmentRef, stack: tuple[str, ...]) -> Node:
        name = ref.name
        if name in stack:
            chain = stack[stack.index(name) + 1:]
            if chain:
                through = ", ".join(f'"{n}"' for n in chain)
                raise _located(f'segment "{name}" refers to itself through {through}', ref.position)
            raise _located(f'segment "{name}" refers to itself', ref.position)
        if name in self.done:
            return self.done[name]
        if len(stack) >= MAX_DEPTH:
            raise QueryError("segments refer to each other too deeply", ref.position)
        text = self.lookup(name)
        if text is None:
            raise QueryError(f'unknown segment "{name}"', ref.position)
        try:
            resolved = self.resolve(parse(text), stack + (name,))
        except QueryError as exc:
            # Report at this reference: a position inside another segment's text means
            # nothing to whoever is editing this query. Name the segment where it went wrong
            # once, at the innermost level.
            message = exc.message if getattr(exc, "located", False) else (
                f'in segment "{name}": {exc.message}')
            raise _located(message, ref.position) from exc
        self.done[name] = resolved
        return resolved


def _located(message: str, position: int) -> QueryError:
    err = QueryError(message, position)
    err.located = True  # says which segment it is about, or needs no saying (a cycle)
    return err
