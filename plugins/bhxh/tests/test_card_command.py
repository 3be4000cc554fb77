"""``hssk-gateway bhxh card`` as an operator runs it: a subprocess of the real command line asking
the portal double on 127.0.0.1. Masked unless ``--reveal``; the exit status says usable (0), not
usable (3), not checked (1) (what ``--reveal`` shows and a bad setting are tested in process,
``test_card_check.py``); a new card reaches the person index of the data dir, and a reveal its
audit log."""
from __future__ import annotations

import getpass
import json
import os
import sqlite3
import sys

import pytest_twisted
from twisted.internet.utils import getProcessOutputAndValue

from gateway.plugin import mask_identifier
from gateway.testing import GatewayUnderTest
from plugins.bhxh.tests.portal import BIRTH, HOLDERS, NAME, card, portal, settings_table


def _toml(data_dir, table: dict) -> str:
    lines = [f'data_dir = "{data_dir}"', "[plugins.bhxh.card_check]"]
    lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


async def run_card(tmp_path, url: str, *args: str, **table) -> tuple[str, str, int]:
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(tmp_path / "data", settings_table(url, **table)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "gateway.cli", "bhxh", "card", "--config", str(config), *args], env=env)
    return out.decode("utf-8"), err.decode("utf-8"), code


@pytest_twisted.ensureDeferred
async def test_a_usable_card_is_shown_masked_with_its_code_and_action_and_exits_0(tmp_path):
    double = portal()
    url = await double.listen()
    try:
        out, err, code = await run_card(tmp_path, url, card(1), "--name", NAME, "--birth", BIRTH)
        assert code == 0, err
        assert f"card        {mask_identifier(card(1))}" in out and card(1) not in out
        assert "result      000 card valid (usable)" in out and "action      use the card" in out
        assert "holder      Nguyễn V. A., born 1985" in out and "12/04" not in out
    finally:
        await double.stop()


@pytest_twisted.ensureDeferred
async def test_an_unusable_card_exits_3_and_a_card_not_checked_exits_1_saying_why(tmp_path):
    double = portal()
    url = await double.listen()
    revoked = next(h.card for h in HOLDERS if h.result == "110")
    server = next(h.card for h in HOLDERS if h.result == "101")
    try:
        out, err, code = await run_card(tmp_path, url, revoked, "--name", NAME, "--birth", BIRTH)
        assert code == 3 and "result      110 card revoked (unusable)" in out, err

        out, err, code = await run_card(tmp_path, url, server, "--name", NAME, "--birth", BIRTH)
        assert code == 1 and f"card {mask_identifier(server)} not checked: the BHXH portal answered 101" in err
    finally:
        await double.stop()


@pytest_twisted.ensureDeferred
async def test_a_new_card_found_from_the_command_line_is_added_to_the_person_index(tmp_path):
    gateway = GatewayUnderTest(tmp_path / "data", ["bhxh"])
    await gateway.start()  # the data dir's journal, as a gateway that ran leaves it
    await gateway.stop()
    double = portal()
    url = await double.listen()
    old = next(h for h in HOLDERS if h.result == "004")
    try:
        out, err, code = await run_card(tmp_path, url, old.card, "--name", NAME, "--birth", BIRTH, "--reveal")
        assert code == 0, err
        assert f"new card    {old.new_card}, valid 20270101–20271231" in out
        assert "person index: new card queued" in out
    finally:
        await double.stop()
    conn = sqlite3.connect(gateway.config.database_path)
    try:
        rows = conn.execute("SELECT person_id, value FROM person_identifiers WHERE system = 'BHYT'").fetchall()
    finally:
        conn.close()
    assert {value for _, value in rows} == {old.card, old.new_card} and len({p for p, _ in rows}) == 1
    conn = sqlite3.connect(gateway.config.database_path)
    try:
        reveals = conn.execute("SELECT surface, actor, target FROM audit_log WHERE action = 'persons.reveal'").fetchall()
    finally:
        conn.close()
    assert reveals == [("cli", getpass.getuser(), f"bhxh: bhxh card {mask_identifier(old.card)}")]
