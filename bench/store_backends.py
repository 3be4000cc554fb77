"""Store backends benchmark: MLLP intake throughput of one node on SQLite, one node on PostgreSQL,
and two nodes on PostgreSQL behind HAProxy, in one run on the same machine.

    .venv/bin/python bench/store_backends.py [--messages 4000] [--senders 8] [--people 200]

Each configuration gets fresh state: a new data dir, a new database on one throwaway PostgreSQL
cluster (``gateway.testing.postgres``: initdb in a temp dir; durability on, as in production:
fsync and synchronous_commit as the server defaults), and a record store
(``tests.fake_store``) that every node delivers to. ``--senders`` blocking MLLP senders (window
1, Python threads, ``tests.crash_client``) send ``--messages`` distinct copies of the ADT^A04
sample (MSH-10 unique, the CCCD one of ``--people``) to the node, or to HAProxy
(``config/haproxy/hssk-gateway.cfg``) for two nodes. Reported: accepting ACKs per second, and
the seconds until the outbox is drained. The senders run in this process, so on a small machine
they share the CPUs with the nodes and the database: compare the rows with each other, not with
``bench/mllp_throughput.py`` (a C load generator).
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gateway.testing import postgres  # noqa: E402  (after the path insert)
from tests.crash_client import SAMPLE, GatewayProcess, Tally, join_all, run_senders  # noqa: E402
from tests.test_delivery_crash import StoreProcess, for_person  # noqa: E402
from tests.test_failover import HaproxyProcess, node_config  # noqa: E402

#: The benchmark's cluster keeps PostgreSQL's durable defaults (the tests' cluster turns fsync off).
postgres._SETTINGS = ("shared_buffers=128MB", "max_connections=60", "listen_addresses=127.0.0.1")


def sqlite_config(store_port: int) -> str:
    """The nodes' config with the default store (one SQLite file, fsync on every commit)."""
    return node_config(store_port, "single", store='synchronous = "FULL"')


def undelivered(data_dir: Path | None, dsn: str | None) -> int:
    sql = "SELECT count(*) FROM outbox WHERE state != 'delivered'"
    if dsn:
        with psycopg.connect(dsn) as conn:
            return conn.execute(sql).fetchone()[0]
    conn = sqlite3.connect(data_dir / "gateway.db", timeout=10)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def run(name: str, work: Path, server: postgres.PostgresServer | None, nodes: int, args) -> dict:
    directory = work / name
    directory.mkdir()
    store = StoreProcess(directory / "store.jsonl")
    dsn = server.create_database(name.replace("-", "_")) if server else None
    if dsn:
        os.environ["HSSK_FAILOVER_DSN"] = dsn
    processes = []
    try:
        for n in range(nodes):
            config = directory / f"node{n}.toml"
            config.write_text(node_config(store.port, f"node-{n}") if dsn else sqlite_config(store.port),
                              encoding="utf-8")
            processes.append(GatewayProcess(directory / f"data{n}", config=str(config)))
        front = None
        port = processes[0].port
        if nodes > 1:
            front = HaproxyProcess(processes)
            front.wait_ready()
            port = front.mllp_port
        template = SAMPLE.read_bytes()
        per = args.messages // args.senders
        batches = [[(cid, for_person(template, cid, (s * per + i) % args.people))
                    for i, cid in enumerate(f"B{s:02d}{i:06d}" for i in range(per))] for s in range(args.senders)]
        tally = Tally()
        started = time.monotonic()
        join_all(run_senders(port, batches, tally), timeout=1800)
        intake = time.monotonic() - started
        while undelivered(directory / "data0", dsn):
            time.sleep(0.1)
        drained = time.monotonic() - started
        if front:
            front.stop()
        for process in processes:
            process.terminate()
        return {"configuration": name, "acked": len(tally.acked), "problems": len(tally.problems) + len(tally.refused),
                "acks_per_second": len(tally.acked) / intake, "drained_seconds": drained}
    finally:
        for process in processes:
            process.ensure_dead()
        store.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--people", type=int, default=200)
    args = parser.parse_args()
    server = postgres.PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="hssk-bench-") as work:
            results = [run("sqlite-1-node", Path(work), None, 1, args),
                       run("postgresql-1-node", Path(work), server, 1, args),
                       run("postgresql-2-nodes", Path(work), server, 2, args)]
    finally:
        server.stop()
    print(f"{'configuration':<22} {'acked':>7} {'ACKs/s':>8} {'drained (s)':>12} {'problems':>9}")
    for r in results:
        print(f"{r['configuration']:<22} {r['acked']:>7} {r['acks_per_second']:>8.0f} {r['drained_seconds']:>12.1f} "
              f"{r['problems']:>9}")


if __name__ == "__main__":
    main()
