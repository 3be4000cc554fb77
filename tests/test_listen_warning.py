"""A listener beyond loopback while anyone may send is said out loud at start-up (issue 15, item 13)."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.logger import LogLevel, formatEvent

from tests.support import TestPlugin, run_cli, start_gateway

CLIENT = {"clients": {"bv_q1": {"facilities": ["79001"], "addresses": ["10.79.1.0/24"]}}}


def warnings(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn
            and e.get("log_namespace") == "hssk.app"]


@pytest_twisted.ensureDeferred
async def test_listening_on_every_interface_with_auth_off_logs_a_warning_naming_it(tmp_path, log_events):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **{"mllp.listen": "tcp:0"})
    port = gw.address("mllp")[1]
    await gw.stop()

    [warning] = warnings(log_events)
    assert warning.startswith(f"mllp listens on 0.0.0.0:{port}, beyond loopback")
    assert "auth.required = false" in warning and "interface=127.0.0.1" in warning


@pytest.mark.parametrize("overrides", [{}, {"mllp.listen": "tcp:0", "auth.required": True, **CLIENT}],
                         ids=["loopback", "auth required"])
@pytest_twisted.ensureDeferred
async def test_loopback_or_auth_required_logs_no_such_warning(tmp_path, log_events, overrides):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **overrides)
    await gw.stop()

    assert warnings(log_events) == []


def test_serve_help_names_a_loopback_interface_for_both_listeners():
    result = run_cli("serve", "--help")

    help_text = " ".join(result.stdout.decode().split())
    assert "tcp:2575:interface=127.0.0.1" in help_text and "tcp:8080:interface=127.0.0.1" in help_text
