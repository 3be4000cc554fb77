"""Charset names: every text codec the gateway decodes has the name an HTTP reply gives it."""
from __future__ import annotations

from gateway.formats.charsets import MIME_NAMES, TEXT_CODECS


def test_every_text_codec_has_a_mime_name():
    assert set(MIME_NAMES) == TEXT_CODECS
