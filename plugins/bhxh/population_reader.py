"""A list read and checked in a process of its own, a few batches ahead of the import.

Reading a row (CSV or XML), checking it and digesting it is about as much work as indexing and
routing it, and the import's journal work is one thread: so the reading runs in a forked child on
the other core, and hands each batch over, checked, through a bounded queue (at most
:data:`AHEAD` batches wait, so memory stays flat however long the list). The child ends with the
list, or when the import stops wanting batches; if the import's process dies (``kill -9``), the
child notices within a second that its parent is gone and exits.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Iterator
from dataclasses import dataclass

from plugins.bhxh.population import ListError, PopulationSettings, Problem, Resident, read_rows, resident

#: Batches the reader may be ahead of the import.
AHEAD = 3


@dataclass(frozen=True)
class CheckedBatch:
    """One batch: its first row's number, the rows read so far and the byte offset after it (the
    checkpoint), its residents (the last row of each BHXH number) and its problems."""

    first: int
    rows: int
    offset: int
    count: int
    residents: list[Resident]
    problems: list[Problem]


def checked_batches(path: str, file_format: str, settings: PopulationSettings, size: int, *, rows: int = 0,
                    offset: int = 0) -> Iterator[CheckedBatch]:
    """The list's batches, checked in a child process, in order (see the module)."""
    context = multiprocessing.get_context("fork")
    batches = context.Queue(maxsize=AHEAD)
    child = context.Process(target=_read, args=(batches, os.getpid(), path, file_format, settings, size, rows, offset),
                            name="bhxh-list-reader", daemon=True)
    child.start()
    try:
        while True:
            item = batches.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        if child.is_alive():
            child.terminate()
        child.join()
        batches.close()


def _read(batches, parent: int, path: str, file_format: str, settings: PopulationSettings, size: int, rows: int,
          offset: int) -> None:
    try:
        for batch in read_rows(path, file_format, settings, size, rows=rows, offset=offset):
            residents: dict[int, Resident] = {}
            problems: list[Problem] = []
            for n, values in enumerate(batch.values, batch.first):
                found = values if isinstance(values, Problem) else resident(n, values)
                if isinstance(found, Problem):
                    problems.append(found)
                else:
                    residents[found.bhxh] = found
            _put(batches, parent, CheckedBatch(batch.first, batch.rows, batch.offset, len(batch.values),
                                               list(residents.values()), problems))
        _put(batches, parent, None)
    except (ListError, OSError) as e:
        _put(batches, parent, ListError(str(e)))


def _put(batches, parent: int, item) -> None:
    while True:
        try:
            batches.put(item, timeout=1.0)
            return
        except queue.Full:
            if os.getppid() != parent:  # the import is gone: nobody will read this
                os._exit(0)
