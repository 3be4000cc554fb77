"""A plugin's own tables in the journal, and its one way to read and write them.

**Tables.** A plugin declares its schema as a :class:`MigrationSet` (``hssk_migrations``): a
name (its own) and ordered, named steps, each a function of a ``sqlite_utils.Database`` as the
core's ``store.MIGRATIONS`` are. At start-up, after the core's steps, each set's new steps run in
order, one transaction each, and are recorded in ``_plugin_migrations`` (set, step), so none
runs twice; append steps, never edit one. A step may create and change only tables named for
its set (``person_links`` owns ``person_links_merges``): anything else it touches is refused by
SQLite (an authorizer), the step rolled back, and start-up stops naming it.

**Access.** The journal has one writer (:class:`gateway.core.store.JournalWriter`), so a plugin
never opens a write connection of its own. It is handed a :class:`PluginJournal` in
``hssk_journal``: ``read`` runs a query on a read-only connection of its own, on the calling
thread; ``write`` runs a task inside the writer's next group commit (its own savepoint: a task
that fails is rolled back alone, and only the plugins' tables may be written); ``queue_event``
queues an event (:mod:`gateway.core.events`). ``write`` and ``queue_event`` return Deferreds and
are called on the reactor thread; a hook, which runs on a pipeline worker thread, calls them
through ``wait`` and gets the result. A plugin's command gets the same object from
``CommandContext.journal()``, working in short transactions of its own as the CLI's outbox
commands do; a pipeline child process (``pipeline.isolation = "processes"``) gets one that reads
only.
"""
from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlite_utils
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread

from gateway.core.events import EVENT_TRANSPORT, Event, QueuedEvent, event_bytes
from gateway.core.population import ImportedPersons, ListedPersons, import_listed
from gateway.core.postgres import POSTGRESQL, SQLITE, PostgresStore, dialect, errors_of, schema_steps
from gateway.core.store import Store, journal_decisions
from gateway.model.envelope import Envelope

T = TypeVar("T")

#: The page cache of a bulk import's connection (KiB): the person index's B-trees stay in memory.
BULK_CACHE_KIB = 32768

_SET_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class MigrationSet:
    """A plugin's schema steps: ``name`` (the plugin's own; its tables are named ``NAME_…``) and
    ``steps``, ``(step name, function of a sqlite_utils.Database)`` in the order they apply."""

    name: str
    steps: Sequence[tuple[str, Callable[[sqlite_utils.Database], None]]]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SET_NAME.fullmatch(self.name):
            raise ValueError(f"a migration set's name is lower-case letters, digits and _, got {self.name!r}")
        names = [step for step, _ in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"migration set {self.name!r} names a step twice")


class MigrationError(RuntimeError):
    """A plugin's schema step failed; it was rolled back and start-up stops."""


class Ownership:
    """Which tables plugins may change: those named for a migration set (``NAME`` or ``NAME_…``).
    As a SQLite authorizer it refuses, while a plugin's step or task runs, any change to the
    gateway's tables, a transaction of its own (it runs inside the writer's), an ATTACH, and a
    PRAGMA that sets something."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = tuple(names)

    def owns(self, table: str | None) -> bool:
        name = (table or "").lower()
        return name.startswith("sqlite_") or any(name == n or name.startswith(n + "_") for n in self._names)

    def authorize(self, action: int, arg1: str | None, arg2: str | None, database: str | None,
                  trigger: str | None) -> int:
        if action in _TABLE_IN_ARG1:
            return sqlite3.SQLITE_OK if self.owns(arg1) else sqlite3.SQLITE_DENY
        if action in _TABLE_IN_ARG2:
            return sqlite3.SQLITE_OK if self.owns(arg2) else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            return sqlite3.SQLITE_OK if arg2 is None else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_SAVEPOINT:
            return sqlite3.SQLITE_DENY if arg2 == "task" else sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY if action in _NEVER else sqlite3.SQLITE_OK

    def guard(self, task: Callable[[sqlite3.Connection, float], T]) -> Callable[[sqlite3.Connection, float], T]:
        """``task`` run under this authorizer. An SQLite error of its own (a constraint, a
        refusal, a typo) becomes :class:`PluginTaskError`, so the writer rolls back that task
        alone; one that ended the whole transaction (a full disk) stays what it is."""
        def guarded(conn: sqlite3.Connection, now: float) -> T:
            # PostgreSQL has no authorizer: there a task's tables are the plugin's by convention
            # (and by a database role of its own where a site wants the engine to enforce it).
            authorized = dialect(conn) == SQLITE
            if authorized:
                conn.set_authorizer(self.authorize)
            try:
                return task(conn, now)
            except errors_of(conn) as e:
                if not conn.in_transaction:
                    raise
                raise PluginTaskError(f"{type(e).__name__}: {e}") from e
            finally:
                if authorized:
                    conn.set_authorizer(None)

        return guarded


class PluginTaskError(Exception):
    """A plugin's journal task failed in SQLite; it was rolled back, nothing else was."""


_TABLE_IN_ARG1 = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE,
                            sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_CREATE_VIEW,
                            sqlite3.SQLITE_DROP_VIEW})
_TABLE_IN_ARG2 = frozenset({sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_CREATE_TRIGGER,
                            sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_ALTER_TABLE})
_NEVER = frozenset({sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH,
                    sqlite3.SQLITE_CREATE_TEMP_INDEX, sqlite3.SQLITE_CREATE_TEMP_TABLE,
                    sqlite3.SQLITE_CREATE_TEMP_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_VIEW,
                    sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE})


def apply_migration_sets(store: Store, sets: Sequence[MigrationSet]) -> list[str]:
    """Run the steps of ``sets`` this journal lacks, in order, each in a transaction with its
    record; returns ``set:step`` of each applied. Call after ``Store.migrate``."""
    if store.dialect == POSTGRESQL:
        return _apply_sets_on_postgres(store, sets)
    conn = store.connect()
    try:
        db = sqlite_utils.Database(conn)
        db["_plugin_migrations"].create({"set_name": str, "step": str, "applied_at": float},
                                        pk=("set_name", "step"), if_not_exists=True)
        done = {(row["set_name"], row["step"]) for row in db["_plugin_migrations"].rows}
        applied = []
        for migration_set in sets:
            owner = Ownership([migration_set.name])
            for step, run in migration_set.steps:
                if (migration_set.name, step) in done:
                    continue
                _apply_step(conn, db, owner, migration_set.name, step, run)
                applied.append(f"{migration_set.name}:{step}")
        return applied
    finally:
        conn.close()


def _apply_step(conn: sqlite3.Connection, db: sqlite_utils.Database, owner: Ownership, set_name: str, step: str,
                run: Callable[[sqlite_utils.Database], None]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.set_authorizer(owner.authorize)
        try:
            run(db)
        finally:
            conn.set_authorizer(None)
        conn.execute("INSERT INTO _plugin_migrations (set_name, step, applied_at) VALUES (?, ?, ?)",
                     (set_name, step, time.time()))
    except Exception as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        hint = (f"; a plugin's steps may create and change only tables named {set_name}_…"
                if "not authorized" in str(e) else "")
        raise MigrationError(f"schema step {step!r} of plugin migration set {set_name!r} failed and was rolled "
                             f"back: {type(e).__name__}: {e}{hint}") from e
    conn.execute("COMMIT")


def _owned(owner: Ownership, run: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    def step(db: sqlite_utils.Database) -> None:
        db.conn.set_authorizer(owner.authorize)
        try:
            run(db)
        finally:
            db.conn.set_authorizer(None)

    return step


def _apply_sets_on_postgres(store: PostgresStore, sets: Sequence[MigrationSet]) -> list[str]:
    """The sets' steps as PostgreSQL DDL (:func:`gateway.core.postgres.schema_steps`: each step
    runs in memory under its set's authorizer, so ownership is checked as on SQLite), applied in
    one transaction under the migrations' lock. A step's data (rows it inserts) is not carried."""
    conn = store.connect()
    try:
        conn.execute("BEGIN")
        conn.lock_keys(["migrations"])
        conn.execute("CREATE TABLE IF NOT EXISTS _plugin_migrations (set_name TEXT, step TEXT, "
                     "applied_at DOUBLE PRECISION, PRIMARY KEY (set_name, step))")
        done = {tuple(row) for row in conn.execute("SELECT set_name, step FROM _plugin_migrations")}
        applied = []
        for migration_set in sets:
            owner = Ownership([migration_set.name])
            try:
                ddl = schema_steps([(step, _owned(owner, run)) for step, run in migration_set.steps])
            except Exception as e:
                hint = (f"; a plugin's steps may create and change only tables named {migration_set.name}_…"
                        if "not authorized" in str(e) else "")
                raise MigrationError(f"a schema step of plugin migration set {migration_set.name!r} failed: "
                                     f"{type(e).__name__}: {e}{hint}") from e
            for step, statements in ddl:
                if (migration_set.name, step) in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO _plugin_migrations (set_name, step, applied_at) VALUES (?, ?, ?)",
                             (migration_set.name, step, time.time()))
                applied.append(f"{migration_set.name}:{step}")
        conn.execute("COMMIT")
        return applied
    finally:
        conn.close()


class PluginJournal:
    """A plugin's way into the journal (see the module's docstring). ``read`` is the same
    everywhere; where the writes go depends on the process (the subclasses)."""

    def __init__(self, store: Store, ownership: Ownership) -> None:
        self._store = store
        self._ownership = ownership

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query(connection)`` on a read-only connection of its own, on the calling thread (a
        hook's worker, a command; on the reactor, run it in a thread: a read may wait for disk)."""
        conn = self._store.connect()
        try:
            conn.execute("PRAGMA query_only = ON")
            return query(conn)
        finally:
            conn.close()

    def write(self, task: Callable[[sqlite3.Connection, float], T]) -> Deferred:
        """``task(connection, now)`` committed; fires with its result, or fails with what it raised."""
        raise NotImplementedError

    def queue_event(self, event: Event) -> Deferred:
        """Journal ``event`` and queue its record set for the destinations that take it, in one
        transaction; fires with a :class:`~gateway.core.events.QueuedEvent`."""
        raise NotImplementedError

    def import_persons(self, batch: ListedPersons,
                       task: Callable[[sqlite3.Connection, float], T] | None = None) -> Deferred:
        """A population list's batch of changed persons into the person index, their residence
        recorded and their record sets routed and journaled (:mod:`gateway.core.population`),
        with ``task`` (the plugin's own tables: its row digests, its checkpoint) in the same
        transaction; fires with ``(ImportedPersons, task's result)``. A command's journal does
        it (``CommandContext.journal()``); the running gateway's does not take a bulk import
        into its group commits. Version note: added in contract 1.2 (issue 18)."""
        return fail(RuntimeError("import_persons is a command's: run the import as a command "
                                 "(CommandContext.journal())"))

    def wait(self, call: Callable[..., Deferred], *args: Any) -> Any:
        """``call(*args)`` (``journal.write``, ``journal.queue_event``) from a thread that is not
        the reactor's, such as a hook's: its result, once the Deferred fires."""
        raise NotImplementedError


class GatewayJournal(PluginJournal):
    """The running gateway's: writes go through its journal writer, events through its intake
    (its workers or child processes decide them, its bounds apply: an event is refused, AR, when
    the outbox is full, like a message)."""

    def __init__(self, store: Store, ownership: Ownership, writer, intake, reactor, clock) -> None:
        super().__init__(store, ownership)
        self._writer = writer
        self._intake = intake
        self._reactor = reactor
        self._clock = clock

    def write(self, task: Callable[[sqlite3.Connection, float], T]) -> Deferred:
        return self._writer.run(self._ownership.guard(task))

    def queue_event(self, event: Event) -> Deferred:
        envelope = Envelope(event_bytes(event), EVENT_TRANSPORT, event.source, self._clock.seconds())
        return self._intake.submit(envelope).addCallback(
            lambda outcome: QueuedEvent(outcome.message_id, outcome.ack_code, outcome.issues, outcome.duplicate))

    def wait(self, call: Callable[..., Deferred], *args: Any) -> Any:
        if isInIOThread():
            raise RuntimeError("journal.wait blocks until the reactor has done the work, so it cannot run on the "
                               "reactor thread: use the Deferred there")
        return blockingCallFromThread(self._reactor, call, *args)


class CommandJournal(PluginJournal):
    """A CLI command's (and the CLI's replay's): each write and each event in a short BEGIN
    IMMEDIATE transaction of its own on this process's connection, taking turns with a running
    gateway's writer; the Deferreds have fired when they are returned. A running gateway
    delivers the rows at its next outbox refresh."""

    def __init__(self, store: Store, ownership: Ownership, pipeline, unordered: frozenset[str],
                 plugin: str = "") -> None:
        super().__init__(store, ownership)
        #: The plugin whose command this journal serves: a list it imports is journaled as its.
        self.plugin = plugin
        self._bulk: sqlite3.Connection | None = None
        #: The pipeline that decides events, and the batched destinations (no per-person order):
        #: the CLI's replay works with the same.
        self.pipeline = pipeline
        self.unordered = unordered

    @property
    def store(self) -> Store:
        return self._store

    def write(self, task: Callable[[sqlite3.Connection, float], T]) -> Deferred:
        return maybeDeferred(self._transaction, self._ownership.guard(task))

    def queue_event(self, event: Event) -> Deferred:
        envelope = Envelope(event_bytes(event), EVENT_TRANSPORT, event.source, time.time())
        decision = self.pipeline.decide(envelope)

        def journal(conn: sqlite3.Connection, now: float) -> QueuedEvent:
            [committed] = journal_decisions(conn, [decision], now, self.unordered)
            return QueuedEvent(committed.message_id, committed.ack_code, committed.issues, committed.duplicate)

        return maybeDeferred(self._transaction, journal)

    def import_persons(self, batch: ListedPersons,
                       task: Callable[[sqlite3.Connection, float], T] | None = None) -> Deferred:
        guarded = self._ownership.guard(task) if task is not None else None

        def run(conn: sqlite3.Connection, now: float) -> tuple[ImportedPersons, Any]:
            imported = import_listed(conn, now, self.pipeline, self.unordered, self.plugin, batch)
            return imported, guarded(conn, now) if guarded is not None else None

        if self._bulk is None:
            # One connection for the whole import, its page cache kept from batch to batch: the
            # index's B-trees are what a batch reads and writes.
            self._bulk = self._store.connect()
            self._bulk.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
        return maybeDeferred(_in_transaction, self._bulk, run)

    def _transaction(self, task: Callable[[sqlite3.Connection, float], T]) -> T:
        conn = self._store.connect()
        try:
            return _in_transaction(conn, task)
        finally:
            conn.close()

    def wait(self, call: Callable[..., Deferred], *args: Any) -> Any:
        return _fired(call(*args))


def _in_transaction(conn: sqlite3.Connection, task: Callable[[sqlite3.Connection, float], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = task(conn, time.time())
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class ReadOnlyJournal(PluginJournal):
    """A pipeline child process's: it has no journal writer (the gateway's process has the one),
    so it reads, and a write or an event fails saying where to do it instead."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, Ownership(()))

    def write(self, task: Callable[[sqlite3.Connection, float], T]) -> Deferred:
        return fail(RuntimeError(_CHILD))

    def queue_event(self, event: Event) -> Deferred:
        return fail(RuntimeError(_CHILD))

    def wait(self, call: Callable[..., Deferred], *args: Any) -> Any:
        return _fired(call(*args))


_CHILD = ("a pipeline child process (pipeline.isolation = 'processes') only reads the journal; write from the "
          "gateway's process (hssk_journal there, a timer, a command) instead")


def _fired(d: Deferred) -> Any:
    """The result of a Deferred that has fired already (the CLI's and a child's journals)."""
    found: list = []
    d.addBoth(found.append)
    [result] = found
    if isinstance(result, Failure):
        result.raiseException()
    return result
