"""Record-level XML 130 rules (vn-standards.md §1.4–1.5): ICD-10 shape, datetime formats, totals,
MA_LK linkage and required fields — each failing and passing, each naming its field."""
import dataclasses
from decimal import Decimal

import pytest

from gateway.formats.xml130 import read_xml130
from gateway.model.outcome import ContentError
from gateway.model.records import Diagnosis
from gateway.rules.validation import (
    ValidationRules,
    check_datetime,
    check_diagnosis_codes,
    check_icd10,
    check_linkage,
    check_totals,
    require_valid,
    validate_record_set,
)
from tests.formats.support import INPATIENT_4750, sample


@pytest.fixture(scope="module")
def episode():
    return read_xml130(sample(INPATIENT_4750)).records[0]


def with_claim(records, **changes):
    return dataclasses.replace(records, claim=dataclasses.replace(records.claim, **changes))


def test_sample_episode_passes_every_rule(episode):
    assert validate_record_set(episode) == ()
    assert require_valid(episode) is episode


@pytest.mark.parametrize("code", ["J18.9", "E119", "I10", "U07.1", "E10.2†"])
def test_icd10_shapes_pass(code):
    assert check_icd10(code) == []


@pytest.mark.parametrize("code", ["J1", "18.9", "J18.999", "j18.9", "J18-9"])
def test_icd10_bad_shapes_are_102_naming_the_field(code):
    [issue] = check_icd10(code, field="MA_BENH_KT", location="XML1^1^MA_BENH_KT")

    assert issue.code == 102 and issue.text.startswith("MA_BENH_KT:") and "ICD-10" in issue.text


def test_main_diagnosis_holds_exactly_one_code():
    [issue] = check_diagnosis_codes("J18.9;I10", ())

    assert issue.location == "XML1^1^MA_BENH_CHINH" and "exactly one" in issue.text


def test_at_most_12_secondary_diagnoses():
    assert check_diagnosis_codes("J18.9", ["I10"] * 12) == []
    [issue] = check_diagnosis_codes("J18.9", ["I10"] * 13)
    assert "MA_BENH_KT" in issue.text and "at most 12" in issue.text


def test_secondary_limit_is_configurable(episode):
    records = dataclasses.replace(episode, diagnosis=Diagnosis("J18.9", ("I10", "E11.9")))

    [issue] = validate_record_set(records, ValidationRules(max_secondary_diagnoses=1))
    assert "at most 1" in issue.text


def test_twelve_character_time_passes():
    assert check_datetime("202407010815", field="NGAY_VAO") == []


@pytest.mark.parametrize("value, rule", [
    ("20240701081", "expected 12"), ("2024070108:5", "expected 12"), ("202413010815", "calendar date"),
    ("202402300815", "calendar date"), ("202407012415", "24-hour time"), ("202407010860", "24-hour time")])
def test_bad_times_are_102_naming_the_field_and_rule(value, rule):
    [issue] = check_datetime(value, field="NGAY_VAO", location="XML1^1^NGAY_VAO")

    assert issue.code == 102 and issue.text.startswith("NGAY_VAO:") and rule in issue.text


def test_birth_date_may_have_unknown_day_and_month_and_its_value_is_never_shown():
    assert check_datetime("198500000000", field="NGAY_SINH", allow_unknown_day_month=True) == []
    [issue] = check_datetime("198513120000", field="NGAY_SINH", sensitive=True)
    assert "198513120000" not in issue.text and "masked" in issue.text


def test_eight_character_date_fields():
    assert check_datetime("20241231", field="GT_THE_DEN", lengths=(8,)) == []
    assert check_datetime("202412310000", field="GT_THE_DEN", lengths=(8,))[0].code == 102


def test_totals_that_do_not_add_up_name_both_fields(episode):
    records = with_claim(episode, total_insurance=episode.claim.total_insurance + 100)

    issues = check_totals(records)

    assert [i.location for i in issues] == ["XML1^1^T_TONGCHI_BH", "XML1^1^T_BHTT"]
    assert "Σ THANH_TIEN_BH over XML2 + XML3" in issues[0].text


def test_t_bhtt_must_be_t_tongchi_bh_minus_t_bncct(episode):
    [issue] = check_totals(with_claim(episode, fund_paid=episode.claim.fund_paid - 50))

    assert issue.location == "XML1^1^T_BHTT" and "T_TONGCHI_BH − T_BNCCT" in issue.text


def test_totals_tolerance_is_configurable(episode):
    records = with_claim(episode, total_hospital=episode.claim.total_hospital + Decimal("0.5"))

    assert check_totals(records) == []
    assert check_totals(records, tolerance=Decimal(0))[0].location == "XML1^1^T_TONGCHI_BV"


def test_line_with_another_ma_lk_is_a_103(episode):
    lines = list(episode.services)
    lines[4] = dataclasses.replace(lines[4], ma_lk="79025.OTHER")

    [issue] = check_linkage(dataclasses.replace(episode, services=tuple(lines)))

    assert (issue.code, issue.location) == (103, "XML3^5^MA_LK") and "does not match XML1 MA_LK" in issue.text


def test_line_without_ma_lk_is_a_101(episode):
    notes = (dataclasses.replace(episode.notes[0], ma_lk=""),) + episode.notes[1:]

    [issue] = check_linkage(dataclasses.replace(episode, notes=notes))

    assert (issue.code, issue.location) == (101, "XML5^1^MA_LK")


def test_letters_are_linked_too(episode):
    records = dataclasses.replace(episode, appointment=dataclasses.replace(episode.appointment, ma_lk="x"))

    assert check_linkage(records)[0].location == "XML14^1^MA_LK"


def test_missing_required_xml1_field_is_a_101(episode):
    records = dataclasses.replace(episode, encounter=dataclasses.replace(episode.encounter, facility=""))

    [issue] = validate_record_set(records)

    assert (issue.code, issue.location, issue.text) == (101, "XML1^1^MA_CSKCB", "MA_CSKCB: is required in XML1")


def test_sex_outside_1_2_3_is_a_103(episode):
    records = dataclasses.replace(episode, person=dataclasses.replace(episode.person, sex="4"))

    issues = validate_record_set(records)

    assert (issues[0].code, issues[0].location) == (103, "XML1^1^GIOI_TINH")


def test_person_rules_run_on_the_record_set(episode):
    identifiers = tuple(dataclasses.replace(i, value="DN9797912345678") if i.system == "BHYT" else i
                        for i in episode.person.identifiers)
    person = dataclasses.replace(episode.person, identifiers=identifiers)

    [issue] = validate_record_set(dataclasses.replace(episode, person=person))

    assert issue.location == "XML1^1^MA_THE_BHYT" and "benefit level" in issue.text


def test_require_valid_raises_content_error_whose_issues_serialise_for_422(episode):
    records = with_claim(episode, total_hospital=Decimal(0))

    with pytest.raises(ContentError) as refused:
        require_valid(records)

    assert [i.to_dict() for i in refused.value.issues] == [{
        "code": 102, "location": "XML1^1^T_TONGCHI_BV", "severity": "E",
        "text": f"T_TONGCHI_BV: 0 is not Σ THANH_TIEN_BV over XML2 + XML3 = {episode.claim.total_hospital} "
                "(tolerance 1)"}]
