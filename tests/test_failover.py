"""Two gateway nodes on one PostgreSQL journal behind the shipped HAProxy config (issue 21).

Senders reach the nodes only through HAProxy (MLLP, TCP mode, health-checked on /readyz). A few
messages go straight to node A first. Under load node A is SIGKILLed; the senders resend what
was not acknowledged, through HAProxy again, and so land on node B; the messages node A had
acknowledged are resent too. At the end:

- every acknowledged message reached the record store, under one idempotency key, with one
  content per key (node B took over node A's rows in flight once their lease ran out);
- each person's records were first accepted by the store in the order the journal queued them;
- a message node A acknowledged and node B was sent again got the stored answer (CA), and the
  journal holds it once, with the repeat counted.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict

import psycopg

from gateway.testing import require_program
from tests.crash_client import REPO, SAMPLE, GatewayProcess, Tally, join_all, run_senders
from tests.test_delivery_crash import (StoreProcess, check_delivered_once_in_order, config_for, for_person,
                                      wait_until_drained)

THREADS = 4
PER_THREAD = 120        # 480 distinct messages through HAProxy
DIRECT = 12             # sent straight to node A before the load, resent to node B after the kill
PEOPLE = 20
LEASE_SECONDS = 3.0
WATCHDOG_SECONDS = 90.0


def node_config(store_port: int, node: str, store: str = "") -> str:
    """The crash test's config on the shared PostgreSQL journal (or the ``[store]`` body given): a
    lease short enough for the test to wait out, a response timeout shorter than the lease, and a
    fast poll for the other node's rows."""
    store = store or (f'backend = "postgresql"\ndsn_env = "HSSK_FAILOVER_DSN"\nnode = "{node}"\n'
                      f'lease_seconds = {LEASE_SECONDS}')
    return config_for(store_port, store, response_timeout_seconds=2) + "\n[outbox]\npoll_interval_seconds = 0.2\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HaproxyProcess:
    """``haproxy -f config/haproxy/hssk-gateway.cfg`` on 127.0.0.1 with the two nodes' ports."""

    def __init__(self, nodes: list[GatewayProcess]) -> None:
        self.mllp_port, self.http_port = free_port(), free_port()
        env = dict(os.environ, HSSK_LISTEN_HOST="127.0.0.1", HSSK_MLLP_PORT=str(self.mllp_port),
                   HSSK_HTTP_PORT=str(self.http_port), HSSK_CHECK_INTERVAL="300ms")
        for name, node in zip("AB", nodes):
            env |= {f"HSSK_NODE_{name}_HOST": "127.0.0.1", f"HSSK_NODE_{name}_MLLP": str(node.port),
                    f"HSSK_NODE_{name}_HTTP": str(node.http_port)}
        self.proc = subprocess.Popen([require_program("haproxy", "haproxy"), "-db", "-f",
                                      str(REPO / "config" / "haproxy" / "hssk-gateway.cfg")],
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the HTTP frontend passes /readyz through to a node in rotation."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=1) as s:
                    s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.0 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("HAProxy did not put a node in rotation")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def outbox(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT m.control_id, o.idempotency_key, o.ordering_key, o.state FROM outbox o "
                            "JOIN messages m ON m.id = o.message_id ORDER BY o.id").fetchall()


def journal(dsn: str) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = defaultdict(list)
    with psycopg.connect(dsn) as conn:
        for control_id, status, repeats in conn.execute("SELECT control_id, status, repeat_count FROM messages"):
            rows[control_id].append((status, repeats))
    return rows


def test_sigkill_of_one_node_behind_haproxy_loses_doubles_and_reorders_nothing(tmp_path, postgres_dsn, monkeypatch):
    require_program("haproxy", "haproxy")
    monkeypatch.setenv("HSSK_FAILOVER_DSN", postgres_dsn)
    template = SAMPLE.read_bytes()
    store = StoreProcess(tmp_path / "store.jsonl")
    configs = []
    for node in ("node-a", "node-b"):
        configs.append(tmp_path / f"{node}.toml")
        configs[-1].write_text(node_config(store.port, node), encoding="utf-8")
    direct = [(cid, for_person(template, cid, i % PEOPLE)) for i, cid in enumerate(f"DIR{i:04d}" for i in range(DIRECT))]
    batches = [[(cid, for_person(template, cid, (t * PER_THREAD + i) % PEOPLE))
                for i, cid in enumerate(f"FO{t}{i:05d}" for i in range(PER_THREAD))] for t in range(THREADS)]
    processes: list = []
    watchdog = threading.Timer(WATCHDOG_SECONDS, lambda: [p.ensure_dead() for p in processes if hasattr(p, "ensure_dead")])
    watchdog.daemon = True
    watchdog.start()
    try:
        node_a = GatewayProcess(tmp_path / "a", config=str(configs[0]))
        node_b = GatewayProcess(tmp_path / "b", config=str(configs[1]))
        processes += [node_a, node_b]
        haproxy = HaproxyProcess([node_a, node_b])
        processes.append(haproxy)
        haproxy.wait_ready()

        on_a = Tally()
        join_all(run_senders(node_a.port, [direct], on_a), timeout=30)
        assert len(on_a.acked) == DIRECT, on_a.refused

        tally = Tally()
        threads = run_senders(haproxy.mllp_port, batches, tally)
        deadline = time.monotonic() + 30
        while tally.accepted_count() < THREADS * PER_THREAD // 3 or not store.accepted():
            assert time.monotonic() < deadline, f"only {tally.accepted_count()} acknowledgements"
            time.sleep(0.02)
        assert any(t.is_alive() for t in threads), "senders finished before the kill"
        assert node_a.kill() == -9
        join_all(threads, timeout=30)

        resend = Tally()
        left = [[m for m in batch if m[0] not in tally.acked] for batch in batches]
        join_all(run_senders(haproxy.mllp_port, [*left, direct], resend), timeout=60)
        wait_until_drained(lambda: outbox(postgres_dsn), timeout=30)
        assert node_b.terminate() == 0, f"unclean shutdown; log:\n{node_b.log()}"
        problems = tally.problems + resend.problems
        assert not problems, f"protocol problems: {problems[:5]}"
    finally:
        watchdog.cancel()
        for process in processes:
            process.ensure_dead() if hasattr(process, "ensure_dead") else process.stop()
        store.stop()

    acked = {**on_a.acked, **tally.acked, **resend.acked}
    assert len(acked) == THREADS * PER_THREAD + DIRECT, f"refused: {dict(list(resend.refused.items())[:5])}"
    assert all(resend.acked.get(cid) == "CA" for cid, _ in direct), "a resend to node B did not get the stored answer"
    rows = journal(postgres_dsn)
    assert all(len(rows[cid]) == 1 and rows[cid][0][1] >= 1 for cid, _ in direct), "a resend was journaled again"
    assert not [cid for cid, copies in rows.items() if len(copies) > 1], "a control id was journaled twice"

    contents, by_person = check_delivered_once_in_order(acked, outbox(postgres_dsn), store.accepted())
    print(f"\nacked={len(acked)} keys={len(contents)} store_accepted={len(store.accepted())} people={len(by_person)}")
