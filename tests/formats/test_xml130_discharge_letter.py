"""XML7, the discharge letter: its parents and the child's temporary card belong to the person.

Rules: vn-standards.md §1.7 (XML7 holds MA_CHA, MA_ME, MA_THE_TAM), §3.3 (MA_CHA and MA_ME say
"mã số định danh y tế (mã số BHXH)": a BHXH number, or the 12-digit personal id since NĐ 102/2025).
"""
import dataclasses

import pytest
from lxml import etree

from gateway.formats.xml130 import read_xml130, write_xml130
from gateway.formats.xml130_tables import XML7_ORDER
from gateway.model.records import Identifier, RelatedPerson
from gateway.rules.privacy import PrivacyPolicy
from gateway.rules.validation import check_linkage, validate_record_set
from tests.formats.support import INPATIENT_4750, edit_table, inner_tables, sample

MA_LK = "79025.2024070100123"


def xml7(**fields: str) -> str:
    """An XML7 of the sample episode with ``fields`` (tag → text), in the order given."""
    body = "".join(f"<{tag}>{text}</{tag}>" for tag, text in {"MA_LK": MA_LK, **fields}.items())
    return f'<?xml version="1.0" encoding="utf-8"?><CHI_TIEU_DU_LIEU_GIAY_RA_VIEN>{body}</CHI_TIEU_DU_LIEU_GIAY_RA_VIEN>'


def claim_with_xml7(**fields: str):
    return read_xml130(edit_table(sample(INPATIENT_4750), "XML7", lambda _: xml7(**fields)))


def read_with_xml7(**fields: str):
    [records] = claim_with_xml7(**fields).records
    return records


def test_ma_me_and_ho_ten_me_are_the_persons_mother_named_by_her_bhxh_number():
    person = read_with_xml7(MA_ME="7912345001", HO_TEN_ME="Trần Thị Lan").person

    assert person.related == (RelatedPerson("mother", "Trần", "Thị", "Lan", (Identifier("BHXH", "7912345001"),)),)


def test_ma_cha_is_the_father_and_a_parent_named_without_a_code_keeps_the_name():
    person = read_with_xml7(MA_CHA="", HO_TEN_CHA="Lê Văn Hùng", MA_ME="079190001234").person

    assert person.related == (RelatedPerson("mother", identifiers=(Identifier("CCCD", "079190001234"),)),
                              RelatedPerson("father", "Lê", "Văn", "Hùng"))


@pytest.mark.parametrize("code, system", [
    ("7912345001", "BHXH"), ("079190001234", "CCCD"), ("DN4797912345001", "BHYT"), ("023456789", "CMND"),
    ("B1234567", "PASSPORT"), ("ME-0001", "OTHER_ID")])
def test_the_parents_identifier_system_follows_the_codes_shape(code, system):
    [mother] = read_with_xml7(MA_ME=code).person.related

    assert mother.identifiers == (Identifier(system, code),)


def test_ma_the_tam_is_the_childs_own_card_and_gives_the_bhxh_number_it_carries():
    person = read_with_xml7(MA_THE_TAM="TE1797931234567").person

    assert [(i.system, i.value) for i in person.identifiers] == [
        ("CCCD", "079185004321"), ("BHYT", "DN4797912345678"), ("BHYT", "TE1797931234567"),
        ("BHXH", "7912345678"), ("BHXH", "7931234567"), ("MR", "BN2024000123")]


def test_a_temporary_card_xml1_lists_already_is_not_added_again():
    records = read_with_xml7(MA_THE_TAM="DN4797912345678")

    assert [i.value for i in records.person.identifiers if i.system == "BHYT"] == ["DN4797912345678"]
    assert records.discharge_letter.temporary_card == "DN4797912345678"


def test_no_xml7_no_letter_and_no_parents():
    [records] = read_xml130(sample(INPATIENT_4750)).records

    assert records.discharge_letter is None and records.person.related == ()


def test_discharge_letter_round_trips_with_every_annex_field_in_order():
    claim = claim_with_xml7(SO_LUU_TRU="LT-2024-77", NGAY_RA="202407061030", GHI_CHU="Ra viện ổn định",
                            NGAY_CT="20240712", MA_CHA="7912345002", MA_ME="079190001234",
                            MA_THE_TAM="TE1797931234567", HO_TEN_CHA="Lê Văn Hùng", HO_TEN_ME="Trần Thị Lan")
    document = write_xml130(claim)

    [first], [second] = claim.records, read_xml130(document).records

    assert second == first
    written = etree.fromstring(inner_tables(document)["XML7"].encode("utf-8"))
    assert [e.tag for e in written] == list(XML7_ORDER)
    assert {e.tag: e.text for e in written if e.text} == {
        "MA_LK": MA_LK, "SO_LUU_TRU": "LT-2024-77", "NGAY_VAO": first.encounter.admitted_at,
        "NGAY_RA": "202407061030", "CHAN_DOAN_RV": first.diagnosis.discharge_text,
        "GHI_CHU": "Ra viện ổn định", "MA_TTDV": first.encounter.head_of_facility, "NGAY_CT": "20240712",
        "MA_CHA": "7912345002", "MA_ME": "079190001234", "MA_THE_TAM": "TE1797931234567",
        "HO_TEN_CHA": "Lê Văn Hùng", "HO_TEN_ME": "Trần Thị Lan"}


def test_a_temporary_card_only_xml7_named_stays_out_of_xml1():
    document = write_xml130(claim_with_xml7(MA_THE_TAM="TE1797931234567"))

    written = etree.fromstring(inner_tables(document)["XML1"].encode("utf-8"))

    assert written.findtext("MA_THE_BHYT") == "DN4797912345678"


def test_the_letters_ma_lk_must_be_the_episodes():
    records = read_with_xml7()
    other = dataclasses.replace(records, discharge_letter=dataclasses.replace(records.discharge_letter, ma_lk="x"))

    assert check_linkage(records) == []
    assert [i.location for i in check_linkage(other)] == ["XML7^1^MA_LK"]


def test_privacy_empties_the_letters_prose_that_names_hiv_and_keeps_the_parents():
    records = read_with_xml7(GHI_CHU="Mẹ nhiễm HIV, theo dõi trẻ", MA_ME="7912345001", HO_TEN_ME="Trần Thị Lan")

    filtered, removed = PrivacyPolicy().filter(records)

    assert dict(filtered.discharge_letter.extra)["GHI_CHU"] == "" and removed != ()
    assert filtered.person.related == records.person.related


@pytest.mark.parametrize("fields, expected", [
    ({"MA_ME": "079190001234", "MA_CHA": "7912345002", "MA_THE_TAM": "TE1797931234567"}, []),
    ({"MA_ME": "999190001234"}, [("XML7^1^MA_ME", "E")]),
    ({"MA_CHA": "ME-0001"}, [("XML7^1^MA_CHA", "W")]),
    ({"MA_THE_TAM": "TE17979312345"}, [("XML7^1^MA_THE_TAM", "E")]),
], ids=["well_formed", "personal_id_of_no_province", "code_of_no_known_shape", "card_too_short"])
def test_the_letters_parent_codes_and_temporary_card_are_checked_where_they_are(fields, expected):
    issues = validate_record_set(read_with_xml7(**fields))

    assert [(i.location, i.severity) for i in issues if i.location.startswith("XML7")] == expected
