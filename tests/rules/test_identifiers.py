"""Identifier shape rules (vn-standards.md §3): every rule fails on a bad value, passes on a good one,
names the field, and never shows the identifier unmasked."""
import pytest

from gateway.rules.identifiers import (
    PROVINCE_CODES_2025,
    IdentityRules,
    check_bhxh_number,
    check_bhyt_card,
    check_cccd,
    check_facility_code,
    check_province_code,
)

CCCD_FEMALE_1985 = "079185004321"


def only(issues):
    [issue] = issues
    return issue


def test_cccd_of_12_digits_with_matching_province_century_sex_and_year_passes():
    assert check_cccd(CCCD_FEMALE_1985, birth_date="198503120000", sex="2") == []


def test_cccd_with_11_digits_is_a_102_naming_the_field_with_the_value_masked():
    issue = only(check_cccd("07918500432", location="PID^1^3^1", field="PID-3"))

    assert (issue.code, issue.location) == (102, "PID^1^3^1")
    assert issue.text.startswith("PID-3: CCCD") and "expected 12 digits" in issue.text
    assert "07918500432" not in issue.text and "0791****432" in issue.text


def test_cccd_with_a_letter_is_a_102():
    assert only(check_cccd("07918500432A")).code == 102


def test_cccd_with_an_unknown_province_prefix_is_a_103():
    issue = only(check_cccd("099185004321"))

    assert issue.code == 103 and "province" in issue.text and issue.text.startswith("SO_CCCD:")


def test_cccd_century_digit_must_match_the_birth_century():
    issue = only(check_cccd("079085004321", birth_date="20850312", sex="1"))

    assert issue.code == 102 and "century/sex digit 0" in issue.text and "2085" in issue.text


def test_cccd_sex_digit_must_match_gioi_tinh():
    issue = only(check_cccd("079085004321", birth_date="19850312", sex="2"))

    assert "GIOI_TINH 2" in issue.text and "expected 1" in issue.text


def test_cccd_year_digits_must_match_the_birth_year():
    issue = only(check_cccd(CCCD_FEMALE_1985, birth_date="19860312", sex="2"))

    assert "year digits" in issue.text


def test_cccd_birth_checks_can_be_switched_off_for_reissued_numbers():
    rules = IdentityRules(check_cccd_birth=False)

    assert check_cccd(CCCD_FEMALE_1985, birth_date="19860312", sex="1", rules=rules) == []


def test_cccd_sex_unknown_checks_only_the_century():
    assert check_cccd(CCCD_FEMALE_1985, birth_date="1985", sex="3") == []


def test_required_cccd_missing_is_a_101_and_optional_missing_passes():
    assert only(check_cccd("", required=True)).code == 101
    assert check_cccd("") == []


def test_bhyt_card_of_15_characters_passes():
    assert check_bhyt_card("DN4797912345678") == []


def test_bhyt_card_of_14_characters_is_a_102_with_the_card_masked():
    issue = only(check_bhyt_card("DN479791234567"))

    assert issue.code == 102 and "expected 15" in issue.text and issue.text.startswith("MA_THE_BHYT:")
    assert "DN479791234567" not in issue.text


def test_bhyt_card_group_must_be_two_capital_letters():
    assert "beneficiary group" in only(check_bhyt_card("dn4797912345678")).text


def test_bhyt_card_benefit_level_must_be_1_to_5():
    issue = only(check_bhyt_card("DN6797912345678"))

    assert issue.code == 103 and "benefit level" in issue.text


def test_bhyt_card_province_must_be_a_province_code():
    issue = only(check_bhyt_card("DN4997912345678"))

    assert issue.code == 103 and "province" in issue.text


def test_bhyt_card_must_end_with_ten_digits():
    assert only(check_bhyt_card("DN47979123456X8")).code == 102


def test_bhyt_card_group_list_is_configurable():
    rules = IdentityRules(bhyt_groups=frozenset({"DN", "HT"}))

    assert check_bhyt_card("DN4797912345678", rules=rules) == []
    assert only(check_bhyt_card("ZZ4797912345678", rules=rules)).code == 103


def test_ten_digit_bhxh_number_is_accepted_as_a_card_only_where_configured():
    assert only(check_bhyt_card("7912345678")).code == 102
    assert check_bhyt_card("7912345678", rules=IdentityRules(accept_bhxh_number_as_card=True)) == []


def test_bhxh_number_must_be_10_digits():
    assert check_bhxh_number("7912345678") == []
    issue = only(check_bhxh_number("791234567"))
    assert issue.code == 102 and "expected 10 digits" in issue.text and "791234567" not in issue.text


def test_facility_code_of_5_digits_passes():
    assert check_facility_code("79025") == []


def test_facility_code_of_4_characters_is_a_102_naming_the_field():
    issue = only(check_facility_code("7902", field="MA_DKBD"))

    assert issue.code == 102 and issue.text.startswith("MA_DKBD:") and "expected 5" in issue.text


def test_facility_code_pattern_is_configurable():
    assert only(check_facility_code("79A25")).code == 102
    assert check_facility_code("79A25", rules=IdentityRules(facility_pattern=r"\d{2}[0-9A-Z]\d{2}")) == []


def test_facility_province_prefix_check_is_optional():
    assert check_facility_code("99001") == []
    assert only(check_facility_code("99001", rules=IdentityRules(check_facility_province=True))).code == 103


def test_province_code_must_be_in_the_configured_list():
    assert check_province_code("79") == []
    assert only(check_province_code("99")).code == 103
    assert only(check_province_code("74", rules=IdentityRules(provinces=PROVINCE_CODES_2025))).code == 103


@pytest.mark.parametrize("value", ["079185004321", "DN4797912345678", "7912345678"])
def test_no_rule_text_contains_the_identifier_in_clear(value):
    broken = value[:-1] + "?"
    texts = [i.text for check in (check_cccd, check_bhyt_card, check_bhxh_number) for i in check(broken)]

    assert texts and all(broken not in text for text in texts)
