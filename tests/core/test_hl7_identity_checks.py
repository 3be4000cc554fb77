"""Identity rules on the HL7 path: a structurally wrong CCCD or BHYT card is the sender's AE,
with ERR naming the field, the rule and the HL7 location, and the identifier masked."""
from __future__ import annotations

import pytest
import pytest_twisted

from tests.support import connect_mllp, err_segments, hl7, journal_person, journal_rows, msa, send_and_receive


@pytest_twisted.ensureDeferred
async def test_cccd_whose_sex_digit_contradicts_pid8_is_answered_ae_102_at_pid3(gateway):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7("PID|1||079085000123^^^BCA^NI||Trần^Thị Hoa||19850412|F",
                                             control_id="BADCCCD"))

    assert msa(ack)[1:3] == ["AE", "BADCCCD"]
    [err] = err_segments(ack)
    assert err[2] == "PID^1^3" and err[3].split("^")[0] == "102"
    assert "SO_CCCD" in err[8] and "079085000123" not in err[8]
    assert [r["status"] for r in journal_rows(gateway)] == ["error"]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_bhyt_card_with_benefit_digit_out_of_range_is_answered_ae(gateway):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(
        "PID|1||079085000123^^^BCA^NI~GD9790000012345^^^BHXH^BHYT||Nguyễn^Văn An||19850412|M",
        control_id="BADCARD"))

    assert msa(ack)[1] == "AE"
    assert any("MA_THE_BHYT" in err[8] for err in err_segments(ack))
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_consistent_identifiers_are_accepted(gateway):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(
        "PID|1||079185000123^^^BCA^NI~GD4790000012345^^^BHXH^BHYT||Trần^Thị Hoa||19850412|F", control_id="GOOD"))

    assert msa(ack)[1:3] == ["AA", "GOOD"]
    assert err_segments(ack) == []
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_validation_section_can_switch_the_cccd_birth_check_off(tmp_path):
    """Re-issued numbers may not follow the century/sex/year rule; a province can say so."""
    from tests.support import TestPlugin, start_gateway

    gateway = await start_gateway(tmp_path, plugins=[TestPlugin()], **{"validation.check_cccd_birth": False})
    client = await connect_mllp(gateway)
    try:
        ack = await send_and_receive(client, hl7("PID|1||079085000123^^^BCA^NI||Trần^Thị Hoa||19850412|F",
                                                 control_id="REISSUED"))

        assert msa(ack)[1:3] == ["AA", "REISSUED"]
    finally:
        client.transport.loseConnection()
        await gateway.stop()


def test_validation_section_rejects_an_unknown_province_list():
    import pytest

    from gateway.config import ConfigError, load_config

    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"validation.province_codes": "1976"})

    assert caught.value.key == "validation.province_codes"


@pytest.mark.parametrize("birth, answer", [
    ("19850412", "AA"), ("1985", "AA"), ("198504121030+0700", "AA"),
    ("12/04/1985", "AE"), ("1985-04-12", "AE"), ("không rõ", "AE"), ("19851304", "AE"),
])
@pytest_twisted.ensureDeferred
async def test_pid7_that_is_no_hl7_date_is_ae_102_rather_than_dropped(gateway, birth, answer):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(f"PID|1||079085000123^^^BCA^NI||Nguyễn^Văn An||{birth}|M",
                                             control_id="BIRTH"))
    client.transport.loseConnection()

    assert msa(ack)[1] == answer
    if answer == "AE":
        [err] = err_segments(ack)
        assert (err[2], err[3].split("^")[0]) == ("PID^1^7", "102")
        assert "NGAY_SINH" in err[8] and birth not in err[8]
    else:
        assert journal_person(gateway, "BIRTH")["birth_date"] == birth[:12].split("+")[0]


@pytest.mark.parametrize("message_type, answer", [
    ("ADT^A04^ADT_A01", "AE"), ("VXU^V04^VXU_V04", "AE"), ("ADT^A20^ADT_A20", "AA"), ("ORU^R01^ORU_R01", "AA"),
])
@pytest_twisted.ensureDeferred
async def test_adt_and_vxu_without_a_pid_are_ae_100(gateway, message_type, answer):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7("EVN|A04|20250315083000", control_id="NOPID", message_type=message_type))
    client.transport.loseConnection()

    assert msa(ack)[1] == answer
    if answer == "AE":
        [err] = err_segments(ack)
        assert (err[2], err[3].split("^")[0]) == ("PID^1", "100")
        escaped = message_type.rsplit("^", 1)[0].replace("^", "\\S\\")  # ERR-8 is HL7 text: ^ is escaped
        assert f"PID: the segment is required in {escaped}" in err[8]
    assert [r["status"] for r in journal_rows(gateway)] == ["accepted" if answer == "AA" else "error"]


@pytest.mark.parametrize("sex, answer, stored", [
    ("M", "AA", "1"), ("F", "AA", "2"), ("U", "AA", "3"), ("Nữ", "AA", "2"), ("nam", "AA", "1"),
    ("X", "AE", None), ("Male", "AE", None),
])
@pytest_twisted.ensureDeferred
async def test_pid8_outside_table_0001_is_ae_103_rather_than_unknown(gateway, sex, answer, stored):
    client = await connect_mllp(gateway)

    ack = await send_and_receive(client, hl7(f"PID|1||BN25000123^^^79001^MR||Lê^Thị Hoa||19850412|{sex}",
                                             control_id="SEX"))
    client.transport.loseConnection()

    assert msa(ack)[1] == answer
    if stored:
        assert journal_person(gateway, "SEX")["sex"] == stored
    else:
        [err] = err_segments(ack)
        assert (err[2], err[3].split("^")[0]) == ("PID^1^8", "103") and "GIOI_TINH" in err[8]
