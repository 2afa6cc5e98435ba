"""CSV imports of users: header check at upload, then an idempotent, resumable RQ job.

Columns: `external_id` (required), the profile fields of `PUT /users/{id}` (phone, language,
timezone, country, region, city, lat, lon, sms_opt_in, push_opt_in) and `attr.NAME` for custom
attributes. An empty cell leaves that field as it is. Every row is validated like an API call;
bad rows are reported with their line number and skipped, good rows are written in chunks, each
chunk committed together with the progress counter so a re-run resumes where it stopped.

Speed: a loader compiled for the file's header (`fast_loader`) takes plainly valid rows straight to
their loaded fields (phone numbers already in E.164 form through `segments.phones`); any other row
goes through `row_to_fields` and the marshmallow schema, which stay the authority and word the
errors. For big files, helper processes parse, validate and encode chunks for PostgreSQL's COPY
(`prepare_chunk`) ahead of the writer; a file without quotes is cut into chunks as slices of its
text (`plain_lines`), so this process does not parse it. Chunks are still written and committed one
after another, in order, by one writer thread while PostgreSQL works on its side.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import io
import itertools
import math
import multiprocessing as mp
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy.orm import Session

from segments import fastpath
from segments.models import ImportStatus, UserImport
from segments.people import StagedProfiles, stage_profiles, upsert_profiles
from segments.phones import e164
from segments.schemas import (
    ATTRIBUTE_NAME, LANGUAGE_TAG, MAX_ATTRIBUTES, MAX_LANGUAGE, NUL_MESSAGE, UserFieldsSchema, country_codes,
    known_timezones, normalize_phone,
)
from tidings.db import session_scope, utcnow
from tidings.errors import InvalidError

PROFILE_COLUMNS = ("phone", "language", "timezone", "country", "region", "city", "lat", "lon",
                   "sms_opt_in", "push_opt_in")
CHUNK = 5000  # rows a transaction: per-statement costs (planning, commit) fade by 5,000
HELPERS = 2  # helper processes preparing chunks (parse, validate, encode) for big files
PREPARE_AHEAD = HELPERS + 1  # chunks prepared ahead of the one being written
HELPER_MIN_ROWS = 4 * CHUNK  # below this helper processes cost more than they save
MAX_REPORTED_ERRORS = 1000
JOB = "segments.imports.run_import"
FAILED = "segments.imports.mark_failed"

_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def decode(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidError(f"the file is not UTF-8 text (byte {exc.start})", {"field": "file"}) from None


def check_header(text: str) -> list[str]:
    """The header's columns, or a 422 naming what is missing or unknown."""
    reader = csv.reader(_lines(text))
    header = next(reader, None)
    if not header:
        raise InvalidError("the file is empty; the first line must name the columns", {"field": "file"})
    header = [h.strip() for h in header]
    if "external_id" not in header:
        raise InvalidError('the header needs an "external_id" column', {"field": "file", "columns": header})
    unknown = [h for h in header if h != "external_id" and h not in PROFILE_COLUMNS
               and not (h.startswith("attr.") and ATTRIBUTE_NAME.match(h[5:]))]
    if unknown:
        raise InvalidError(
            f"unknown columns {', '.join(repr(u) for u in unknown)}: use profile fields or attr.NAME",
            {"field": "file", "unknown_columns": unknown},
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise InvalidError(f"columns named twice: {', '.join(duplicated)}", {"field": "file"})
    return header


def _lines(text: str) -> Iterator[str]:
    """The lines of `text` as `io.StringIO(text)` reads them, without copying all of it first."""
    start = 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        yield text[start:end]
        start = end


def infer(value: str):
    """Attribute cells: integers, decimals and true/false become JSON numbers and booleans."""
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    return value


def row_to_fields(header: list[str], row: list[str]) -> tuple[str, dict]:
    if len(row) != len(header):
        raise ValidationError(f"has {len(row)} cells, the header has {len(header)}", "row")
    data: dict = {}
    external_id = ""
    for column, cell in zip(header, row, strict=True):
        if column == "external_id":
            external_id = cell.strip()
            continue
        if cell == "":
            continue
        if column.startswith("attr."):
            data.setdefault("attributes", {})[column[5:]] = infer(cell)
        elif column in ("lat", "lon"):
            try:
                data[column] = float(cell)
            except ValueError:
                raise ValidationError("must be a number", column) from None
        elif column in ("sms_opt_in", "push_opt_in"):
            low = cell.strip().lower()
            if low not in _TRUE | _FALSE:
                raise ValidationError("must be true or false", column)
            data[column] = low in _TRUE
        else:
            data[column] = cell.strip()
    if not external_id:
        raise ValidationError("is empty", "external_id")
    if "\x00" in external_id:
        raise ValidationError(NUL_MESSAGE, "external_id")
    if len(external_id) > 255:
        raise ValidationError("is longer than 255 characters", "external_id")
    return external_id, data


# How the fast loader loads a non-empty cell of each column into `value`, or answers None (the schema
# decides). As in `row_to_fields` then the schema: text is stripped; too long, unknown or
# malformed is left to the schema, which words the error.
_CELL_CODE = {
    "region": "value = cell.strip()\nif len(value) > 128: return None",
    "city": "value = cell.strip()\nif len(value) > 128: return None",
    "language": "value = cell.strip()\nif len(value) > MAX_LANGUAGE or not language_tag(value): return None",
    "timezone": "value = cell.strip()\nif value not in timezones: return None",
    "country": "value = cell.strip()\nif len(value) != 2: return None\nvalue = value.upper()\n"
               "if value not in countries: return None",
    "lat": "try: value = float(cell)\nexcept ValueError: return None\n"
           "if not (isfinite(value) and -90 <= value <= 90): return None",
    "lon": "try: value = float(cell)\nexcept ValueError: return None\n"
           "if not (isfinite(value) and -180 <= value <= 180): return None",
    "sms_opt_in": "value = booleans.get(cell.strip().lower())\nif value is None: return None",
    "push_opt_in": "value = booleans.get(cell.strip().lower())\nif value is None: return None",
}
_BAD = object()
_INFERRED: dict[str, object] = {}  # attribute cells repeat (plans, tiers, ages): `infer` once per short text


def _infer_new(cell: str) -> object:
    value = infer(cell)
    if len(cell) <= 32 and len(_INFERRED) < 65_536:  # at most a few MB
        _INFERRED[cell] = value
    return value


def fast_loader(header: list[str]) -> Callable[[list[str]], tuple[str, dict] | None]:
    """A function taking a row of this header to `(external_id, loaded fields)`, or None.

    The answer is what `row_to_fields` then `UserFieldsSchema().load` give; None means "not plainly
    valid, ask them" (tests/segments/test_fastpath.py checks the agreement on random rows). The
    function is compiled from source written for the header, one branch per column: a row costs
    a few microseconds and its phone number, not a loop over columns and a call per cell.
    """
    cells = [f"c{i}" for i in range(len(header))]
    code = ["def load(row):",
            f"    if len(row) != {len(header)} or '\\x00' in ''.join(row): return None",
            f"    {', '.join(cells)}{',' if len(cells) == 1 else ''} = row",
            f"    external_id = c{header.index('external_id')}.strip()",
            "    if not 0 < len(external_id) <= 255: return None",
            "    out = {}"]
    for i, column in enumerate(header):
        if column in _CELL_CODE:
            code += [f"    if c{i} != '':", f"        cell = c{i}",
                     *(f"        {line}" for line in _CELL_CODE[column].splitlines()),
                     f"        out[{column!r}] = value"]
    attributes = [(i, column[5:]) for i, column in enumerate(header) if column.startswith("attr.")]
    if attributes:
        code.append("    attributes = {}")
        for i, name in attributes:
            code += [f"    if c{i} != '':", f"        value = inferred(c{i}, BAD)",
                     f"        attributes[{name!r}] = infer_new(c{i}) if value is BAD else value"]
        code += ["    if attributes:", "        if len(attributes) > MAX_ATTRIBUTES: return None",
                 "        out['attributes'] = attributes"]
    if "phone" in header:
        code += [f"    if c{header.index('phone')} != '':", f"        number = c{header.index('phone')}.strip()",
                 "        if number:",
                 "            if len(number) > 40: return None",
                 "            fast = e164(number)",
                 "            if fast is None:",
                 "                try: fast = normalize_phone(number, out.get('country'))",
                 "                except ValueError: return None",
                 "            number = fast",
                 "        out['phone'] = number"]
    code.append("    return external_id, out")
    namespace = {"MAX_LANGUAGE": MAX_LANGUAGE, "MAX_ATTRIBUTES": MAX_ATTRIBUTES, "language_tag": LANGUAGE_TAG.fullmatch,
                 "timezones": known_timezones(), "countries": country_codes(), "isfinite": math.isfinite,
                 "booleans": {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)},
                 "inferred": _INFERRED.get, "infer_new": _infer_new, "BAD": _BAD, "e164": e164,
                 "normalize_phone": normalize_phone}
    exec(compile("\n".join(code), f"<fast loader for {header!r}>", "exec"), namespace)  # noqa: S102
    return namespace["load"]


class _Superseded(Exception):
    """Another run of the same import is ahead of this one; this one stops."""


def _rows(text: str) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    yield from reader


def run_import(import_id: int) -> None:
    """The RQ job. Safe to run twice: a finished import is left alone, a stopped one resumes."""
    with session_scope() as session:
        imp = session.get(UserImport, import_id, with_for_update=True)
        if imp is None or imp.status in (ImportStatus.FINISHED, ImportStatus.FAILED):
            return
        imp.status = ImportStatus.RUNNING
        imp.started_at = imp.started_at or utcnow()
        app_id, done = imp.app_id, imp.processed_rows
        postgres = session.get_bind().dialect.name == "postgresql"
        text = decode(_content(session, imp) if postgres else imp.content or b"")
        header = check_header(text)
        lines = plain_lines(text)
        if imp.total_rows is None:
            imp.total_rows = len(lines) - 1 if lines is not None else sum(1 for _ in _rows(text))
        total = imp.total_rows

    def write(start: int, prepared: Prepared) -> None:
        with session_scope() as session:
            if postgres:
                # Not waiting for the WAL flush of each chunk: a crash may lose the last chunks, their
                # rows and progress together (the import resumes before them), and the final commit
                # below waits for all of them. ~15 ms a chunk on this box.
                session.execute(_ASYNC_COMMIT)
            imp = session.get(UserImport, import_id, with_for_update=True)
            if imp.processed_rows != start:  # another run of this import got here first
                raise _Superseded
            if prepared.good:
                upsert_profiles(session, app_id, prepared.changes)
            imp.processed_rows += prepared.rows
            imp.imported_rows += prepared.good
            imp.error_count += len(prepared.bad)
            room = MAX_REPORTED_ERRORS - len(imp.errors or [])
            if prepared.bad and room > 0:
                imp.errors = [*(imp.errors or []), *prepared.bad[:room]]

    # Chunks are prepared ahead (in helper processes for big files); one writer thread takes them
    # in order and commits one at a time, so the order and the progress counter stay exactly as
    # in a plain loop. It goes from one chunk to the next by itself: handing each chunk over from
    # this thread cost two thread switches (~7 ms) a chunk.
    pending: queue.Queue = queue.Queue(PREPARE_AHEAD)

    def write_in_order() -> None:
        while (item := pending.get()) is not None:
            start, rows, future = item
            prepared = future.result()
            if prepared.rows != rows:
                raise RuntimeError(f"rows {start + 1}-{start + rows} read as {prepared.rows} rows")
            write(start, prepared)

    with _gc_paused(), _preparer(header, postgres, total - done) as prepare, \
            ThreadPoolExecutor(1, thread_name_prefix=f"import-{import_id}") as writer:
        writing = writer.submit(write_in_order)
        try:
            for start, rows, chunk in _chunks(text, done, lines):
                if not _hand(pending, (start, rows, prepare(start, chunk)), writing):
                    break  # it failed or was superseded: its result says which
        finally:
            _hand(pending, None, writing)
        try:
            writing.result()
        except _Superseded:
            return

    with session_scope() as session:
        imp = session.get(UserImport, import_id, with_for_update=True)
        if imp.status == ImportStatus.RUNNING:
            imp.status = ImportStatus.FINISHED
            imp.finished_at = utcnow()
            imp.content = None  # the people are imported; do not keep a second copy of their data


def _hand(pending: queue.Queue, item: object, writing: Future) -> bool:
    """Queue `item` for the writer, waiting while the queue is full; False once the writer has stopped."""
    while not writing.done():
        try:
            pending.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


_ASYNC_COMMIT = sa.text("SET LOCAL synchronous_commit = off")


def _content(session: Session, imp: UserImport) -> bytes:
    """The uploaded file, read from PostgreSQL in binary: a bytea's text form is hex, twice its size
    (0.22 s -> 0.07 s for 22 MB)."""
    with session.connection().connection.driver_connection.cursor(binary=True) as cursor:
        cursor.execute(f"SELECT content FROM {UserImport.__table__.name} WHERE id = %s", (imp.id,))
        content = cursor.fetchone()[0]
    return content or b""


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while rows stream through (reference counting still frees them).

    The collector ran ~170 times per 20,000 rows, walking the chunks in flight and every object
    the worker process had loaded: ~10 us a row, a sixth of the job's CPU. What the import
    makes is not cyclic; one collection at the end picks up whatever is.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(1)


def plain_lines(text: str) -> list[int] | None:
    """Where each line of `text` starts, when `csv.reader` reads every line as one record; else None.

    That is when nothing is quoted (no `"` at all), every carriage return ends a line (CRLF) and
    no line reaches csv's field size limit. A chunk of such a file is a slice of its text, found
    without parsing it; the helpers parse it. Any other file is parsed here, as a whole, first.
    """
    if '"' in text or "\r" in text and text.count("\r") != text.count("\r\n"):
        return None
    lengths = list(map(len, text.split("\n")))  # of the lines without their newline
    if len(lengths) > 1 and lengths[-1] == 0:  # a final newline ends the last line
        lengths.pop()
    if max(lengths) + 1 >= csv.field_size_limit():
        return None
    return list(itertools.accumulate(map((1).__add__, lengths[:-1]), initial=0))  # each line starts after the last


def _chunks(text: str, done: int, lines: list[int] | None) -> Iterator[tuple[int, int, str | list[list[str]]]]:
    """(rows before it, its row count, its rows) per chunk of CHUNK rows from row `done` on.

    The rows are a slice of the text when `lines` (`plain_lines`) says where they are, else
    parsed rows.
    """
    if lines is not None:
        rows = len(lines) - 1  # the header is line 1
        for start in range(done, rows, CHUNK):
            stop = min(start + CHUNK, rows)
            yield start, stop - start, text[lines[start + 1]:lines[stop + 1] if stop < rows else len(text)]
        return
    chunk: list[list[str]] = []
    start = done
    for index, row in enumerate(_rows(text)):
        if index < done:
            continue
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield start, len(chunk), chunk
            start += len(chunk)
            chunk = []
    if chunk:
        yield start, len(chunk), chunk


@dataclass(frozen=True)
class Prepared:
    """A chunk ready to write: its row count, rows imported, per-row errors, and the changes."""

    rows: int
    good: int
    bad: list[dict]
    changes: StagedProfiles | list[tuple[str, dict]]


def prepare_chunk(header: list[str], stage: bool, start: int, chunk: str | list[list[str]]) -> Prepared:
    """Parse (a slice of the text), validate, and with `stage` fold and encode the rows for COPY."""
    rows = list(csv.reader(io.StringIO(chunk))) if isinstance(chunk, str) else chunk
    good, bad = validate_rows(header, rows, start + 2)  # line numbers count the header as line 1
    staged = stage_profiles(good) if stage and good else None
    return Prepared(len(rows), len(good), bad, staged if staged is not None else good)


def validate_rows(header: list[str], rows: list[list[str]], first_line: int) -> tuple[list, list]:
    """([(external_id, loaded fields)], [per-row errors]) of consecutive rows, the first on `first_line`."""
    fast, schema = _loaders(tuple(header))
    good, bad = [], []
    for line, row in enumerate(rows, first_line):
        loaded = fast(row)
        if loaded is not None:
            good.append(loaded)
            continue
        try:
            external_id, fields = row_to_fields(header, row)
            loaded = fastpath.user_fields(fields)
            good.append((external_id, loaded if loaded is not None else schema.load(fields)))
        except ValidationError as exc:
            field, message = _first(exc)
            bad.append({"line": line, "field": field, "message": message})
    return good, bad


@functools.lru_cache(maxsize=8)
def _loaders(header: tuple[str, ...]) -> tuple[Callable, UserFieldsSchema]:
    return fast_loader(list(header)), UserFieldsSchema()


@contextlib.contextmanager
def _preparer(header: list[str], stage: bool, rows: int) -> Iterator[Callable[[int, object], Future]]:
    """A function preparing a chunk (`prepare_chunk`), answering a Future; in helper processes when worth it.

    Parsing and validation (phone numbers above all) and encoding the rows are most of the
    Python work of an import, and one process runs Python on one core: HELPERS helper
    processes prepare the next chunks while this one writes, and PostgreSQL works on its side.
    The helpers are forked, as RQ's own forking worker forks a work horse per job: they start
    at once and run exactly the code loaded here (a fork server or spawn would import it afresh
    from wherever sys.path points, ~0.5 s). Only from a worker's main thread (an embedded
    worker thread inside the web server prepares in place), and only for files big enough to
    repay it.
    """
    if (rows < HELPER_MIN_ROWS or threading.current_thread() is not threading.main_thread()
            or "fork" not in mp.get_all_start_methods()):
        def in_place(start: int, chunk: object) -> Future:
            done: Future = Future()
            done.set_result(prepare_chunk(header, stage, start, chunk))
            return done

        yield in_place
        return
    with ProcessPoolExecutor(HELPERS, mp_context=mp.get_context("fork"), initializer=_helper_started) as helpers:
        helpers.submit(int).result()  # fork them all now, before this process starts its writer thread
        yield functools.partial(helpers.submit, prepare_chunk, header, stage)


def _helper_started() -> None:
    gc.disable()  # as in _gc_paused; the helper lives as long as this import
    # Signals are for the worker to handle (a warm shutdown lets the job, so its helper, finish;
    # the forked helper would otherwise run RQ's handlers). A worker killed outright leaves the
    # helper waiting on a pipe it holds both ends of, so it watches its parent instead.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="import-helper-watch", daemon=True).start()


def _first(exc: ValidationError) -> tuple[str, str]:
    messages = exc.normalized_messages()
    if isinstance(messages, dict):
        field = next(iter(messages))
        value = messages[field]
        while isinstance(value, dict):
            field = f"{field}.{next(iter(value))}"
            value = next(iter(value.values()))
        return str(field), value[0] if isinstance(value, list) else str(value)
    return "row", messages[0] if isinstance(messages, list) else str(messages)


def mark_failed(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ failure callback: the import failed on an unexpected error; say so instead of hanging."""
    import_id = job.args[0]
    with session_scope() as session:
        imp = session.get(UserImport, import_id, with_for_update=True)
        if imp is not None and imp.status in (ImportStatus.QUEUED, ImportStatus.RUNNING):
            imp.status = ImportStatus.FAILED
            imp.finished_at = utcnow()
            imp.message = f"the import stopped on an internal error ({exc_type.__name__}); rows up to " \
                          f"{imp.processed_rows} were imported"
