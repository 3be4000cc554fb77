"""XML 130/4750 read and write: lossless round trips, 4210 → 4750, and errors that name the field.

Rules: vn-standards.md §1.2–1.7 (envelope, table tags, field order, formats, 4210 names).
"""
import base64
import dataclasses
import json
from decimal import Decimal

import pytest
from lxml import etree

from gateway.formats.xml130 import CHECK_IN_DOCUMENT, read_xml130, write_xml130
from gateway.formats.xml130_tables import (
    CHECK_IN,
    CHECK_IN_ORDER,
    LINE_TABLES,
    XML1_ORDER,
    XML13,
    XML13_ORDER,
    XML14,
    XML14_ORDER,
)
from gateway.model.outcome import ContentError
from gateway.model.records import Observation, Person, RecordSet
from gateway.rules.validation import validate_record_set
from tests.formats.support import (
    CHECK_IN_4750,
    INPATIENT_4750,
    OUTPATIENT_4210,
    REFERRAL_4750,
    drop_table,
    edit_table,
    inner_tables,
    sample,
)


@pytest.mark.parametrize("path", [INPATIENT_4750, REFERRAL_4750, CHECK_IN_4750], ids=lambda p: p.name)
def test_sample_to_model_to_xml130_to_model_is_lossless(path):
    first = read_xml130(sample(path))

    second = read_xml130(write_xml130(first))

    assert second == first


def test_inpatient_sample_maps_every_table_of_the_episode():
    [records] = read_xml130(sample(INPATIENT_4750)).records

    assert (len(records.medications), len(records.services), len(records.observations), len(records.notes)) \
        == (20, 30, 3, 2)
    assert records.appointment.appointment_at == "202407130800"
    assert {line.ma_lk for line in records.medications + records.services} == {records.encounter.ma_lk}


def test_ho_ten_is_split_family_middle_given_with_diacritics_kept():
    person = read_xml130(sample(INPATIENT_4750)).records[0].person

    assert (person.family, person.middle, person.given) == ("Nguyễn", "Thị Hồng", "Nhung")
    assert person.full_name == "Nguyễn Thị Hồng Nhung"


def test_identifiers_are_cccd_card_with_validity_bhxh_number_and_medical_record_number():
    person = read_xml130(sample(INPATIENT_4750)).records[0].person

    assert [(i.system, i.value) for i in person.identifiers] == [
        ("CCCD", "079185004321"), ("BHYT", "DN4797912345678"), ("BHXH", "7912345678"), ("MR", "BN2024000123")]
    card = person.identifiers[1]
    assert (card.valid_from, card.valid_to, card.registered_facility) == ("20240101", "20241231", "79025")


def test_card_changed_during_the_stay_gives_one_identifier_per_card_in_the_semicolon_lists():
    person = read_xml130(sample(REFERRAL_4750)).records[0].person

    cards = [i for i in person.identifiers if i.system == "BHYT"]
    assert [(c.valid_from, c.valid_to) for c in cards] == [("20240101", "20240831"), ("20240901", "20250831")]


def test_amounts_are_decimals_and_semicolon_lists_are_tuples():
    [records] = read_xml130(sample(INPATIENT_4750)).records
    drug = records.medications[1]

    assert (drug.quantity, drug.unit_price, drug.amount_hospital) == \
        (Decimal("10"), Decimal("650.000"), Decimal("6500.00"))
    assert records.diagnosis.secondary == ("E11.9", "I10")
    assert records.encounter.departments == ("K01", "K03")


def test_written_file_has_4750_tables_fields_in_annex_order_and_formats():
    written = write_xml130(read_xml130(sample(INPATIENT_4750)))

    tables = inner_tables(written)
    assert list(tables) == ["XML1", "XML2", "XML3", "XML4", "XML5", "XML14"]
    xml1 = etree.fromstring(tables["XML1"].encode())
    assert [child.tag for child in xml1] == list(XML1_ORDER)
    drug = etree.fromstring(tables["XML2"].encode()).find("DSACH_CHI_TIET_THUOC/CHI_TIET_THUOC")
    assert [child.tag for child in drug] == [f.tag for f in LINE_TABLES[0].fields]
    assert drug.findtext("SO_LUONG") == "12000.000" and drug.findtext("THANH_TIEN_BV") == "42000.00"
    assert xml1.findtext("NGAY_SINH") == "198503120000" and xml1.findtext("MA_BENH_KT") == "E11.9;I10"
    root = etree.fromstring(written)
    assert root.findtext("THONGTINDONVI/MACSKCB") == "79025" and root.findtext("THONGTINHOSO/SOLUONGHOSO") == "1"
    assert root[-1].tag == "CHUKYDONVI"


def test_annex_field_counts_match_the_reference():
    assert len(XML1_ORDER) == 66
    assert [len(spec.fields) for spec in LINE_TABLES] == [39, 47, 12, 9]
    assert (len(XML13_ORDER), len(XML14_ORDER), len(CHECK_IN_ORDER)) == (39, 22, 26)


@pytest.mark.parametrize("spec", [*LINE_TABLES, XML13, XML14, CHECK_IN], ids=lambda s: s.kind)
def test_every_mapped_field_names_an_attribute_of_its_record(spec):
    attributes = {f.name for f in dataclasses.fields(spec.record_class)}

    assert {fm.attribute for fm in spec.fields} <= attributes


def test_4210_file_is_read_under_its_old_names():
    claim = read_xml130(sample(OUTPATIENT_4210))
    [records] = claim.records

    assert claim.standard == "4210"
    assert records.person.identifier("BHYT") == "HT3010100012345"
    assert records.person.birth_date_precision == "year"
    assert (records.encounter.encounter_class, records.encounter.patient_class) == ("01", "1")
    assert records.claim.total_hospital == Decimal("143550.00")
    assert records.diagnosis.main == "E11" and records.diagnosis.discharge_text.startswith("Bệnh đái tháo đường")
    assert records.notes[0].progress == "Mệt, khát nước, tiểu nhiều"
    assert records.notes[0].recorded_at == "201709120830"
    assert records.services[0].unit_price_hospital == Decimal("38700")


def test_4210_amounts_inside_the_bhyt_scope_are_derived_from_t_bhtt_plus_t_bncct():
    [records] = read_xml130(sample(OUTPATIENT_4210)).records

    assert records.medications[0].amount_insurance == Decimal("18750.00")
    assert records.claim.total_insurance == records.claim.fund_paid + records.claim.patient_copay


def test_4210_file_becomes_a_valid_4750_document():
    written = write_xml130(read_xml130(sample(OUTPATIENT_4210)))

    again = read_xml130(written)
    assert again.standard == "4750"
    assert validate_record_set(again.records[0]) == ()
    tables = inner_tables(written)
    assert etree.fromstring(tables["XML2"].encode()).tag == "CHITIEU_CHITIET_THUOC"
    xml1 = etree.fromstring(tables["XML1"].encode())
    assert [child.tag for child in xml1] == list(XML1_ORDER)
    assert xml1.findtext("NGAY_SINH") == "196200000000"
    written_tags = {element.tag for kind in ("XML1", "XML2", "XML3", "XML4", "XML5")
                    for element in etree.fromstring(tables[kind].encode()).iter()}
    assert not written_tags & {"MA_THE", "T_TONGCHI", "MA_LYDO_VVIEN", "T_NGOAIDS", "TINH_TRANG_RV",
                               "TYLE_TT", "THANH_TIEN", "DIEN_BIEN", "MIEN_CUNG_CT", "MA_BENHKHAC"}
    assert "MA_MAY" not in {e.tag for e in etree.fromstring(tables["XML4"].encode()).iter()}


def test_4210_fields_without_a_4750_place_stay_in_the_model_extra():
    [records] = read_xml130(sample(OUTPATIENT_4210)).records

    assert ("MUC_HUONG", "80") in records.encounter.extra
    assert ("MA_MAY", "XN.1.01001.00003") in records.observations[0].extra


def test_unmapped_fields_survive_a_round_trip():
    document = edit_table(sample(INPATIENT_4750), "XML1",
                          lambda x: x.replace("</TONG_HOP>", "<MA_MOI_3176>A1</MA_MOI_3176></TONG_HOP>"))
    document = edit_table(document, "XML2",
                          lambda x: x.replace("<DU_PHONG></DU_PHONG>", "<DU_PHONG></DU_PHONG><SO_LO>L01</SO_LO>", 1))

    [records] = read_xml130(write_xml130(read_xml130(document))).records

    assert records.encounter.extra == (("MA_MOI_3176", "A1"),)
    assert records.medications[0].extra == (("SO_LO", "L01"),)


def test_referral_copy_that_differs_from_xml1_is_kept_and_written_back():
    [records] = read_xml130(sample(REFERRAL_4750)).records

    assert ("MA_THE_BHYT", "HT3484812345670") in records.referral.extra
    xml13 = etree.fromstring(inner_tables(write_xml130(read_xml130(sample(REFERRAL_4750))))["XML13"].encode())
    assert xml13.findtext("MA_THE_BHYT") == "HT3484812345670"
    assert xml13.findtext("HO_TEN") == "Trần Văn Đức"
    assert [child.tag for child in xml13] == list(XML13_ORDER)


def test_check_in_file_maps_person_encounter_and_first_cost():
    claim = read_xml130(sample(CHECK_IN_4750))
    [records] = claim.records

    assert claim.document == CHECK_IN_DOCUMENT
    assert records.check_in.service_code == "K02.1914"
    assert records.encounter.inpatient_admitted_at == "202407010930"
    root = etree.fromstring(write_xml130(claim))
    assert [c.tag for c in root.find("DSACH_TRANG_THAI_KCB/TRANG_THAI_KCB")] == list(CHECK_IN_ORDER)


def test_tables_the_model_does_not_map_are_kept_verbatim():
    xml8 = ('<?xml version="1.0" encoding="utf-8"?>'
            '<CHI_TIEU_DU_LIEU_TOM_TAT_HO_SO_BENH_AN><MA_LK>x</MA_LK></CHI_TIEU_DU_LIEU_TOM_TAT_HO_SO_BENH_AN>')
    document = edit_table(sample(INPATIENT_4750), "XML8", lambda _: xml8)

    [records] = read_xml130(document).records

    assert [(t.kind, t.content) for t in records.other_tables] == [("XML8", xml8)]
    assert inner_tables(write_xml130(read_xml130(document)))["XML8"] == xml8


def test_record_set_renders_to_json_with_decimals_as_exact_text():
    [records] = read_xml130(sample(INPATIENT_4750)).records

    plain = json.loads(json.dumps(records.to_dict(), ensure_ascii=False))

    assert plain["medications"][1]["unit_price"] == "650.000"
    assert plain["person"]["family"] == "Nguyễn"


def test_existing_positional_construction_still_works():
    records = RecordSet("ORU^R01", None, None, (Observation("GLU", "Glucose", "5.4"),))

    assert records.to_dict()["observations"][0]["code"] == "GLU"


def test_number_with_a_comma_is_refused_naming_table_line_and_field():
    document = edit_table(sample(INPATIENT_4750), "XML2",
                          lambda x: x.replace("<SO_LUONG>10</SO_LUONG>", "<SO_LUONG>10,5</SO_LUONG>", 1))

    with pytest.raises(ContentError) as refused:
        read_xml130(document)

    [issue] = refused.value.issues
    assert (issue.code, issue.location) == (102, "XML2^2^SO_LUONG")
    assert "SO_LUONG" in issue.text and "decimal separator" in issue.text


def test_filehoso_that_is_not_base64_is_refused_naming_the_table():
    root = etree.fromstring(sample(INPATIENT_4750))
    xml3 = next(f for f in root.iter("FILEHOSO") if f.findtext("LOAIHOSO") == "XML3")
    xml3.find("NOIDUNGFILE").text = "%%%not-base64"

    with pytest.raises(ContentError) as refused:
        read_xml130(etree.tostring(root))

    assert refused.value.issues[0].location == "HOSO^1^FILEHOSO^XML3"
    assert "XML3 NOIDUNGFILE" in refused.value.issues[0].text


def test_hoso_without_xml1_is_refused_with_101():
    with pytest.raises(ContentError) as refused:
        read_xml130(drop_table(sample(INPATIENT_4750), "XML1"))

    assert [(i.code, i.location) for i in refused.value.issues] == [(101, "HOSO^1^FILEHOSO^XML1")]


def test_unknown_loaihoso_is_refused_with_103():
    document = edit_table(sample(INPATIENT_4750), "XML99", lambda _: "<X/>")

    with pytest.raises(ContentError) as refused:
        read_xml130(document)

    assert refused.value.issues[0].code == 103 and "XML99" in refused.value.issues[0].text


def test_other_root_element_is_refused():
    with pytest.raises(ContentError) as refused:
        read_xml130(b"<HOSO/>")

    assert "GIAMDINHHS" in refused.value.issues[0].text


def test_base64_of_written_tables_is_utf8_xml():
    written = write_xml130(read_xml130(sample(INPATIENT_4750)))

    content = base64.b64decode(etree.fromstring(written).find(".//NOIDUNGFILE").text)

    assert content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert "Nguyễn Thị Hồng Nhung".encode() in content


@pytest.mark.parametrize("birth_date, precision", [
    ("1985", "year"), ("198500000000", "year"), ("19850000", "year"), ("198503", "month"), ("19850300", "month"),
    ("19850312", "day"), ("198503120000", "day"), ("198503121545", "minute"), ("", "")])
def test_birth_date_precision_follows_what_was_sent(birth_date, precision):
    assert Person(birth_date=birth_date).birth_date_precision == precision
