"""Stopping: the messages already taken are answered; what arrives while they finish is answered
AR at once, because nothing could decide or journal it any more."""
import threading

import pytest_twisted

from tests.support import (connect_mllp, err_segments, hl7, metric_value, msa, standard_records, start_gateway,
                           wait_until)


@pytest_twisted.ensureDeferred
async def test_a_message_arriving_while_the_gateway_stops_gets_ar_after_those_before_it(tmp_path, plugin):
    release = threading.Event()

    def slow(message):
        if message.control_id == "SLOW1":
            release.wait(10)
        return standard_records(message)

    plugin.behaviour = slow
    gw = await start_gateway(tmp_path / "data", plugins=[plugin])
    client = await connect_mllp(gw)
    client.send(hl7(control_id="SLOW1"))
    await wait_until(lambda: gw.intake.in_flight == 1, what="SLOW1 to be taken")

    stopped = gw.stop()
    await wait_until(lambda: gw.intake._stopping, what="the intake to stop taking work")
    client.send(hl7(control_id="LATE1"))
    await wait_until(lambda: metric_value(gw, "hssk_connections_refused_total", transport="mllp",
                                          reason="stopping") == 1, what="LATE1 to be refused")
    release.set()
    slow_ack, late_ack = await client.wait_frames(2)
    await stopped

    assert msa(slow_ack)[1:3] == ["AA", "SLOW1"]
    assert msa(late_ack)[1:3] == ["AR", "LATE1"]
    assert "the gateway is stopping" in err_segments(late_ack)[0][8]
    assert gw.intake.in_flight == 0
