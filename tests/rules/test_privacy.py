"""The privacy policy on record sets the real readers make: HL7 through the shared mappers, XML
130 through the file reader, and back out through the XML 130 writer."""
from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config
from gateway.formats.hl7_model import records_from_hl7
from gateway.formats.hl7v2 import Hl7Message
from gateway.formats.xml130 import ClaimFile, read_xml130, write_xml130
from gateway.rules.privacy import PrivacyPolicy, Removal
from tests.formats.support import HIV_CARE_TABLE, INPATIENT_4750, edit_table, inner_tables, sample

MSH = "MSH|^~\\&|TEST_HIS|79001|HSSK_GW|SYT_79|20250315083000||ORU^R01^ORU_R01|C1|P|2.5|||||VNM|UNICODE UTF-8"


def hl7_records(*segments: str):
    text = "\r".join((MSH, "PID|1||079085000123^^^BCA^NI||Nguyễn^Văn Thử||19850412|M",
                      "PV1|1|O|KKB^^^79001||||||||||||||||KCB1^^^79001") + segments)
    return records_from_hl7(Hl7Message(text, "UNICODE UTF-8"))


def test_hl7_diagnoses_results_and_reasons_lose_what_the_policy_covers_and_keep_the_rest():
    records = hl7_records(
        "PV2|||Z71.7^Tư vấn HIV^ICD10",
        "DG1|1||B20.7^Bệnh HIV gây nhiều bệnh nhiễm trùng^ICD10|Bệnh do HIV||F|||||||||1",
        "DG1|2||J18.9^Viêm phổi^ICD10|Viêm phổi||F",
        "DG1|3||F11.2^Nghiện các chất dạng thuốc phiện^ICD10|||F",
        "OBR|1|||XN^Xét nghiệm",
        "OBX|1|ST|68961-2^HIV 1+2 Ab^LN||Dương tính",
        "OBX|2|NM|718-7^Hemoglobin^LN||135|g/L")

    filtered, removed = PrivacyPolicy().filter(records)

    assert filtered.diagnosis.main == "" and filtered.diagnosis.secondary == ("J18.9",)
    assert filtered.diagnosis.discharge_text == ""
    assert filtered.encounter.admission_reason == ""
    assert [o.name for o in filtered.observations] == ["Hemoglobin"]
    assert set(removed) == {Removal("hiv", "diagnosis", 1), Removal("drug_use", "diagnosis", 1),
                            Removal("hiv", "text", 2), Removal("hiv", "observation", 1)}
    assert "HIV" not in filtered.json_text and "B20" not in filtered.json_text and "F11" not in filtered.json_text
    assert filtered.person == records.person
    assert records.diagnosis.main == "B20.7"


def test_a_record_set_with_nothing_to_remove_comes_back_as_the_same_object():
    records = hl7_records("DG1|1||J18.9^Viêm phổi^ICD10|Viêm phổi||F", "OBX|1|NM|718-7^Hemoglobin^LN||135|g/L")

    filtered, removed = PrivacyPolicy().filter(records)

    assert filtered is records and removed == ()


@pytest.mark.parametrize("text, category", [
    ("Bệnh nhân nghiện MA TÚY nhiều năm", "drug_use"),
    ("ma tuý", "drug_use"),
    ("Tiền sử mại dâm", "sex_work"),
    ("theo dõi AIDS", "hiv"),
    ("khám định kỳ, HIVE", None),
])
def test_terms_match_whole_words_whatever_the_case(text, category):
    assert PrivacyPolicy().text_category(text) == category


def test_decomposed_tone_marks_match_like_precomposed_ones():
    import unicodedata

    assert PrivacyPolicy().text_category(unicodedata.normalize("NFD", "sử dụng ma túy")) == "drug_use"


def xml_records(document: bytes):
    [records] = read_xml130(document).records
    return records


def hiv_care_file(xml2_drug: str = "Tenofovir disoproxil fumarat", main: str = "J18.9",
                  secondary: str = "E11.9;B20;I10", patient_class: str = "1.9", hiv_table: bool = True) -> bytes:
    document = sample(INPATIENT_4750)
    document = edit_table(document, "XML1", lambda t: t.replace("<MA_DOITUONG_KCB>1.1<", f"<MA_DOITUONG_KCB>{patient_class}<")
                          .replace("<MA_BENH_KT>E11.9;I10<", f"<MA_BENH_KT>{secondary}<")
                          .replace("<MA_BENH_CHINH>J18.9<", f"<MA_BENH_CHINH>{main}<"))
    document = edit_table(document, "XML2", lambda t: t.replace("Paracetamol]]", f"{xml2_drug}]]"))
    if not hiv_table:
        return document
    document = edit_table(document, "XML6", lambda _: HIV_CARE_TABLE)
    return edit_table(document, "XML15", lambda _: (
        '<?xml version="1.0" encoding="utf-8"?><CHI_TIEU_DIEU_TRI_BENH_LAO><DSACH_CHI_TIET_DIEU_TRI_BENH_LAO>'
        "<CHI_TIET_DIEU_TRI_BENH_LAO><MA_LK>79025.2024070100123</MA_LK><NGAYKD_HIV>20240301</NGAYKD_HIV>"
        "<BDDT_ARV>20240305</BDDT_ARV><MA_BENH>A15.0;B20</MA_BENH><KET_QUA_DTRI>1</KET_QUA_DTRI>"
        "</CHI_TIET_DIEU_TRI_BENH_LAO></DSACH_CHI_TIET_DIEU_TRI_BENH_LAO></CHI_TIEU_DIEU_TRI_BENH_LAO>"))


def test_an_xml130_hiv_care_episode_is_written_out_without_its_hiv_data():
    records = xml_records(hiv_care_file())

    filtered, removed = PrivacyPolicy().filter(records)
    tables = inner_tables(write_xml130(ClaimFile((filtered,), facility="79025", created_on="20240706"),
                                       document_id="privacy-test"))

    assert "XML6" not in tables
    assert "<MA_BENH_KT>E11.9;I10</MA_BENH_KT>" in tables["XML1"]
    assert "<MA_DOITUONG_KCB>1.9<" not in tables["XML1"] and "Viêm phổi, không đặc hiệu" not in tables["XML1"]
    assert "Tenofovir" not in tables["XML2"] and "Oxy dược dụng" in tables["XML2"]
    assert "<NGAYKD_HIV></NGAYKD_HIV>" in tables["XML15"] or "<NGAYKD_HIV/>" in tables["XML15"]
    assert "20240305" not in tables["XML15"] and "A15.0" in tables["XML15"] and "B20" not in tables["XML15"]
    assert {(r.category, r.part) for r in removed} == {
        ("hiv", "diagnosis"), ("hiv", "text"), ("hiv", "encounter"), ("hiv", "medication"), ("hiv", "table")}
    assert sum(r.count for r in removed if r.part == "table") == 3  # XML6, NGAYKD_HIV, BDDT_ARV
    assert sum(r.count for r in removed if r.part == "diagnosis") == 2  # B20 in XML1 MA_BENH_KT and XML15 MA_BENH


def test_a_shared_arv_stays_on_a_hepatitis_b_episode_and_goes_on_an_hiv_one():
    hepatitis = xml_records(hiv_care_file(secondary="E11.9;B18.1", patient_class="1.1", hiv_table=False))

    kept, _ = PrivacyPolicy().filter(hepatitis)
    removed, _ = PrivacyPolicy().filter(xml_records(hiv_care_file(patient_class="1.1", hiv_table=False)))

    assert any(m.name.startswith("Tenofovir") for m in kept.medications)
    assert not any(m.name.startswith("Tenofovir") for m in removed.medications)


def test_methadone_is_removed_without_any_other_marker():
    records = xml_records(hiv_care_file(xml2_drug="Methadone hydrochlorid 10mg/ml", secondary="E11.9;I10",
                                        patient_class="1.1", hiv_table=False))

    filtered, removed = PrivacyPolicy().filter(records)

    assert [m.name for m in filtered.medications] == [m.name for m in records.medications if m.name[:9] != "Methadone"]
    assert len(filtered.medications) == len(records.medications) - 1
    assert removed == (Removal("drug_use", "medication", 1),)


def test_configured_lists_replace_the_defaults():
    config = load_config(environ={}, overrides={"privacy.hiv_codes": ["B24"], "privacy.drug_use_terms": []})
    policy = PrivacyPolicy.from_config(config.privacy)

    assert policy.code_category("B20.1") is None and policy.code_category("B24") == "hiv"
    assert policy.text_category("ma túy") is None
    assert policy.code_category("F11.2") == "drug_use"  # a list left unset keeps its default


def test_config_refuses_what_is_not_an_icd10_code_and_an_unknown_privacy_level():
    with pytest.raises(ConfigError) as raised:
        load_config(environ={}, overrides={"privacy.hiv_codes": ["HIV"]})
    assert raised.value.key == "privacy.hiv_codes"
    with pytest.raises(ConfigError) as raised:
        load_config(environ={}, overrides={"destinations.ehr.kind": "file", "destinations.ehr.directory": "out",
                                           "destinations.ehr.privacy": "none"})
    assert raised.value.key == "destinations.ehr.privacy"
