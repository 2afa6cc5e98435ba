"""Content templates: every string of a variant's content is a sandboxed Jinja2 template.

Where it sits: once a user's target and variant are picked, the variant's content is rendered
here for that user, the same way on every path (send, in-app pull, preview). Marketers write
the templates, users' attributes fill them, so both count as untrusted:

* ``ImmutableSandboxedEnvironment`` with the globals cut to a capped ``range`` and the filters
  cut to a list that is useful for messages; attribute access and method calls are limited to
  a short list of read-only ``str``/``dict``/``list`` methods (no ``str.format``); templates
  cannot import, include, extend, define macros or blocks, or loop recursively, and there is
  no loader, so nothing is read from disk.
* The context holds only plain dicts, lists, strings, numbers, booleans (``build_context``).
* Jinja cannot time out a render, so the work a render may do is bounded instead: every loop
  iteration, ``range`` item and item handed to a filter or method costs a step
  (``MAX_STEPS``); no value built during a render may exceed the output limit of its kind
  (``*``, ``+``, ``~``, ``%``, ``replace``, ``join``, ...), numbers are capped at
  ``MAX_INT_BITS`` and format widths at ``MAX_FORMAT_WIDTH``; checks run before the big
  allocation where the size can be known in advance. Rendered strings are capped per kind
  (``MAX_TEXT_LENGTH``, ``MAX_HTML_LENGTH``, ``SMS_MAX_LENGTH`` for SMS bodies).
* Every failure while rendering becomes a ``RenderError`` naming the content path and the
  template line, which the caller records on the delivery; nothing else escapes ``render``.

Undefined values render as an empty string and chain (``user.attr.missing.deeper``), so
``default(...)`` works on anything missing. ``None`` also renders as an empty string, and
``build_context`` drops ``None`` values so that ``default`` applies to them too.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jinja2 import ChainableUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, pass_context
from jinja2.visitor import NodeTransformer

from tidings.errors import InvalidError, TidingsError

__all__ = [
    "MAX_HTML_LENGTH",
    "MAX_STEPS",
    "MAX_TEXT_LENGTH",
    "SMS_MAX_LENGTH",
    "CompiledContent",
    "InvalidTemplateError",
    "Kind",
    "RenderError",
    "TemplateProblem",
    "build_context",
    "compile_content",
    "default_kind",
    "render_string",
    "validate_content",
]

Kind = Literal["text", "html"]

#: Longest rendered string of plain-text content (push, in-app titles and buttons, hooks).
MAX_TEXT_LENGTH = 10_000
#: Longest rendered in-app ``html`` document.
MAX_HTML_LENGTH = 100_000
#: Longest rendered SMS body: ten concatenated segments, as Twilio allows.
SMS_MAX_LENGTH = 1_600
#: Longest template source, per kind: twice what it may render.
MAX_SOURCE_LENGTH = {"text": 2 * MAX_TEXT_LENGTH, "html": 2 * MAX_HTML_LENGTH}
#: Work allowed per rendered string: loop iterations, range items, items through filters.
MAX_STEPS = 100_000
#: Characters a render may produce in total (output, buffers, set blocks) per output limit.
PRODUCED_FACTOR = 10
#: Largest ``range()``.
MAX_RANGE = 1_000
#: Longest list or tuple a template may build.
MAX_ITEMS = 10_000
#: Largest integer a template may build, in bits (about 1,200 decimal digits).
MAX_INT_BITS = 4_096
#: Largest width or precision in a ``%`` format (``"%5d"``).
MAX_FORMAT_WIDTH = 100
#: Deepest nesting of content or of context values.
MAX_DEPTH = 32

#: Per-channel limits on rendered strings, by content path.
CHANNEL_LIMITS: dict[str, dict[str, int]] = {"sms": {"body": SMS_MAX_LENGTH}}

#: Built-in profile fields available as ``user.<field>``; the phone number never is.
PROFILE_FIELDS = ("language", "country", "region", "city", "timezone")
_RESERVED_USER_KEYS = frozenset({"id", "attr", "phone", *PROFILE_FIELDS})

_KIND_LIMITS: dict[str, int] = {"text": MAX_TEXT_LENGTH, "html": MAX_HTML_LENGTH}
_LOOP_FILTER = "_tidings_loop"
_CAP_FILTER = "_tidings_cap"


# -- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """Why one content string is not a valid template.

    Attributes:
        path: JSON path of the string inside the content, e.g. ``buttons[1].label``.
        line: 1-based line of the template, when known.
        message: what is wrong, e.g. ``unexpected '}'``.
    """

    path: str
    line: int | None
    message: str

    def describe(self, prefix: str = "content") -> str:
        """``content.body line 2: unexpected '}'``; a caller may prepend the variant."""
        where = _join_prefix(prefix, self.path)
        return (
            f"{where} line {self.line}: {self.message}" if self.line else f"{where}: {self.message}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}

    def __str__(self) -> str:
        return self.describe()


class InvalidTemplateError(InvalidError):
    """Content holds strings that are not valid templates (422); ``problems`` says where."""

    code = "invalid_template"

    def __init__(self, problems: Sequence[TemplateProblem], prefix: str = "content"):
        self.problems = list(problems)
        super().__init__(
            "; ".join(p.describe(prefix) for p in self.problems),
            {"problems": [p.as_dict() for p in self.problems]},
        )


class RenderError(TidingsError):
    """Rendering one user's content failed; the message says where and why.

    Attributes:
        path: JSON path of the string that failed, when known.
        line: template line, when known.
        reason: the failure without its location.
    """

    status = 422
    code = "render_failed"

    def __init__(self, reason: str, path: str | None = None, line: int | None = None):
        self.reason = reason
        self.path = path
        self.line = line
        where = path if path is not None else ""
        if line:
            where = f"{where} line {line}" if where else f"line {line}"
        message = f"{where}: {reason}" if where else reason
        super().__init__(message, {"path": path, "line": line})

    def located(self, path: str, line: int | None) -> RenderError:
        """The same error with its path (and line, if it had none) filled in."""
        if self.path is not None:
            return self
        located = RenderError(self.reason, path, self.line or line)
        located.__cause__ = self.__cause__
        return located


# -- per-render budget -----------------------------------------------------------------------


class _Budget:
    """What is left of one render's allowance; shared by the guards through a ContextVar.

    ``max_string`` caps every string built, ``max_structure`` the text size of every list or
    dict built (shared parts counted each time they occur, as printing would).
    """

    __slots__ = ("max_string", "max_structure", "steps", "chars")

    def __init__(self, max_string: int):
        self.max_string = max_string
        self.max_structure = PRODUCED_FACTOR * max_string
        self.steps = MAX_STEPS
        self.chars = PRODUCED_FACTOR * max_string

    def step(self, cost: int = 1) -> None:
        self.steps -= cost
        if self.steps < 0:
            raise RenderError(
                f"the template does too much work (more than {MAX_STEPS:,} loop iterations "
                "and items)"
            )

    def produce(self, count: int) -> None:
        self.chars -= count
        if self.chars < 0:
            raise RenderError(
                f"the template produces more than {PRODUCED_FACTOR * self.max_string:,} characters"
            )


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "tidings_template_budget", default=None
)


def _current() -> _Budget:
    budget = _budget.get()
    # Outside a render (constants folded while compiling): limits, but nothing accumulates.
    return budget if budget is not None else _Budget(MAX_TEXT_LENGTH)


def _cost(value: Any) -> int:
    if isinstance(value, str):
        return 1 + len(value) // 100
    if isinstance(value, (list, tuple, dict, set, frozenset, range)):
        return 1 + len(value)
    return 1


def _measure(roots: Sequence[Any], limit: int) -> int:
    """About how long ``roots`` are as text; stops as soon as that passes ``limit``.

    Shared parts count every time they occur: ``[a] * 9000`` of a big ``a`` is as big as its
    text would be. Iterative, and it visits at most about ``limit / 2`` values, so measuring
    costs little even for a structure that would print as terabytes.
    """
    size = 0
    visited = 0
    stack: list[Iterator[Any]] = [iter(roots)]
    while stack and size <= limit:
        for value in stack[-1]:
            visited += 1
            if isinstance(value, str):
                size += len(value) + 2
            elif isinstance(value, (list, tuple)):
                size += 2
                stack.append(iter(value))
                break
            elif isinstance(value, dict):
                size += 2
                stack.append(itertools.chain.from_iterable(value.items()))
                break
            else:
                size += 8
            if size > limit:
                break
        else:
            stack.pop()
    _current().step(visited // 10)
    return size


def _check_value(value: Any) -> Any:
    """Refuse values too big to keep building on; returns the value."""
    if isinstance(value, str):
        limit = _current().max_string
        if len(value) > limit:
            raise RenderError(f"a value longer than {limit:,} characters was built")
    elif isinstance(value, (list, tuple, dict)):
        if len(value) > MAX_ITEMS:
            raise RenderError(f"a list longer than {MAX_ITEMS:,} items was built")
        limit = _current().max_structure
        if _measure([value], limit) > limit:
            raise RenderError(f"a list or object longer than {limit:,} characters was built")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise RenderError(f"numbers above {MAX_INT_BITS:,} bits are not allowed")
    return value


def _check_length(length: int) -> None:
    limit = _current().max_string
    if length > limit:
        raise RenderError(f"a value longer than {limit:,} characters would be built")


def _check_items(count: int) -> None:
    if count > MAX_ITEMS:
        raise RenderError(f"a list longer than {MAX_ITEMS:,} items would be built")


_PRINTF = re.compile(r"%%|%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?([a-zA-Z])?")


def _check_printf(fmt: str) -> None:
    for match in _PRINTF.finditer(fmt):
        width, precision, conversion = match.groups()
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_FORMAT_WIDTH):
                raise RenderError(
                    f"format widths and precisions above {MAX_FORMAT_WIDTH} are not allowed"
                )
        if conversion in ("r", "a"):
            raise RenderError(f"'%{conversion}' formatting is not allowed in content")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (str, list, tuple))


def _check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse an operation before it builds something oversized."""
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if _is_sequence(seq) and _is_int(times) and times > 0:
                _check_size(seq, len(seq) * times)
                if not isinstance(seq, str):
                    limit = _current().max_structure
                    if _measure([seq], limit) * times > limit:
                        raise RenderError(f"a list longer than {limit:,} characters would be built")
        if (
            _is_int(left)
            and _is_int(right)
            and (left.bit_length() + right.bit_length() > MAX_INT_BITS + 1)
        ):
            raise RenderError(f"numbers above {MAX_INT_BITS:,} bits are not allowed")
    elif op == "**":
        if (
            _is_int(left)
            and _is_int(right)
            and right > 0
            and abs(left) > 1
            and (abs(left).bit_length() - 1) * right > MAX_INT_BITS
        ):
            raise RenderError(f"numbers above {MAX_INT_BITS:,} bits are not allowed")
    elif op == "+":
        if _is_sequence(left) and _is_sequence(right):
            _check_size(left, len(left) + len(right))
    elif op == "%" and isinstance(left, str):
        _check_printf(left)


def _check_size(like: Any, size: int) -> None:
    if isinstance(like, str):
        _check_length(size)
    else:
        _check_items(size)


def _replacement_length(text: str, old: str, new: str, count: Any) -> int:
    hits = len(text) + 1 if old == "" else text.count(old)
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _join_length(items: list[Any], separator: str) -> int:
    size = len(separator) * max(len(items) - 1, 0)
    size += sum(len(item) for item in items if isinstance(item, str))
    others = [item for item in items if not isinstance(item, str)]
    return size + _measure(others, _current().max_string) if others else size


# -- the environments ------------------------------------------------------------------------


class _NotText:
    """A callable a template can reach but must call, never print: text of it is refused.

    Printing Python functions would put reprs (names, addresses) into messages.
    """

    __slots__ = ()

    def __str__(self) -> str:
        raise RenderError(f"{self!r} must be called with (), it is not a value")

    def __html__(self) -> str:
        return self.__str__()

    def __format__(self, spec: str) -> str:
        return self.__str__()


class _Range(_NotText):
    """``range()`` capped at ``MAX_RANGE`` items; returns a list, charged to the budget."""

    __slots__ = ()

    def __call__(self, *args: int) -> list[int]:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise RenderError(f"range() is limited to {MAX_RANGE:,} items")
        _current().step(len(numbers))
        return list(numbers)

    def __repr__(self) -> str:
        return "range"


class _Method(_NotText):
    """An allowed bound method (``name.upper``), handed to templates in place of the method."""

    __slots__ = ("bound",)

    def __init__(self, bound: Any):
        self.bound = bound

    def __repr__(self) -> str:
        return str.__str__(getattr(self.bound, "__name__", "method"))


_capped_range = _Range()


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter: charge its input to the budget, run checks, refuse oversized results.

    Wrapped filters take the context, which also keeps Jinja from running them at compile
    time to fold constants, where no budget applies.
    """
    pass_arg = _PassArg.from_obj(func)

    @pass_context
    def guarded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        _current().step(_cost(value))
        value, args, kwargs = _FILTER_CHECKS.get(name, _no_check)(value, args, kwargs)
        if pass_arg is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        if isinstance(result, Iterator) and not isinstance(result, str):
            # map, select, unique, reverse, items... return iterators: make them plain lists
            # (their text would be a Python repr), never longer than MAX_ITEMS.
            result = list(itertools.islice(result, MAX_ITEMS + 1))
            _current().step(len(result))
        return _check_value(result)

    guarded.__name__ = f"guarded_{name}"
    return guarded


def _no_check(value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    return value, args, kwargs


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _check_replace_filter(value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    old, new = _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", "")
    count = _arg(args, kwargs, 2, "count", None)
    if not isinstance(value, Undefined):
        _check_length(_replacement_length(str(value), str(old), str(new), count))
    return value, args, kwargs


def _check_join_filter(value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    if isinstance(value, Undefined):
        return value, args, kwargs
    items = list(value)
    _check_items(len(items))
    separator = str(_arg(args, kwargs, 0, "d", ""))
    if _arg(args, kwargs, 1, "attribute", None) is None:
        _check_length(_join_length(items, separator))
    return items, args, kwargs


def _check_format_filter(value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    if isinstance(value, str):
        _check_printf(value)
    return value, args, kwargs


def _check_tojson_filter(value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    indent = _arg(args, kwargs, 0, "indent", None)
    if indent is not None and not (_is_int(indent) and 0 <= indent <= 8):
        raise RenderError("tojson indent must be a number from 0 to 8")
    return value, args, kwargs


def _check_sum_filter(value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    start = _arg(args, kwargs, 1, "start", 0)
    if isinstance(start, bool) or not isinstance(start, (int, float)):
        raise RenderError("sum can only add numbers")
    return value, args, kwargs


_FILTER_CHECKS: dict[str, Callable[[Any, tuple, dict], tuple[Any, tuple, dict]]] = {
    "replace": _check_replace_filter,
    "join": _check_join_filter,
    "format": _check_format_filter,
    "tojson": _check_tojson_filter,
    "sum": _check_sum_filter,
}

#: Jinja's built-in filters that content may use. Left out: ``attr`` (reflection), ``random``
#: (a preview must equal the send), ``safe`` (HTML from attributes would skip escaping),
#: ``pprint``, ``xmlattr``, ``urlize``, ``filesizeformat``, ``groupby`` (its groups print as
#: Python reprs), and the padding ones whose size is an argument (``center``, ``indent``,
#: ``wordwrap``, ``batch``, ``slice``).
ALLOWED_FILTERS = (
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
    "forceescape", "format", "int", "items", "join", "last", "length", "list",
    "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round",
    "select", "selectattr", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
    "truncate", "unique", "upper", "urlencode", "wordcount",
)  # fmt: skip

#: Read-only methods a template may call, by receiver type.
_ALLOWED_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (
        str,
        frozenset(
            "capitalize casefold count endswith find index isalnum isalpha isdecimal isdigit "
            "islower isnumeric isspace istitle isupper join lower lstrip partition removeprefix "
            "removesuffix replace rfind rindex rpartition rsplit rstrip split splitlines "
            "startswith strip swapcase title upper".split()
        ),
    ),
    (dict, frozenset({"get", "items", "keys", "values"})),
    ((list, tuple), frozenset({"count", "index"})),  # type: ignore[arg-type]
    (LoopContext, frozenset({"cycle", "changed"})),
)


def _allowed_method(obj: Any, name: str) -> bool:
    return any(isinstance(obj, kind) and name in names for kind, names in _ALLOWED_METHODS)


def _literal_chars(body: Iterable[nodes.Node]) -> int:
    """Literal text a loop body emits per iteration; nested loops charge their own bodies."""
    total = 0
    for node in body:
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif isinstance(node, nodes.For):
            total += _literal_chars(node.else_)
        else:
            total += _literal_chars(node.iter_child_nodes())
    return total


_FORBIDDEN_NODES: dict[type, str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Block: "block",
}


class _Guard(NodeTransformer):
    """Rejects what content may not do; routes loops, ``~`` and literals through the guards."""

    def __init__(self, name: str | None, filename: str | None):
        self.name = name
        self.filename = filename

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> nodes.Node:
        tag = _FORBIDDEN_NODES.get(type(node))
        if tag is not None:
            raise TemplateSyntaxError(
                f"'{{% {tag} %}}' is not allowed in content", node.lineno, self.name, self.filename
            )
        return super().generic_visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise TemplateSyntaxError(
                "recursive loops are not allowed in content", node.lineno, self.name, self.filename
            )
        chars = _literal_chars(node.body)
        node = self.generic_visit(node)
        node.iter = nodes.Filter(
            node.iter, _LOOP_FILTER, [nodes.Const(chars)], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Name(self, node: nodes.Name) -> nodes.Node:
        # ``self`` and a bare ``loop`` are Jinja objects whose text is a Python repr.
        if node.name == "self":
            self._fail("'self' is not available in content", node)
        if node.name == "loop":
            self._fail("use loop.index, loop.first, loop.cycle(...): not loop itself", node)
        return node

    def visit_Getattr(self, node: nodes.Getattr) -> nodes.Node:
        if isinstance(node.node, nodes.Name) and node.node.name == "loop":
            return node  # loop.index and friends
        return self.generic_visit(node)

    def _fail(self, message: str, node: nodes.Node) -> None:
        raise TemplateSyntaxError(message, node.lineno, self.name, self.filename)

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        return self._capped(node)

    # Literals too: [a, a, a] nested in a few {% set %} lines grows exponentially.
    def visit_List(self, node: nodes.List) -> nodes.Node:
        return self._capped(node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        return self._capped(node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        if node.ctx != "load":  # an assignment target: {% for k, v in ... %}
            return self.generic_visit(node)
        return self._capped(node)

    def _capped(self, node: nodes.Expr) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Filter(node, _CAP_FILTER, [], [], None, None, lineno=node.lineno)


@pass_context
def _loop_guard(context: Any, iterable: Any, literal_chars: int = 0) -> Any:
    budget = _current()
    for item in iterable:
        budget.step()
        if literal_chars:
            budget.produce(literal_chars)
        yield item


@pass_context
def _cap_guard(context: Any, value: Any) -> Any:
    _current().step()
    return _check_value(value)


class _ContentEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox narrowed to what message content needs (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool):
        super().__init__(
            autoescape=autoescape,
            undefined=ChainableUndefined,
            finalize=_finalize,
            loader=None,
            cache_size=0,
            auto_reload=False,
            keep_trailing_newline=True,
        )
        self.globals.clear()
        self.globals["range"] = _capped_range
        self.filters = {
            name: _guard_filter(name, DEFAULT_FILTERS[name]) for name in ALLOWED_FILTERS
        }
        self.filters[_LOOP_FILTER] = _loop_guard
        self.filters[_CAP_FILTER] = _cap_guard

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        tree = _Guard(name, filename).visit(tree)
        tree.set_environment(self)
        return tree

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if callable(value) and not isinstance(value, Undefined):
            return _allowed_method(obj, attr)
        return True

    def wrap_str_format(self, value: Any) -> None:
        # str.format is not on the method list at all, so there is nothing to wrap.
        return None

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Plain data first: user.attr.items is the attribute "items", not dict.items.
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return _wrap_method(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _wrap_method(super().getitem(obj, argument))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _check_value(self.binop_table[operator](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if isinstance(__obj, Undefined):
            return __context.call(__obj, *args, **kwargs)  # raises the undefined error
        if __obj is _capped_range:
            return __context.call(__obj, *args, **kwargs)
        if not isinstance(__obj, _Method):
            raise RenderError(f"calling {_describe(__obj)} is not allowed in content")
        bound = __obj.bound
        receiver = bound.__self__
        name = bound.__name__
        if not _allowed_method(receiver, name):  # getattr checked already; belt and braces
            raise RenderError(f"calling {name!r} is not allowed in content")
        _current().step(_cost(receiver))
        if isinstance(receiver, str) and name == "replace" and len(args) >= 2:
            _check_length(
                _replacement_length(
                    receiver, str(args[0]), str(args[1]), _arg(args, kwargs, 2, "count", -1)
                )
            )
        elif isinstance(receiver, str) and name == "join" and args:
            items = list(args[0])
            _check_items(len(items))
            _check_length(_join_length(items, receiver))
            args = (items, *args[1:])
        result = __context.call(bound, *args, **kwargs)
        if isinstance(result, _DICT_VIEWS):
            result = list(result)
        return _check_value(result)


_DICT_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))


def _wrap_method(value: Any) -> Any:
    if isinstance(value, (types.BuiltinMethodType, types.MethodType)):
        return _Method(value)
    return value


def _describe(value: Any) -> str:
    if isinstance(value, _NotText):
        return f"{value!r} without calling it"
    if isinstance(value, Iterator):
        return "an iterator (add |list or |join)"
    if callable(value):
        return "a function or method"
    return "a value that is not text"


def _is_plain(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if value is None or isinstance(value, (str, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _is_plain(item, depth + 1) for key, item in value.items()
        )
    return False


def _finalize(value: Any) -> Any:
    """What ``{{ ... }}`` may output: text, numbers, and plain lists/dicts (as JSON)."""
    if value is None:
        return ""
    if isinstance(value, Undefined):
        return value
    if isinstance(value, str):
        _current().produce(len(value))
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (list, tuple, dict)):
        limit = _current().max_string
        if _measure([value], limit) > limit:
            raise RenderError(f"a list or object longer than {limit:,} characters was output")
    if isinstance(value, (list, tuple, dict)) and _is_plain(value):
        text = json.dumps(value, ensure_ascii=False)
        _check_value(text)
        _current().produce(len(text))
        return text
    raise RenderError(f"cannot output {_describe(value)}")


_ENVIRONMENTS: dict[str, _ContentEnvironment] = {
    "text": _ContentEnvironment(autoescape=False),
    "html": _ContentEnvironment(autoescape=True),
}


@lru_cache(maxsize=4096)
def _compile(kind: str, source: str) -> JinjaTemplate:
    """Parse once per (kind, source): hot paths render the same strings over and over."""
    token = _budget.set(_Budget(_KIND_LIMITS[kind]))
    try:
        return _ENVIRONMENTS[kind].from_string(source)
    finally:
        _budget.reset(token)


# -- content ---------------------------------------------------------------------------------


def default_kind(path: str) -> Kind:
    """In-app ``html`` is HTML (autoescaped); every other string is plain text."""
    return "html" if path == "html" else "text"


@dataclass(frozen=True, slots=True)
class _Leaf:
    path: str
    kind: str
    limit: int
    template: JinjaTemplate
    constant: str | None = None  # the output, when the source holds no template syntax

    def render(self, context: Mapping[str, Any]) -> str:
        if self.constant is not None:
            return self.constant
        budget = _Budget(_KIND_LIMITS[self.kind])
        token = _budget.set(budget)
        chunks = None
        try:
            chunks = self.template.generate(dict(context))
            parts = []
            size = 0
            for chunk in chunks:
                size += len(chunk)
                if size > self.limit:
                    raise RenderError(f"rendered text is longer than {self.limit:,} characters")
                parts.append(chunk)
            return str("".join(parts))
        except RenderError as exc:
            raise exc.located(self.path, _template_line(exc)) from exc.__cause__
        except Exception as exc:  # every failure is the content's, reported on the delivery
            raise RenderError(_reason(exc), self.path, _template_line(exc)) from exc
        finally:
            if chunks is not None:
                chunks.close()
            _budget.reset(token)


class CompiledContent:
    """A variant's content with every string parsed once; ``render`` fills it for one user."""

    __slots__ = ("_tree", "constant")

    def __init__(self, tree: Any):
        self._tree = tree
        # True when no string holds template syntax: every user gets the same content, and
        # callers may skip building a context (render ignores it).
        self.constant = _is_constant(tree)

    def render(self, context: Mapping[str, Any]) -> Any:
        """The content, same shape, every string rendered; other leaves unchanged.

        Raises:
            RenderError: any string failed; nothing else is raised.
        """
        return _render_tree(self._tree, context)


def _is_constant(node: Any) -> bool:
    if isinstance(node, _Leaf):
        return node.constant is not None
    if isinstance(node, dict):
        return all(_is_constant(value) for value in node.values())
    if isinstance(node, list):
        return all(_is_constant(value) for value in node)
    return True


def _render_tree(node: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(node, _Leaf):
        return node.render(context)
    if isinstance(node, dict):
        return {key: _render_tree(value, context) for key, value in node.items()}
    if isinstance(node, list):
        return [_render_tree(value, context) for value in node]
    return node


def compile_content(
    content: Mapping[str, Any],
    *,
    channel: str | None = None,
    kind_for_path: Callable[[str], Kind] = default_kind,
) -> CompiledContent:
    """Parse every string of ``content`` (cached by source) for rendering.

    Args:
        content: a variant's content, any JSON shape.
        channel: ``"sms"`` caps the rendered ``body`` at ``SMS_MAX_LENGTH``.
        kind_for_path: ``"html"`` or ``"text"`` for a string's JSON path (``buttons[0].label``);
            by default only the in-app ``html`` field is HTML.

    Raises:
        InvalidTemplateError: a string is not a valid template; all problems are listed.
    """
    problems: list[TemplateProblem] = []
    tree = _compile_tree(content, "", 0, channel, kind_for_path, problems)
    if problems:
        raise InvalidTemplateError(problems)
    return CompiledContent(tree)


def validate_content(
    content: Mapping[str, Any],
    *,
    channel: str | None = None,
    kind_for_path: Callable[[str], Kind] = default_kind,
) -> list[TemplateProblem]:
    """Every template problem in ``content``, for save-time 422s; empty when all is well."""
    problems: list[TemplateProblem] = []
    _compile_tree(content, "", 0, channel, kind_for_path, problems)
    return problems


def render_string(
    source: str, context: Mapping[str, Any], *, kind: Kind = "text", max_length: int | None = None
) -> str:
    """Render one template string; raises InvalidTemplateError or RenderError."""
    limit = max_length if max_length is not None else _KIND_LIMITS[kind]
    problems: list[TemplateProblem] = []
    leaf = _compile_leaf(source, "", kind, limit, problems)
    if leaf is None:
        raise InvalidTemplateError(problems)
    return leaf.render(context)


def _compile_tree(
    node: Any,
    path: str,
    depth: int,
    channel: str | None,
    kind_for_path: Callable[[str], Kind],
    problems: list[TemplateProblem],
) -> Any:
    if depth > MAX_DEPTH:
        problems.append(TemplateProblem(path, None, f"content is nested deeper than {MAX_DEPTH}"))
        return None
    if isinstance(node, str):
        kind = kind_for_path(path)
        if kind not in _KIND_LIMITS:
            raise ValueError(f"kind_for_path returned {kind!r}, not 'text' or 'html'")
        limit = CHANNEL_LIMITS.get(channel or "", {}).get(path, _KIND_LIMITS[kind])
        return _compile_leaf(node, path, kind, limit, problems)
    if isinstance(node, Mapping):
        return {
            key: _compile_tree(
                value, _join_path(path, key), depth + 1, channel, kind_for_path, problems
            )
            for key, value in node.items()
        }
    if isinstance(node, (list, tuple)):
        return [
            _compile_tree(value, f"{path}[{index}]", depth + 1, channel, kind_for_path, problems)
            for index, value in enumerate(node)
        ]
    return node


def _compile_leaf(
    source: str, path: str, kind: str, limit: int, problems: list[TemplateProblem]
) -> _Leaf | None:
    if len(source) > MAX_SOURCE_LENGTH[kind]:
        problems.append(
            TemplateProblem(
                path, None, f"template is longer than {MAX_SOURCE_LENGTH[kind]:,} characters"
            )
        )
        return None
    try:
        template = _compile(kind, source)
    except TemplateSyntaxError as exc:
        problems.append(TemplateProblem(path, exc.lineno, exc.message or "invalid template"))
        return None
    except Exception as exc:  # e.g. RecursionError on absurd nesting
        problems.append(TemplateProblem(path, None, _reason(exc)))
        return None
    # Text without any of Jinja's delimiters renders to itself (HTML too: autoescape only
    # touches expressions; Jinja would only turn \r\n into \n), so it skips the template.
    plain = len(source) <= limit and "\r" not in source and not _SYNTAX.search(source)
    return _Leaf(path, kind, limit, template, source if plain else None)


_SYNTAX = re.compile(r"\{[{%#]")


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _join_path(path: str, key: Any) -> str:
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key if isinstance(key, str) else str(key), ensure_ascii=False)}]"


def _join_prefix(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if not prefix:
        return path
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def _template_line(exc: BaseException) -> int | None:
    """The template line the exception came from (Jinja rewrites tracebacks to point there)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "the template nests too deeply"
    if isinstance(exc, MemoryError):
        return "the template needs too much memory"
    text = str(exc).strip()
    return text if text else type(exc).__name__


# -- context ---------------------------------------------------------------------------------


def build_context(
    profile_fields: Mapping[str, Any],
    attributes: Mapping[str, Any] | None,
    *,
    external_id: str | int,
    campaign: Mapping[str, Any] | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """The variables a template sees, built fresh from plain values.

    ``user`` holds ``id`` (the external id), the profile fields in ``PROFILE_FIELDS``, ``attr``
    (every custom attribute) and every custom attribute again at the top level unless its name
    is taken (``id``, ``attr``, ``phone`` or a profile field). The phone number is never
    included. ``None`` values are left out, so ``default(...)`` applies to them.
    ``campaign`` is ``{"id", "name"}`` and ``variant`` the variant's name, when given.
    """
    attrs: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is not None:
            attrs[str(key)] = _plain(value, 0)
    user: dict[str, Any] = {k: v for k, v in attrs.items() if k not in _RESERVED_USER_KEYS}
    for field in PROFILE_FIELDS:
        value = profile_fields.get(field)
        if value is not None:
            user[field] = _plain(value, 0)
    user["id"] = str(external_id)
    user["attr"] = attrs
    context: dict[str, Any] = {"user": user}
    if campaign is not None:
        context["campaign"] = {
            key: _plain(campaign[key], 0) for key in ("id", "name") if campaign.get(key) is not None
        }
    if variant is not None:
        context["variant"] = str(variant)
    return context


def _plain(value: Any, depth: int) -> Any:
    """A fresh copy made only of dict, list, str, int, float, bool and None."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)  # a plain copy: a Markup attribute must not skip escaping
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):  # sorted: the same user renders the same text
        return sorted((_plain(v, depth + 1) for v in value), key=repr)
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):  # dates and times
        return str(isoformat())
    return str(value)
