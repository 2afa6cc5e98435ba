"""The one error the query language raises, with where in the text it went wrong."""

from __future__ import annotations

from tidings.errors import InvalidError


class QueryError(InvalidError):
    """A query that does not parse, names an unknown field or segment, or refers to itself.

    `details` is `{"field": "query", "position": <0-based offset into the query text>}`.
    """

    def __init__(self, message: str, position: int, field: str = "query"):
        super().__init__(message, {"field": field, "position": position})
        self.position = position
