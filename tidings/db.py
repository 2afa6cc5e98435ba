"""Database plumbing: the engine, sessions, declarative Base and portable column types.

Plain SQLAlchemy 2.0. One engine per process, configured by `configure(url)` from the app
factory, the worker or the CLI. Services receive a `Session` and never commit; the web layer
and jobs own the transaction (`session_scope`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import math
import os
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# JSON objects: JSONB on PostgreSQL (GIN-indexable), JSON text on SQLite.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# Big integer primary keys that still autoincrement on SQLite.
BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def app_fk() -> sa.ForeignKey:
    """The foreign key every table of an app's data carries (rows go with their app)."""
    return sa.ForeignKey("apps.id", ondelete="CASCADE")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


engine: sa.Engine | None = None
SessionFactory = sessionmaker(expire_on_commit=False)


def configure(url: str, **engine_kwargs) -> sa.Engine:
    """Create (or replace) the process-wide engine for `url`."""
    global engine
    if engine is not None and str(engine.url) == str(sa.make_url(url)) and not engine_kwargs:
        return engine
    if engine is not None:
        engine.dispose()
    if url.startswith("sqlite"):
        engine_kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
    else:
        engine_kwargs.setdefault("pool_size", 10)
        engine_kwargs.setdefault("max_overflow", 20)
        engine_kwargs.setdefault("pool_pre_ping", True)
        # JIT compiling costs 100-300 ms on segment counts and buys nothing at our row counts;
        # segment counts hash a few hundred thousand user ids, which spill to disk at 4 MB.
        # Index pages are as quick to reach as heap pages in order (SSD, or the OS cache): the
        # default random_page_cost of 4 had segment counts scan whole tables instead of
        # index-only ranges (1M users: "did X >= 3 times in last 30d" 345 -> 121 ms, the
        # compound query 634 -> 143 ms, device + version 1,014 -> 872 ms).
        engine_kwargs.setdefault("connect_args", {
            "options": "-c jit=off -c work_mem=32MB -c random_page_cost=1.1"})
    engine = sa.create_engine(url, **engine_kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
    SessionFactory.configure(bind=engine)
    return engine


def get_engine() -> sa.Engine:
    if engine is None:
        raise RuntimeError("tidings.db.configure() has not been called")
    return engine


@contextlib.contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = SessionFactory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _sqlite_on_connect(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    # Math PostgreSQL has built in, for the geo predicate of the segment language.
    for name, fn in (("sin", math.sin), ("cos", math.cos), ("asin", math.asin),
                     ("sqrt", math.sqrt), ("radians", math.radians)):
        dbapi_conn.create_function(name, 1, fn, deterministic=True)
    dbapi_conn.create_function("power", 2, math.pow, deterministic=True)


def insert_for(session_or_conn, table: sa.Table):
    """The dialect's INSERT construct, which has `on_conflict_do_nothing/_do_update`."""
    name = session_or_conn.get_bind().dialect.name if isinstance(session_or_conn, Session) else session_or_conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _json_default(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} in a bulk statement")


def _recordset(table: sa.Table, rows: list[dict], columns: list[str]) -> sa.TableValuedAlias:
    """The rows as one JSON document expanded server-side by jsonb_to_recordset.

    One `json.dumps` (C) per batch, where array parameters cost psycopg a regex escape per
    string element; the SQL text stays the same whatever the number of rows.
    """
    import json

    document = json.dumps([{c: r[c] for c in columns} for r in rows], default=_json_default,
                          separators=(",", ":"))
    records = sa.func.jsonb_to_recordset(sa.cast(sa.literal(document, sa.Text), postgresql.JSONB))
    return records.table_valued(*(sa.column(c, table.c[c].type) for c in columns)).render_derived(
        name="v", with_types=True)


def bulk_insert(session: Session, table: sa.Table, rows: list[dict], *, conflict: list[str] | None = None,
                returning: tuple = (), update: list[str] | None = None, conflict_where=None):
    """Insert many rows in ONE statement, optionally ON CONFLICT DO NOTHING / DO UPDATE, RETURNING.

    On PostgreSQL the rows travel as one JSON document (`INSERT ... SELECT FROM
    jsonb_to_recordset(...)`): constant SQL text whatever the row count, where a multi-row VALUES
    list costs the driver a parse of thousands of placeholders. SQLite (the embedded default)
    uses executemany.
    Returns the RETURNING rows (a list), or None without `returning`.
    """
    if not rows:
        return [] if returning else None
    columns = list(rows[0])
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        v = _recordset(table, rows, columns)
        stmt = postgresql.insert(table).from_select(columns, sa.select(*(v.c[c] for c in columns)))
    else:
        stmt = insert_for(session, table)
    if conflict and update:
        stmt = stmt.on_conflict_do_update(index_elements=conflict, index_where=conflict_where,
                                          set_={c: stmt.excluded[c] for c in update})
    elif conflict:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict, index_where=conflict_where)
    if returning:
        stmt = stmt.returning(*returning)
    if dialect == "postgresql":
        result = session.execute(stmt)
    else:
        result = session.execute(stmt, rows)
    return result.all() if returning else None


def bulk_update(session: Session, table: sa.Table, rows: list[dict], *, key: str = "id",
                where=None, values=None, returning: tuple = ()):
    """Update many rows by `key`, each with its own values, in ONE statement on PostgreSQL.

    `rows` are dicts holding `key` and the columns to set. `values` (a dict, or a function of the
    per-row source `v` returning one) adds columns set on every row, e.g. `updated_at`; `where`
    (an expression, or a function of `v`) adds a condition, e.g. on the current status. On
    SQLite (the embedded default) it runs row by row. Returns the RETURNING rows (a list).
    """
    if not rows:
        return []
    columns = [c for c in rows[0] if c != key]
    if session.get_bind().dialect.name == "postgresql":
        v = _recordset(table, rows, [key, *columns])
        extra_values = values(v) if callable(values) else (values or {})
        stmt = (sa.update(table).where(table.c[key] == v.c[key])
                .values({**{c: v.c[c] for c in columns}, **extra_values}))
        condition = where(v) if callable(where) else where
        if condition is not None:
            stmt = stmt.where(condition)
        if returning:
            stmt = stmt.returning(*returning)
        result = session.execute(stmt, execution_options={"synchronize_session": False})
        return result.all() if returning else []
    out = []
    for row in rows:
        v = sa.select(*(sa.literal(row[c], table.c[c].type).label(c) for c in [key, *columns])).subquery("v")
        extra_values = values(v) if callable(values) else (values or {})
        stmt = (sa.update(table).where(table.c[key] == row[key])
                .values({**{c: row[c] for c in columns}, **extra_values}))
        condition = where(v) if callable(where) else where
        if condition is not None:
            stmt = stmt.where(condition)
        if returning:
            out += session.execute(stmt.returning(*returning), execution_options={"synchronize_session": False}).all()
        else:
            session.execute(stmt, execution_options={"synchronize_session": False})
    return out


def one_of(session: Session, column: sa.ColumnElement, values: list) -> sa.ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL as `= ANY(array)`, one parameter whatever the count."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


class KeptConnections:
    """Autocommit driver connections a process keeps for its hottest single-statement requests
    (the WSGI fast paths), each with its cursor (a new cursor per call costs more than the call).
    Taken out of the engine's pool for good, so they were opened with the engine's connect
    arguments and events, and no use pays a checkout pre-ping or BEGIN/COMMIT round trips.
    Shared by threads (a thread-per-request server must not open one per request)."""

    def __init__(self, max_idle: int = 8) -> None:
        self.max_idle = max_idle
        self._idle: list = []
        self._engine = None
        self._pid: int | None = None
        self._inherited: list = []
        atexit.register(self.close)

    def take(self, engine: sa.Engine):
        """(pool proxy, cursor) for one statement; `give_back` or `discard` it after."""
        if self._pid != os.getpid():
            # A forked child: never use, nor close, the parent's sockets (closing would end the
            # parent's sessions); keep them referenced so the garbage collector does not either.
            self._inherited += self._idle
            self._idle, self._engine, self._pid = [], engine, os.getpid()
        elif self._engine is not engine:  # configure() made another engine
            self.close()
            self._engine = engine
        try:
            return self._idle.pop()
        except IndexError:
            pooled = engine.raw_connection()
            pooled.driver_connection.autocommit = True
            return pooled, pooled.driver_connection.cursor()

    def give_back(self, held) -> None:
        if len(self._idle) < self.max_idle and self._pid == os.getpid():
            self._idle.append(held)
        else:  # back to the engine's pool as the pool lent it: in a transaction's mode
            held[0].driver_connection.autocommit = False
            held[0].close()

    def close(self) -> None:
        """End the idle kept sessions cleanly (a forked child leaves its parent's alone)."""
        if self._pid == os.getpid():
            idle, self._idle = self._idle, []
            for held in idle:
                self.discard(held)

    def discard(self, held) -> None:
        try:
            held[0].invalidate()
        except Exception:  # it may be broken already; we only let go of it
            logging.getLogger(__name__).debug("discarding a kept connection failed", exc_info=True)
