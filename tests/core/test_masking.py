"""Identifiers in free text are masked wherever they sit: alone, in any case, or glued to a label."""
import pytest

from gateway.core.masking import mask_name, mask_text


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


def test_names_keep_initials_and_word_lengths():
    assert mask_name("Nguyễn Văn Thử") == "N***** V** T**"
