"""The PostgreSQL store backend: several gateway nodes on one journal (``store.backend =
"postgresql"``).

The rest of the core writes plain SQL with ``?`` and ``:name`` parameters against a connection
that behaves like ``sqlite3``'s. :class:`PostgresConnection` is that connection over psycopg: it
rewrites each statement once (parameters, ``INSERT OR IGNORE``, ``BEGIN IMMEDIATE``, ``X''``,
``INDEXED BY``, the two catalogue questions the readers ask) and caches the result. The few
statements whose meaning differs between one writer and several nodes (the outbox claim and its
lease, the locks that keep two nodes from taking one control id or one person's turn) are not
rewritten but chosen by :func:`dialect` where they are made (:mod:`gateway.core.outbox`,
:mod:`gateway.core.store`).

The schema has one source, ``store.MIGRATIONS`` (sqlite-utils steps): :func:`schema_steps`
applies them to an in-memory SQLite database and turns what each step added (tables, columns,
indexes) into PostgreSQL DDL, so a step is never written twice. A step that only rewrites data
(``0006``) has nothing to do on a journal that PostgreSQL started. Every table gets the lease
columns the outbox needs on several nodes (``lease_owner``, ``lease_until``) as one more step.
"""
from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlite_utils
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

if TYPE_CHECKING:
    import psycopg

POSTGRESQL = "postgresql"
SQLITE = "sqlite"

#: Steps PostgreSQL adds after the core's own: an outbox row in flight belongs to one node until
#: its lease runs out, and is then any node's to take.
_LEASE_STEP = ("pg_0001_outbox_leases", [
    "ALTER TABLE outbox ADD COLUMN lease_owner TEXT",
    "ALTER TABLE outbox ADD COLUMN lease_until DOUBLE PRECISION",
    "CREATE INDEX outbox_leases ON outbox (destination, lease_until) WHERE state = 'in_flight'",
])

#: Taken around migrations, so two nodes started together do not both create the schema.
_MIGRATION_LOCK = 0x4853534B  # "HSSK"


def dialect(conn: Any) -> str:
    """Which SQL a connection speaks: ``postgresql`` for :class:`PostgresConnection`, else ``sqlite``."""
    return getattr(conn, "dialect", SQLITE)


def driver_errors() -> tuple[type[Exception], ...]:
    """psycopg's base error. psycopg is imported only when a PostgreSQL journal is used: SQLite
    gateways, and every pipeline child process, are spared its import (about 0.3 s)."""
    import psycopg

    return (psycopg.Error,)


def errors_of(conn: Any) -> tuple[type[Exception], ...]:
    """The driver's errors for a connection of either backend."""
    return driver_errors() if dialect(conn) == POSTGRESQL else (sqlite3.Error,)


# --- Statement rewriting ------------------------------------------------------------------------

_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|(?<!:):([A-Za-z_]\w*)|%|X''")
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO", re.IGNORECASE)
_PRAGMA_TABLE_INFO = re.compile(r"^\s*PRAGMA\s+table_info\((\w+)\)\s*$", re.IGNORECASE)
_SQLITE_MASTER_TABLE = re.compile(r"FROM sqlite_master WHERE type = 'table' AND name =", re.IGNORECASE)


def translate(sql: str) -> str:
    """``sql`` as written for SQLite, in PostgreSQL's words and psycopg's parameters."""
    found = _PRAGMA_TABLE_INFO.match(sql)
    if found:  # (cid, name) as SQLite answers; readers use the name
        return ("SELECT ordinal_position - 1, column_name::text FROM information_schema.columns "
                f"WHERE table_schema = current_schema() AND table_name = '{found.group(1)}' ORDER BY ordinal_position")
    sql = _SQLITE_MASTER_TABLE.sub(
        "FROM information_schema.tables WHERE table_schema = current_schema() AND table_name =", sql)
    sql = re.sub(r"^\s*BEGIN\s+IMMEDIATE\s*$", "BEGIN", sql, flags=re.IGNORECASE)
    sql = re.sub(r"^\s*PRAGMA\s+query_only\s*=\s*ON\s*$", "SET default_transaction_read_only = on", sql,
                 flags=re.IGNORECASE)
    sql = re.sub(r"\s+INDEXED\s+BY\s+\w+", "", sql, flags=re.IGNORECASE)
    ignore = bool(_INSERT_OR_IGNORE.match(sql))
    if ignore:
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql, count=1)

    def token(m: re.Match) -> str:
        text = m.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if text == "X''":
            return "'\\x'::bytea"
        if m.group(1):
            return f"%({m.group(1)})s"
        return text.replace("%", "%%")

    sql = _TOKENS.sub(token, sql)
    if ignore:
        sql = sql.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return sql


class _Row(tuple):
    """A row read by position or by column name, as ``sqlite3.Row``."""

    _names: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)


def _named_row(cursor: psycopg.Cursor) -> Callable[[Sequence], _Row]:
    names = tuple(column.name for column in cursor.description or ())

    def make(values: Sequence) -> _Row:
        row = _Row(values)
        row._names = names
        return row

    return make


class PostgresConnection:
    """A psycopg connection that takes the core's SQLite-flavoured statements (see :func:`translate`).

    Autocommit, so transactions are the explicit ``BEGIN`` / ``COMMIT`` the core already issues.
    ``node`` and ``lease_seconds`` are this node's: the outbox's claim asks them of the connection.
    """

    dialect = POSTGRESQL

    def __init__(self, dsn: str, node: str, lease_seconds: float) -> None:
        import psycopg

        self._conn = psycopg.connect(dsn, autocommit=True)
        self.node = node
        self.lease_seconds = lease_seconds
        self._cache: dict[str, str] = {}
        self._row_factory: Any = None

    def _sql(self, sql: str) -> str:
        found = self._cache.get(sql)
        if found is None:
            found = self._cache[sql] = translate(sql)
        return found

    def execute(self, sql: str, params: Sequence | dict | None = None) -> psycopg.Cursor:
        return self._conn.execute(self._sql(sql), params or None)

    def executemany(self, sql: str, params: Iterable[Sequence | dict]) -> psycopg.Cursor:
        cursor = self._conn.cursor()
        params = list(params)
        if params:
            cursor.executemany(self._sql(sql), params)
        return cursor

    @property
    def row_factory(self) -> Any:
        return self._row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        """Any factory (``sqlite3.Row``, which readers use to read rows by column name) gives
        rows that, like ``sqlite3.Row``, read by position and by name; None gives tuples."""
        from psycopg.rows import tuple_row

        self._row_factory = factory
        self._conn.row_factory = tuple_row if factory is None else _named_row

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Transaction-scoped advisory locks on ``keys``, in sorted order so two nodes locking
        overlapping sets cannot deadlock. Held to COMMIT: the other node's statements that take
        the same key wait, then see what this transaction committed."""
        ordered = sorted(set(keys))
        if ordered:
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%s::text[]) AS k "
                               "ORDER BY k", (ordered,))

    def close(self) -> None:
        self._conn.close()


# --- Schema --------------------------------------------------------------------------------------

_TYPES = {"INTEGER": "BIGINT", "FLOAT": "DOUBLE PRECISION", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT",
          "BLOB": "BYTEA", "": "TEXT"}


def _snapshot(conn: sqlite3.Connection) -> tuple[dict[str, list[tuple]], dict[str, str]]:
    tables = {name: conn.execute(f"PRAGMA table_info([{name}])").fetchall() for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    return tables, indexes


def _column(conn: sqlite3.Connection, table: str, info: tuple, single_pk: bool) -> str:
    _, name, declared, not_null, default, pk = info
    kind = _TYPES.get(declared.upper(), declared)
    if pk and single_pk and declared.upper() == "INTEGER":
        return f'"{name}" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY'
    text = f'"{name}" {kind}'
    if pk and single_pk:
        text += " PRIMARY KEY"
    if not_null:
        text += " NOT NULL"
    if default is not None:
        text += f" DEFAULT {default}"
    references = [fk for fk in conn.execute(f"PRAGMA foreign_key_list([{table}])") if fk[3] == name]
    for fk in references:
        text += f' REFERENCES "{fk[2]}" ("{fk[4]}")'
    return text


def _quoted(sql: str) -> str:
    return re.sub(r"\[([^\]]+)\]", r'"\1"', sql)


def _ddl_of_step(conn: sqlite3.Connection, before: tuple, after: tuple) -> list[str]:
    statements = []
    tables_before, indexes_before = before
    tables_after, indexes_after = after
    for table, columns in tables_after.items():
        pks = [c for c in columns if c[5]]
        if table not in tables_before:
            parts = [_column(conn, table, c, len(pks) == 1) for c in columns]
            if len(pks) > 1:
                parts.append("PRIMARY KEY (" + ", ".join(f'"{c[1]}"' for c in sorted(pks, key=lambda c: c[5])) + ")")
            statements.append(f'CREATE TABLE "{table}" (' + ", ".join(parts) + ")")
            continue
        known = {c[1] for c in tables_before[table]}
        statements += [f'ALTER TABLE "{table}" ADD COLUMN {_column(conn, table, c, False)}'
                       for c in columns if c[1] not in known]
    statements += [_quoted(sql) for name, sql in indexes_after.items() if name not in indexes_before]
    return statements


def schema_steps(steps: Sequence[tuple[str, Callable[[sqlite_utils.Database], None]]]) -> list[tuple[str, list[str]]]:
    """Each sqlite-utils step as the PostgreSQL statements that make what it made."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db = sqlite_utils.Database(conn)
        result = []
        for name, step in steps:
            before = _snapshot(conn)
            conn.execute("BEGIN")  # as Store.migrate runs a step: inside a transaction of its own
            step(db)
            conn.execute("COMMIT")
            result.append((name, _ddl_of_step(conn, before, _snapshot(conn))))
        return result
    finally:
        conn.close()


def read_in_thread(connect: Callable[[], Any], reactor, query: Callable[[Any], Any]) -> Deferred:
    """Run ``query`` on a connection of its own in the reactor's thread pool, never on the
    reactor or the journal writer: an operator's read must not hold up the group commit that
    ACKs depend on. Fires on the reactor with its result. (Either backend's.)"""
    def run():
        conn = connect()
        try:
            return query(conn)
        finally:
            conn.close()

    return deferToThreadPool(reactor, reactor.getThreadPool(), run)


class _ServerCheckpoints:
    """The journal writer's checkpointer for PostgreSQL, which checkpoints on its own."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def committed(self) -> None:
        pass

    def catch_up(self, conn: PostgresConnection) -> None:
        pass


class PostgresStore:
    """The journal in a PostgreSQL database that several nodes share (the same questions
    :class:`gateway.core.store.Store` answers for SQLite)."""

    dialect = POSTGRESQL

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        return driver_errors()

    def __init__(self, dsn: str, node: str, lease_seconds: float = 60.0) -> None:
        self.dsn = dsn
        self.node = node
        self.lease_seconds = lease_seconds

    def __repr__(self) -> str:
        return f"PostgresStore(node={self.node!r})"

    def connect(self) -> PostgresConnection:
        return PostgresConnection(self.dsn, self.node, self.lease_seconds)

    def retryable(self, error: Exception) -> bool:
        """Aborted for another transaction's sake (a deadlock between two nodes' group commits,
        a serialization failure): the same work succeeds when run again."""
        from psycopg import errors

        return isinstance(error, (errors.DeadlockDetected, errors.SerializationFailure))

    def connect_writer(self) -> PostgresConnection:
        return self.connect()

    def checkpointer(self, metrics) -> "_ServerCheckpoints":
        return _ServerCheckpoints()

    def make_private(self) -> None:
        """Access to the database is the server's roles' business, not a file mode."""

    def read_in_thread(self, reactor, query: Callable[[Any], Any]) -> Deferred:
        return read_in_thread(self.connect, reactor, query)

    def migrate(self) -> list[str]:
        """Apply the schema steps this database lacks, under an advisory lock; returns their names."""
        from gateway.core.store import MIGRATIONS

        conn = self.connect()
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            conn.execute('CREATE TABLE IF NOT EXISTS "_migrations" (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)')
            done = {name for (name,) in conn.execute("SELECT name FROM _migrations")}
            applied = []
            for name, statements in [*schema_steps(MIGRATIONS), _LEASE_STEP]:
                if name in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
                applied.append(name)
            conn.execute("COMMIT")
            return applied
        finally:
            conn.close()
