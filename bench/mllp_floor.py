"""Floor peers for the MLLP benchmark: what Twisted and SQLite alone cost, without the gateway.

    .venv/bin/python bench/mllp_floor.py PORT                  # frame in, AA out, nothing else
    .venv/bin/python bench/mllp_floor.py PORT --journal DIR    # ... after a group commit of the raw frame

The first reads MLLP frames with a Twisted protocol and answers each with a minimal AA whose
MSA-2 is the frame's MSH-10: the cost of the reactor, the sockets and the framing. The second
first stores each frame's sender, control id and bytes in SQLite (WAL, synchronous=FULL) through
one writer thread that commits whatever is queued in one transaction, and answers after the
commit: the cost of invariant 1's commit on this disk. Like the gateway's journal writer, it
leaves WAL checkpoints to gateway.core.checkpoint's thread. Neither decodes, validates, normalises,
renders or queues anything, so the gateway's throughput divided by theirs says how much of a
core is left for that work. Listens on 127.0.0.1 only; stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import queue
import sqlite3
import threading
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from gateway.core.checkpoint import Checkpointer
from gateway.core.metrics import Metrics

START, END = b"\x0b", b"\x1c\r"


def ack(frame: bytes) -> bytes:
    msh = frame.split(b"\r", 1)[0].split(b"|")
    control_id = msh[9] if len(msh) > 9 else b""
    return START + b"MSH|^~\\&|FLOOR|FLOOR|||20260101000000||ACK|" + control_id + b"|P|2.5\rMSA|AA|" + control_id + \
        b"\r" + END


class Journal:
    """One writer thread, group commit, answers handed back to the reactor once per commit."""

    def __init__(self, directory: str) -> None:
        path = Path(directory) / "floor.db"
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, sender TEXT, control_id TEXT,"
                          " raw BLOB)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS by_sender ON messages (sender, control_id)")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.checkpointer = Checkpointer(lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False),
                                         Metrics())
        self.checkpointer.start()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            rows = []
            for _, frame in batch:
                msh = frame.split(b"\r", 1)[0].split(b"|")
                sender = b"|".join(msh[2:4]).decode("utf-8", "replace")
                control_id = msh[9].decode("utf-8", "replace") if len(msh) > 9 else ""
                rows.append((sender, control_id, frame))
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT INTO messages (sender, control_id, raw) VALUES (?, ?, ?)", rows)
            self.conn.execute("COMMIT")
            self.checkpointer.committed()
            self.checkpointer.catch_up(self.conn)
            reactor.callFromThread(answer_all, batch)


def answer_all(batch: list) -> None:
    for protocol, frame in batch:
        protocol.transport.write(ack(frame))


class FloorProtocol(Protocol):
    def __init__(self, journal: Journal | None) -> None:
        self.journal = journal
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        answers = []
        while True:
            end = self.buffer.find(END)
            if end < 0:
                break
            frame, self.buffer = self.buffer[:end].lstrip(START), self.buffer[end + len(END):]
            if self.journal is None:
                answers.append(ack(frame))
            else:
                self.journal.queue.put((self, frame))
        if answers:
            self.transport.write(b"".join(answers))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("port", type=int)
    p.add_argument("--journal", metavar="DIR", help="store every frame in DIR/floor.db before answering")
    args = p.parse_args()
    journal = Journal(args.journal) if args.journal else None
    factory = Factory.forProtocol(lambda: FloorProtocol(journal))
    reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    reactor.run()  # Twisted's own handlers stop it on SIGTERM and SIGINT


if __name__ == "__main__":
    main()
