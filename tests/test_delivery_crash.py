"""Crash test for delivery (DESIGN §3: nothing ACKed may be lost or delivered twice).

A gateway subprocess takes thousands of messages over MLLP for 60 different people and delivers
them to a fake record store subprocess (``tests.fake_store``) that answers 503 to every 7th
request. The gateway is SIGKILLed twice while it is both taking and delivering messages, then
restarted until the outbox is empty. At the end:

- every message that got an accepting ACK reached the store (lost = 0);
- the store saw exactly one idempotency key per accepted message, and every copy it was sent
  under one key had the same content (a redelivery after a crash is the same record);
- each person's records were first accepted by the store in the order the gateway received them.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from tests.crash_client import REPO, SAMPLE, GatewayProcess, Tally, join_all, message_with_control_id, run_senders

THREADS = 4
PER_THREAD = 500        # 2,000 distinct messages
PEOPLE = 60
#: Each of the first two gateways is killed once it has acknowledged this share of what was
#: left to send: by progress, not by time, so a faster or slower machine still kills mid-stream.
KILL_AT_SHARE = (0.4, 0.4)
KILL_WAIT_SECONDS = 60.0
DRAIN_TIMEOUT = 60.0
WATCHDOG_SECONDS = 150.0


def config_for(store_port: int, store: str = 'synchronous = "FULL"', response_timeout_seconds: float = 5) -> str:
    """The gateway's config: ``store`` is the body of its ``[store]`` table."""
    return f"""
[store]
{store}

[plugins.viettel_his]
sending_applications = ["HIS_THU_NGHIEM"]

[destinations.store]
kind = "http"
url = "http://127.0.0.1:{store_port}/records"
backoff_base_seconds = 0.05
backoff_cap_seconds = 0.5
circuit_failures = 50
circuit_open_seconds = 0.2
max_in_flight = 8
response_timeout_seconds = {response_timeout_seconds}
"""


def for_person(template: bytes, control_id: str, person: int) -> bytes:
    """The sample with its own MSH-10 and a CCCD chosen from PEOPLE different people."""
    return message_with_control_id(template, control_id).replace(b"079085000123", f"0790850{person:05d}".encode())


class StoreProcess:
    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fake_store", "--journal", str(journal),
                                      "--fail-every", "7"], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.port = int(self.proc.stdout.readline())

    def accepted(self) -> list[dict]:
        return [json.loads(line) for line in self.journal.read_text().splitlines() if line]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def outbox(data_dir: Path) -> list[tuple]:
    conn = sqlite3.connect(data_dir / "gateway.db", timeout=10)
    try:
        return conn.execute(
            "SELECT m.control_id, o.idempotency_key, o.ordering_key, o.state FROM outbox o "
            "JOIN messages m ON m.id = o.message_id ORDER BY o.id").fetchall()
    finally:
        conn.close()


def wait_until_drained(rows: Callable[[], list[tuple]], timeout: float) -> None:
    """Until every row ``rows()`` reads (control id, key, person, state) is delivered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(state == "delivered" for *_, state in rows()):
            return
        time.sleep(0.2)
    left = [row for row in rows() if row[3] != "delivered"]
    raise AssertionError(f"{len(left)} outbox rows not delivered after {timeout}s, e.g. {left[:3]}")


def check_delivered_once_in_order(acked: dict[str, str], rows: list[tuple], accepted: list[dict]) -> tuple[dict, dict]:
    """Every acknowledged message reached the store, no key the gateway did not acknowledge did,
    one content per key, and each person's keys were first accepted in outbox order. ``rows``:
    (control id, key, person, state) in outbox order; ``accepted``: the store's journal. Returns
    the contents per key and the keys per person."""
    key_of = {control_id: key for control_id, key, _, _ in rows}
    contents: dict[str, set[str]] = defaultdict(set)
    first_seen: list[str] = []
    for entry in accepted:
        if entry["key"] not in contents:
            first_seen.append(entry["key"])
        contents[entry["key"]].add(entry["sha"])

    lost = sorted(cid for cid in acked if key_of.get(cid) not in contents)
    assert not lost, f"{len(lost)} acknowledged messages never reached the store, e.g. {lost[:5]}"
    assert set(contents) == {key_of[cid] for cid in acked}, "the store holds keys of messages never acknowledged"
    assert all(len(shas) == 1 for shas in contents.values()), "one key was sent with different content"

    position = {key: n for n, key in enumerate(first_seen)}
    by_person: dict[str, list[str]] = defaultdict(list)
    for _, key, person, _ in rows:
        by_person[person].append(key)
    out_of_order = [p for p, keys in by_person.items() if [position[k] for k in keys] != sorted(position[k] for k in keys)]
    assert not out_of_order, f"{len(out_of_order)} people had records delivered out of order"
    return contents, by_person


def wait_for_progress(tally: Tally, store: StoreProcess, acks: int) -> None:
    """Until this gateway has acknowledged ``acks`` messages and the store has taken some."""
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while time.monotonic() < deadline:
        if tally.accepted_count() >= acks and store.accepted():
            return
        time.sleep(0.02)
    raise AssertionError(f"only {tally.accepted_count()} of {acks} acknowledgements after {KILL_WAIT_SECONDS}s")


def test_sigkill_during_delivery_loses_and_doubles_nothing(tmp_path):
    template = SAMPLE.read_bytes()
    data_dir = tmp_path / "data"
    config = tmp_path / "gateway.toml"
    store = StoreProcess(tmp_path / "store.jsonl")
    config.write_text(config_for(store.port), encoding="utf-8")
    batches = [[(cid, for_person(template, cid, (t * PER_THREAD + i) % PEOPLE))
                for i, cid in enumerate(f"DLV{t}{i:05d}" for i in range(PER_THREAD))] for t in range(THREADS)]
    acked: dict[str, str] = {}
    gateways: list[GatewayProcess] = []
    watchdog = threading.Timer(WATCHDOG_SECONDS, lambda: [g.ensure_dead() for g in gateways])
    watchdog.daemon = True
    watchdog.start()
    started = time.monotonic()
    try:
        for phase, kill_at in enumerate((*KILL_AT_SHARE, None)):
            gateway = GatewayProcess(data_dir, config=str(config))
            gateways.append(gateway)
            tally = Tally()
            left = [[m for m in batch if m[0] not in acked] for batch in batches]
            threads = run_senders(gateway.port, left, tally)
            if kill_at is None:
                join_all(threads, timeout=60)
                wait_until_drained(lambda: outbox(data_dir), DRAIN_TIMEOUT)
                assert gateway.terminate() == 0, f"unclean shutdown; log:\n{gateway.log()}"
            else:
                wait_for_progress(tally, store, int(kill_at * sum(map(len, left))))
                delivered_before = len(store.accepted())
                assert any(t.is_alive() for t in threads), "senders finished before the kill: lower KILL_AT_SHARE"
                assert gateway.kill() == -9
                join_all(threads, timeout=15)
                assert delivered_before > 0, "nothing was delivered before the kill: the kill missed delivery"
            assert not tally.problems, f"protocol problems: {tally.problems[:5]}"
            acked.update(tally.acked)
            print(f"\nphase {phase + 1}: acked_total={len(acked)} store_accepted={len(store.accepted())}")
    finally:
        watchdog.cancel()
        for gateway in gateways:
            gateway.ensure_dead()
        store.stop()

    accepted = store.accepted()
    contents, by_person = check_delivered_once_in_order(acked, outbox(data_dir), accepted)

    assert len(by_person) == PEOPLE
    print(f"\nacked={len(acked)} distinct_keys={len(contents)} store_requests_accepted={len(accepted)} "
          f"redelivered={len(accepted) - len(contents)} lost=0 people={len(by_person)} "
          f"elapsed={time.monotonic() - started:.1f}s")
    assert len(contents) == len(acked) == THREADS * PER_THREAD
