"""Crash test (DESIGN §3 invariant 1, §8): an accepting ACK is sent only after the commit.

The gateway runs as a real subprocess with the shipped config (the viettel_his plugin claims
MSH-3 HIS_THU_NGHIEM). Six blocking MLLP senders, window 1, send thousands of distinct copies of
the ADT^A04 sample (MSH-10 rewritten). The sample keeps MSH-15=AL / MSH-16=NE, so the accepting
answer is the enhanced-mode commit accept CA (AA is also counted as accepting).

1. traffic, then SIGKILL mid-stream; the journal is opened right away: every control id that got
   CA/AA is there, status 'accepted', once;
2. restart on the same data dir, resend everything unacknowledged plus some already-acknowledged
   messages (duplicates), SIGKILL again mid-stream, same checks;
3. restart, resend the rest (and some duplicates again), stop cleanly with SIGTERM.

At the end every message is journaled exactly once with status 'accepted', and every message
resent after its ACK was recognised as a repeat (repeat_count) instead of stored again.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path

from tests.crash_client import (SAMPLE, GatewayProcess, Tally, join_all, message_with_control_id, run_senders)

THREADS = 6
PER_THREAD = 800                  # 4,800 distinct messages
KILL_AFTER_ACKS = (1500, 1000)    # SIGKILL after this many ACKs in the phase ...
KILL_AFTER_SECONDS = (1.5, 1.0)   # ... or after this much traffic, whichever comes first
DUPLICATES_PER_THREAD = 20        # acknowledged messages resent after each restart
WATCHDOG_SECONDS = 55.0           # the test never hangs: everything is SIGKILLed past this


def journal(data_dir: Path) -> dict[str, list[tuple[str, str, int]]]:
    """control id -> [(status, ack_code, repeat_count), ...], read straight from the SQLite file."""
    conn = sqlite3.connect(data_dir / "gateway.db", timeout=10)
    try:
        rows = conn.execute("SELECT control_id, status, ack_code, repeat_count FROM messages ORDER BY id").fetchall()
    finally:
        conn.close()
    out: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for control_id, status, ack_code, repeat_count in rows:
        out[control_id].append((status, ack_code, repeat_count or 0))
    return out


def check_acked_are_journaled(data_dir: Path, acked: set[str], label: str) -> dict:
    rows = journal(data_dir)
    lost = sorted(cid for cid in acked if not any(status == "accepted" for status, _, _ in rows.get(cid, ())))
    duplicates = sorted(cid for cid, copies in rows.items() if len(copies) > 1)
    assert not lost, f"{label}: {len(lost)} acknowledged messages missing from the journal, e.g. {lost[:5]}"
    assert not duplicates, f"{label}: {len(duplicates)} control ids journaled more than once, e.g. {duplicates[:5]}"
    return rows


def wait_then_kill(gateway: GatewayProcess, tally: Tally, threads, acks: int, seconds: float) -> None:
    """Let traffic run until ``acks`` ACKs or ``seconds``, then SIGKILL while senders are mid-stream."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and tally.accepted_count() < acks and any(t.is_alive() for t in threads):
        time.sleep(0.005)
    assert any(t.is_alive() for t in threads), "all senders finished before the kill: raise PER_THREAD"
    assert gateway.kill() == -9
    join_all(threads, timeout=15)


def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path):
    template = SAMPLE.read_bytes()
    data_dir = tmp_path / "data"
    batches = [[(cid, message_with_control_id(template, cid)) for cid in (f"CRASH{t}{i:05d}" for i in range(PER_THREAD))]
               for t in range(THREADS)]
    everything = {cid for batch in batches for cid, _ in batch}
    assert len(everything) == THREADS * PER_THREAD

    acked: dict[str, str] = {}          # every accepting ACK seen, in any phase
    acked_before_kill: set[str] = set()  # accepting ACKs received by a gateway that was then SIGKILLed
    resent_after_ack: set[str] = set()   # duplicates whose (repeat) ACK came back accepting
    gateways: list[GatewayProcess] = []
    watchdog = threading.Timer(WATCHDOG_SECONDS, lambda: [g.ensure_dead() for g in gateways])
    watchdog.daemon = True
    watchdog.start()
    started = time.monotonic()
    try:
        def phase(kill_index: int | None) -> Tally:
            gateway = GatewayProcess(data_dir)
            gateways.append(gateway)
            tally = Tally()
            work, duplicates = [], set()
            for batch in batches:
                done = [item for item in batch if item[0] in acked]
                again = done[-DUPLICATES_PER_THREAD:]
                duplicates.update(cid for cid, _ in again)
                work.append(again + [item for item in batch if item[0] not in acked])
            threads = run_senders(gateway.port, work, tally)
            if kill_index is None:
                join_all(threads, timeout=30)
                assert gateway.terminate() == 0, f"unclean shutdown; log:\n{gateway.log()}"
            else:
                wait_then_kill(gateway, tally, threads, KILL_AFTER_ACKS[kill_index], KILL_AFTER_SECONDS[kill_index])
            assert not tally.problems, f"protocol problems: {tally.problems[:5]}"
            acked.update(tally.acked)
            resent_after_ack.update(duplicates & tally.acked.keys())
            if kill_index is not None:
                acked_before_kill.update(tally.acked)
                rows = check_acked_are_journaled(data_dir, set(acked), f"after kill {kill_index + 1}")
                unacked_rows = sum(1 for cid in rows if cid not in acked)
                # window 1: at most one message per connection can be committed but unanswered
                assert unacked_rows <= THREADS, f"{unacked_rows} journaled messages were never sent an answer"
                print(f"\nkill {kill_index + 1}: acked_this_phase={len(tally.acked)} acked_total={len(acked)} "
                      f"journaled={sum(len(c) for c in rows.values())} committed_not_acked={unacked_rows} "
                      f"refused={len(tally.refused)} lost=0")
            return tally

        first = phase(0)
        assert 0 < len(first.acked) < len(everything), "the first kill did not land mid-stream"
        phase(1)
        phase(None)
    finally:
        watchdog.cancel()
        for gateway in gateways:
            gateway.ensure_dead()

    assert set(acked) == everything, f"{len(everything - set(acked))} messages never acknowledged"
    assert set(acked.values()) <= {"CA", "AA"}
    rows = check_acked_are_journaled(data_dir, set(acked), "after clean stop")
    assert set(rows) == everything, f"unexpected journal rows: {sorted(set(rows) - everything)[:5]}"
    assert all(copies[0][:2] == ("accepted", "AA") for copies in rows.values())
    not_counted = sorted(cid for cid in resent_after_ack if rows[cid][0][2] < 1)
    assert resent_after_ack and not not_counted, f"repeats not recognised as repeats: {not_counted[:5]}"
    duplicates = sum(1 for copies in rows.values() if len(copies) > 1)
    lost = sum(1 for cid in acked_before_kill if rows.get(cid, [("", "", 0)])[0][0] != "accepted")
    print(f"\nacked_before_kill={len(acked_before_kill)} journaled={sum(len(c) for c in rows.values())} "
          f"duplicates={duplicates} lost={lost} resent_after_ack={len(resent_after_ack)} "
          f"elapsed={time.monotonic() - started:.1f}s")
