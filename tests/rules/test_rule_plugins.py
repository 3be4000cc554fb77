"""The national rules are built-in plugins (``core.identity``, ``core.claims``, ``core.totals``):
``hssk_check`` hooks like any plugin's, run first and in that order, configured from
``[validation]`` per gateway, and not the operator's to disable."""
from __future__ import annotations

import dataclasses

import pytest

from gateway.config import ConfigError, load_config
from gateway.core.plugins import build_plugin_manager
from gateway.formats.hl7_model import records_from_hl7
from gateway.formats.hl7v2 import Hl7Message
from gateway.formats.xml130_reader import CLAIM_KIND
from gateway.model.hooks import hookimpl
from gateway.model.outcome import Issue
from tests.support import TestPlugin, hl7

#: A CCCD whose century/sex digit (0: a man born 1900–1999) contradicts PID-8 F.
WOMAN_WITH_A_MANS_CCCD = hl7("PID|1||079085000123^^^BCA^NI||Trần^Thị Hoa||19850412|F")


class EagerCheck(TestPlugin):
    """A plugin whose check asks to run first."""

    @hookimpl(tryfirst=True)
    def hssk_check(self, message, records):
        return [Issue(101, "PID-13: no phone number", "PID^1^13", "W")]


def manager(plugin=None, **overrides):
    return build_plugin_manager(load_config(environ={}, overrides=overrides), extra=[plugin] if plugin else [],
                                load_entry_points=False)


def check(pm, raw: bytes, as_file: bool = False, kind: str = CLAIM_KIND) -> list[Issue]:
    """The hook's issues for the message's records; ``as_file``: as the XML 130 source hands them
    on (no HL7 message, an episode of ``kind``)."""
    message = Hl7Message.from_bytes(raw)
    records = records_from_hl7(message)
    if as_file:
        records = dataclasses.replace(records, kind=kind)
    answers = pm.hook.hssk_check(message=None if as_file else message, records=records)
    return [issue for answer in answers if answer for issue in answer]


def test_the_national_rules_run_first_and_in_call_order_even_before_a_tryfirst_plugin_check():
    pm = manager(EagerCheck())

    order = [pm.get_name(impl.plugin) for impl in reversed(pm.hook.hssk_check.get_hookimpls())]
    issues = check(pm, WOMAN_WITH_A_MANS_CCCD)

    assert order[:3] == ["core.identity", "core.claims", "core.totals"] and len(order) == 4
    assert [(i.location, i.severity) for i in issues] == [("PID^1^3", "E"), ("PID^1^13", "W")]


def test_claim_and_totals_rules_pass_an_hl7_message_by_and_hold_a_record_set_from_a_file():
    pm = manager()

    from_hl7 = check(pm, WOMAN_WITH_A_MANS_CCCD)
    as_file = check(pm, WOMAN_WITH_A_MANS_CCCD, as_file=True)

    assert [i.location for i in from_hl7] == ["PID^1^3"]
    assert as_file[0].location == "XML1^1^SO_CCCD"
    assert "XML1^1^MA_LK" in [i.location for i in as_file]  # core.claims: an episode file needs its MA_LK


def test_claim_and_totals_rules_pass_a_record_set_of_another_source_by():
    """A plugin's source (a population list row) hands on no HL7 message either: it is no claim."""
    pm = manager()

    as_population_row = check(pm, WOMAN_WITH_A_MANS_CCCD, as_file=True, kind="POPULATION")

    assert "XML1^1^MA_LK" not in [i.location for i in as_population_row]
    assert [i.code for i in as_population_row] == [102]


def test_each_gateway_configures_its_own_rules_from_its_validation_section():
    strict, lenient = manager(), manager(**{"validation.check_cccd_birth": False})

    assert [i.code for i in check(strict, WOMAN_WITH_A_MANS_CCCD)] == [102]
    assert check(lenient, WOMAN_WITH_A_MANS_CCCD) == []
    assert [i.code for i in check(strict, WOMAN_WITH_A_MANS_CCCD)] == [102]


@pytest.mark.parametrize("name", ["core.identity", "core.render"])
def test_a_built_in_plugin_cannot_be_disabled(name):
    with pytest.raises(ConfigError) as refused:
        manager(**{"plugins.disabled": [name]})

    assert refused.value.key == "plugins.disabled" and name in str(refused.value)
