"""The operators' commands on a PostgreSQL journal (issue 21): the same ``messages`` and ``outbox``
commands read the database ``store.dsn_env`` names, with no SQLite file anywhere."""
import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.app import validate_runtime
from gateway.config import ConfigError, load_config

from tests.support import (TestPlugin, connect_mllp, hl7, msa, run_json, send_and_receive, start_gateway,
                           wait_until)

CONFIG = """
[store]
backend = "postgresql"
dsn_env = "PG_JOURNAL_DSN"
node = "node-a"

[destinations.files]
kind = "file"
directory = "{directory}"
"""


@pytest_twisted.ensureDeferred
async def test_messages_and_outbox_commands_read_a_postgresql_journal(tmp_path, postgres_dsn, monkeypatch):
    monkeypatch.setenv("PG_JOURNAL_DSN", postgres_dsn)
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(directory=tmp_path / "out"))
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{
        "store.backend": "postgresql", "store.dsn_env": "PG_JOURNAL_DSN", "store.node": "node-a",
        "destinations.files.kind": "file", "destinations.files.directory": str(tmp_path / "out")})
    try:
        client = await connect_mllp(gw)
        assert msa(await send_and_receive(client, hl7(control_id="PG-1")))[1] == "AA"
        client.transport.loseConnection()
        await wait_until(lambda: any((tmp_path / "out").glob("*")), what="the file delivery")
    finally:
        await gw.stop()

    listed = run_json("messages", "list", "--config", config, "--data-dir", tmp_path / "elsewhere")
    status = run_json("outbox", "status", "--config", config, "--data-dir", tmp_path / "elsewhere")

    assert [(m["control_id"], m["status"]) for m in listed] == [("PG-1", "accepted")]
    assert status["files"]["delivered"] == 1, status
    assert not (tmp_path / "elsewhere").exists()


def test_a_postgresql_store_without_its_connection_string_is_a_config_error(tmp_path):
    config = load_config(environ={}, overrides={"store.backend": "postgresql", "store.dsn_env": "PG_NOT_SET_DSN"})

    with pytest.raises(ConfigError, match="store.dsn_env: names PG_NOT_SET_DSN, which is not set or empty"):
        validate_runtime(config, reactor)
