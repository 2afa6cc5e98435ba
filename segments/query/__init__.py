"""The segment query language: text -> AST (parser) -> SQL (sql) or a Python predicate (memory).

    node = resolve(parse(text), lookup)          # inline segment("...") references
    stmt = select_user_ids(node, app_id=..., now=..., dialect="postgresql")
    keep = compile_predicate(node, now)(profile)  # the same answer for one person
"""

from segments.query.ast import Node, to_text
from segments.query.errors import QueryError
from segments.query.memory import (
    DeviceView, EventView, Profile, compile_predicate, evaluate, load_profile,
    referenced_event_names,
)
from segments.query.parser import parse
from segments.query.resolve import is_resolved, referenced_segments, resolve
from segments.query.sql import select_user_ids, user_condition

__all__ = [
    "DeviceView", "EventView", "Node", "Profile", "QueryError", "compile_predicate", "evaluate",
    "is_resolved", "load_profile", "parse", "referenced_event_names", "referenced_segments",
    "resolve", "select_user_ids", "to_text", "user_condition",
]
