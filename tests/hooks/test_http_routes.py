"""``hssk_http_routes`` and ``hssk_gauges`` (contract 1.2): a plugin's endpoints on the intake
listener, answered by the plugin over a real socket, with the transport's own guarantees (a fault
is a 500 and nothing more, a method not offered a 405, paths that are the gateway's or another
plugin's refused at start-up); and gauge values a plugin reports, refreshed by the gateway."""
from __future__ import annotations

import pytest
import pytest_twisted

from gateway.core.http_routes import RouteError
from gateway.core.plugins import PluginLoadError, build_plugin_manager
from gateway.plugin import GaugeValue, HttpAnswer, HttpRoute, hookimpl
from tests.support import TestPlugin, gateway_config, http_request, start_gateway, wait_until


class EchoRoutes:
    """``POST /api/echo`` answers the form it was sent; ``/api/broken`` fails; the gauge reports
    a gap of a facility the configuration does not know (exported as ``other``: labels stay bounded)."""

    def __init__(self, path: str = "api/echo") -> None:
        self.path = path

    @hookimpl
    def hssk_http_routes(self):
        def echo(call):
            return call.form().addCallback(lambda fields: HttpAnswer.json({"fields": fields,
                                                                           "token": call.header("accessToken")}))

        def broken(call):
            raise RuntimeError("a bug in the plugin")

        return [HttpRoute(self.path, echo), HttpRoute("api/broken", broken, methods=("GET",))]

    @hookimpl
    def hssk_gauges(self, journal):
        count = journal.read(lambda conn: conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        return [GaugeValue("hssk_bhxh_reconcile_gap_episodes", 2 + count,
                           {"facility": "79001", "side": "missing_at_bhxh"})]


@pytest_twisted.ensureDeferred
async def test_a_plugin_route_answers_over_the_socket_and_its_fault_is_a_500(tmp_path):
    gateway = await start_gateway(tmp_path / "data", plugins=[TestPlugin(), EchoRoutes()])
    try:
        echoed = await http_request(gateway, "POST", "/api/echo", b"maCSKCB=79001&x=%C3%A2",
                                    "application/x-www-form-urlencoded", headers={"accessToken": "abc"})
        not_offered = await http_request(gateway, "POST", "/api/broken", b"")
        broken = await http_request(gateway, "GET", "/api/broken")
        await wait_until(lambda: b'facility="other",side="missing_at_bhxh"} 2.0' in gateway.metrics.exposition(),
                         what="the plugin's gauge")
    finally:
        await gateway.stop()

    assert echoed.code == 200 and echoed.json() == {"fields": {"maCSKCB": "79001", "x": "â"}, "token": "abc"}
    assert (not_offered.code, not_offered.headers["allow"]) == (405, "GET")
    assert broken.code == 500 and "failed to answer" in broken.json()["text"]


@pytest.mark.parametrize("path", ["admin/extra", "hl7/sub", "api/broken/deeper"])
def test_a_route_on_the_gateways_own_or_another_routes_path_stops_start_up(tmp_path, path):
    with pytest.raises((PluginLoadError, RouteError)) as refused:
        build_plugin_manager(gateway_config(tmp_path), extra=[TestPlugin(), EchoRoutes(path)], load_entry_points=False)

    assert path.split("/")[0] in str(refused.value) or "clashes" in str(refused.value)
