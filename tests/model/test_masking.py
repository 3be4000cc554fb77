"""Identifiers in free text are masked wherever they sit: alone, in any case, or glued to a label;
names keep the family name and initials, in records and wherever a known name appears in a text."""
import doctest
import unicodedata

import pytest

from gateway.model import masking
from gateway.model.masking import mask_name, mask_records, mask_text


@pytest.mark.parametrize("text, expected", [
    ("CCCD 079085000123 refused", "CCCD 0790*****123 refused"),
    ("CCCD079085000123", "CCCD0790*****123"),
    ("key=SO_CCCD_079085000123", "key=SO_CCCD_0790*****123"),
    ("card GD4790000012345.", "card GD47********345."),
    ("card=gd4790000012345", "card=gd47********345"),
    ("BHXH 7912345678", "BHXH 7912***678"),
    ("CMND 123456789", "CMND 1234**789"),
    ("ERR 207 at PID^1^3, HL70357, 2 attempts", "ERR 207 at PID^1^3, HL70357, 2 attempts"),
])
def test_identifiers_are_masked_and_short_codes_kept(text, expected):
    assert mask_text(text) == expected


@pytest.mark.parametrize("name, expected", [
    ("Nguyễn Văn Thử", "Nguyễn V. T."),
    ("Tôn Nữ Thị Hồng Nhung", "Tôn N. T. H. N."),
    ("  Lê   Văn An ", "Lê V. A."),
    ("An", "A."),  # a lone word may be the given name
    ("", ""),
])
def test_names_keep_the_family_name_and_initials(name, expected):
    assert mask_name(name) == expected


@pytest.mark.parametrize("text, expected", [
    ("patient Nguyễn Văn Thử refused", "patient Nguyễn V. T. refused"),
    ("HO_TEN=NGUYEN VAN THU; ho ten: Nguyen Van Thu", "HO_TEN=NGUYEN V. T.; ho ten: Nguyen V. T."),
    ("name=NGUYEN_VAN_THU", "name=NGUYEN_V._T."),
    ("Thử: CCCD 079085000123", "T.: CCCD 0790*****123"),
    ("văn bản thiếu chữ ký", "văn bản thiếu chữ ký"),  # lower case: a word, not the name
    ("Bùi Văn Thử", "Bùi V. T."),  # the family name alone is not masked, whoever bears it
])
def test_known_names_are_masked_in_free_text_however_a_remote_system_writes_them(text, expected):
    assert mask_text(text, ["Nguyễn Văn Thử"]) == expected


def test_a_one_word_name_is_masked_whole_in_free_text():
    assert mask_text("patient An, An's card", ["An"]) == "patient A., A.'s card"


def test_text_in_windows_1258_combining_form_is_matched_as_its_composed_form():
    decomposed = unicodedata.normalize("NFD", "Nguyễn Văn Thử")
    assert mask_text(f"patient {decomposed}", ["Nguyễn Văn Thử"]) == "patient Nguyễn V. T."


def test_records_shown_to_operators_keep_dates_codes_and_amounts():
    records = {"kind": "XML130", "person": {"family": "Nguyễn", "middle": "Thị Hồng", "given": "Nhung",
                                            "identifiers": [{"system": "BHYT", "value": "DN4797912345678"}]},
               "encounter": {"ma_lk": "79025.2024070100123", "admitted_at": "202407010815"},
               "claim": {"total_hospital": "1268980.00"},
               "other_tables": [{"kind": "XML7", "content": "<HO_TEN_CHA><![CDATA[Nguyễn Văn Bình]]></HO_TEN_CHA>"
                                                              "<SO_CCCD_CHA>079060001234</SO_CCCD_CHA>"
                                                              "<NGAY_RA>202407061000</NGAY_RA>"}]}

    shown = mask_records([records])[0]

    assert shown["person"]["middle"] == "T. H." and shown["person"]["given"] == "N."
    assert shown["person"]["identifiers"][0]["value"] == "DN47********678"
    assert shown["encounter"] == records["encounter"] and shown["claim"] == records["claim"]
    assert shown["other_tables"][0]["content"] == ("<HO_TEN_CHA><![CDATA[Nguyễn V. B.]]></HO_TEN_CHA>"
                                                   "<SO_CCCD_CHA>0790*****234</SO_CCCD_CHA>"
                                                   "<NGAY_RA>202407061000</NGAY_RA>")


def test_the_module_examples_hold():
    assert doctest.testmod(masking).failed == 0
