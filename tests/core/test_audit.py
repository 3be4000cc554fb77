"""The audit log's hash chain on a real journal file: an intact chain verifies, and an edited,
deleted or reordered entry is found at the right place; ``audit verify`` says so and exits 1; the
copy to syslog is an RFC 5424 frame, over a real UDP socket and a real TCP connection."""
import re
import socket
import sqlite3

import pytest

from gateway.cli import main
from gateway.core.audit import AuditEntry, append, list_entries, verify
from gateway.core.audit_syslog import SyslogSink, parse_address
from gateway.core.store import Store


@pytest.fixture
def journal(tmp_path):
    store = Store(tmp_path / "data" / "gateway.db")
    store.migrate()
    conn = store.connect()
    for i in range(1, 6):
        conn.execute("BEGIN IMMEDIATE")
        append(conn, 1_700_000_000.0 + i, [AuditEntry("cli", "nam", "outbox.pause", target=f"dest=d{i}")])
        conn.execute("COMMIT")
    yield conn
    conn.close()


def test_an_intact_chain_verifies_every_entry(journal):
    assert verify(journal) == (5, None)


def test_an_edited_entry_breaks_the_chain_at_that_entry(journal):
    journal.execute("UPDATE audit_log SET actor = 'someone else' WHERE id = 3")
    _, broken = verify(journal)
    assert broken.entry_id == 3 and "edited" in broken.problem


def test_a_deleted_entry_breaks_the_chain_at_the_entry_after_it(journal):
    journal.execute("DELETE FROM audit_log WHERE id = 3")
    _, broken = verify(journal)
    assert broken.entry_id == 4 and "entry 2" in broken.problem


def test_deleting_the_first_entry_is_found_at_the_second(journal):
    journal.execute("DELETE FROM audit_log WHERE id = 1")
    assert verify(journal)[1].entry_id == 2


def test_swapped_entries_break_the_chain_at_the_first_of_them(journal):
    rows = {r[0]: r[1:] for r in journal.execute("SELECT id, target, prev_hash, hash FROM audit_log")}
    for entry_id, other in ((2, 3), (3, 2)):
        journal.execute("UPDATE audit_log SET target = ?, prev_hash = ?, hash = ? WHERE id = ?", (*rows[other], entry_id))
    assert verify(journal)[1].entry_id == 2


def test_entries_hold_no_identifier_in_clear(journal):
    journal.execute("BEGIN IMMEDIATE")
    append(journal, 1_700_000_100.0, [AuditEntry("admin", "admin (token)", "messages.replay", "127.0.0.1:5",
                                                 "control id 079085000123", "refused", "CCCD 079085000123 unknown")])
    journal.execute("COMMIT")
    [entry] = list_entries(journal, action="messages.replay")
    assert "079085000123" not in entry["target"] + entry["reason"] and "0790*****123" in entry["reason"]
    assert verify(journal)[1] is None


def test_audit_verify_exits_1_naming_the_first_broken_entry(journal, tmp_path, capsys):
    data_dir = str(tmp_path / "data")
    intact = main(["audit", "verify", "--data-dir", data_dir]), capsys.readouterr().out
    journal.execute("DELETE FROM audit_log WHERE id = 2")
    broken = main(["audit", "verify", "--data-dir", data_dir]), capsys.readouterr().out

    assert intact[0] == 0 and "5 entries" in intact[1]
    assert broken[0] == 1 and "broken at entry 3" in broken[1]


RFC5424 = re.compile(
    rb'^<(?P<pri>\d{1,3})>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (?P<host>\S+) hssk-gateway \d+ (?P<msgid>\S{1,32}) '
    rb'\[audit@32473 id="(?P<id>\d+)" surface="(?P<surface>[^"]*)" actor="(?P<actor>[^"]*)" peer="[^"]*" '
    rb'action="[^"]*" target="(?P<target>(?:[^"\\]|\\.)*)" outcome="(?P<outcome>[^"]*)" reason="(?:[^"\\]|\\.)*" '
    rb'prev_hash="[0-9a-f]{64}"\] (?P<hash>[0-9a-f]{64})$')


def _entries(journal) -> list[dict]:
    journal.execute("BEGIN IMMEDIATE")
    rows = append(journal, 1_700_000_200.5, [AuditEntry("http", "bv_q1", "auth", "127.0.0.1:4000", "", "refused",
                                                        'bad_credentials: "x"]'),
                                             AuditEntry("cli", "nam", "outbox.resume", target="dest=d1")])
    journal.execute("COMMIT")
    return rows


def test_syslog_copy_is_one_rfc5424_datagram_per_entry(journal):
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(5)
    sink = SyslogSink(f"udp:127.0.0.1:{collector.getsockname()[1]}", hostname="gw1")
    rows = _entries(journal)
    try:
        sink.send(rows)
        frames = [collector.recv(65535), collector.recv(65535)]
    finally:
        sink.close()
        collector.close()
    refused, resumed = (RFC5424.match(f) for f in frames)
    assert refused["pri"] == b"85" and resumed["pri"] == b"86"  # authpriv.notice, authpriv.info
    assert (refused["msgid"], refused["surface"], refused["outcome"]) == (b"auth", b"http", b"refused")
    assert b'reason="bad_credentials: \\"x\\"\\]"' in frames[0]
    assert [m["hash"].decode() for m in (refused, resumed)] == [r["hash"] for r in rows]


def test_syslog_over_tcp_sends_octet_counted_frames(journal):
    listener = socket.create_server(("127.0.0.1", 0))
    sink = SyslogSink(f"tcp:127.0.0.1:{listener.getsockname()[1]}", hostname="gw1")
    try:
        sink.send(_entries(journal))
        peer, _ = listener.accept()
        peer.settimeout(5)
        data = b""
        while not _complete(data, 2):
            chunk = peer.recv(65535)
            if not chunk:
                break
            data += chunk
        peer.close()
    finally:
        sink.close()
        listener.close()
    frames = _split_octet_counted(data)
    assert len(frames) == 2 and all(RFC5424.match(f) for f in frames)


def _split_octet_counted(data: bytes) -> list[bytes]:
    frames = []
    while data:
        length, _, rest = data.partition(b" ")
        frames.append(rest[:int(length)])
        data = rest[int(length):]
    return frames


def _complete(data: bytes, count: int) -> bool:
    try:
        frames = _split_octet_counted(data)
    except ValueError:
        return False
    return len(frames) == count and all(RFC5424.match(f) for f in frames)


@pytest.mark.parametrize("text", ["syslog:127.0.0.1:514", "udp:127.0.0.1", "tcp::514", "udp:h:70000"])
def test_a_wrong_syslog_address_is_refused_with_the_form_it_should_have(text):
    with pytest.raises(ValueError, match="udp:HOST:PORT"):
        parse_address(text)


def test_the_migration_makes_an_empty_log(tmp_path):
    store = Store(tmp_path / "gateway.db")
    assert "0014_audit_log" in store.migrate()
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)
    conn.close()
