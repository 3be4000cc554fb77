"""HL7 v2 acknowledgements: original mode (AA/AE/AR) and enhanced mode (CA/CE/CR accept ACKs).

The ACK's MSH mirrors the sender's: our MSH-3/4 are its MSH-5/6 and the other way round, MSH-11
and MSH-12 are copied so that its parser accepts the answer, and MSH-18 is copied because the
ACK is encoded in the sender's character set.
"""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.formats.charsets import codec_for
from gateway.formats.hl7v2 import Hl7Message, escape
from gateway.model.outcome import ACCEPT, TABLE_0357, Issue

if TYPE_CHECKING:
    from gateway.core.ack_profile import AckProfile

_DEFAULT_ENCODING = "^~\\&"
_sequence = itertools.count(1)
_PREFIX = os.urandom(3).hex().upper()


def next_ack_control_id() -> str:
    """Unique across this process and, thanks to the random prefix, across restarts (≤ 20 chars)."""
    return f"G{_PREFIX}{next(_sequence):013d}"


_last_timestamp: tuple[int, str] = (-1, "")


def hl7_timestamp(seconds: float) -> str:
    """Local time to the second; the text of the current second is reused (many ACKs share it)."""
    global _last_timestamp
    whole = int(seconds)
    cached = _last_timestamp  # one tuple, read and replaced whole, so threads never see half of it
    if cached[0] == whole:
        return cached[1]
    text = time.strftime("%Y%m%d%H%M%S", time.localtime(whole))
    _last_timestamp = (whole, text)
    return text


def is_enhanced_mode(message: Hl7Message | None) -> bool:
    return message is not None and bool(message.accept_ack_type or message.application_ack_type)


def _wanted(condition: str, code: str) -> bool:
    """Table 0155: AL always, NE never, ER only on error/reject, SU only on success. Empty means
    AL, so a sender that filled only one of MSH-15/16 still hears back."""
    if condition in ("", "AL"):
        return True
    if condition == "NE":
        return False
    success = code[1] == "A"
    return success if condition == "SU" else not success if condition == "ER" else True


def ack_codes(message: Hl7Message | None, code: str) -> list[str]:
    """The MSA-1 of every ACK the decision ``code`` owes the sender, in the order they go on the
    wire: what the sender was actually told, which the journal keeps for operators.

    Original mode (MSH-15 and MSH-16 empty) gives one application ACK. Enhanced mode gives the
    accept ACK (CA/CE/CR, "safely stored") when MSH-15 asks for it, then the application ACK when
    MSH-16 does; both can be absent (NE/NE).
    """
    if not is_enhanced_mode(message):
        return [code]
    codes = []
    accept_code = "C" + code[1]
    if _wanted(message.accept_ack_type, accept_code):
        codes.append(accept_code)
    if _wanted(message.application_ack_type, code):
        codes.append(code)
    return codes


def acknowledgements(message: Hl7Message | None, code: str, issues: Sequence[Issue], now: float,
                     profile: AckProfile | None = None) -> list[str]:
    """Every ACK this decision owes the sender, in the order they go on the wire (see :func:`ack_codes`)."""
    return [build_ack(message, sent, issues, now, profile=profile) for sent in ack_codes(message, code)]


def build_ack(message: Hl7Message | None, code: str, issues: Sequence[Issue], now: float,
              control_id: str | None = None, profile: AckProfile | None = None) -> str:
    """One ACK message as text with CR segment ends (no MLLP framing).

    ``message`` may be None when the frame had no readable MSH; the ACK then carries an empty
    MSA-2, which is all HL7 allows us to say. ``profile`` adds the MSH fields a plugin's ACK
    profile asks for (:mod:`gateway.core.ack_profile`).
    """
    if message is None:
        sep, enc = "|", _DEFAULT_ENCODING
        mirror = {n: "" for n in (3, 4, 5, 6, 11, 12, 18)}
        mirror[11], mirror[12] = "P", "2.5"
        event, original_id = "", ""
    else:
        sep, enc = message.field_separator, message.encoding_characters[:4]
        mirror = {n: message.msh(n) for n in (3, 4, 5, 6, 11, 12, 18)}
        event, original_id = message.trigger_event, message.control_id
    version = mirror[12].split(enc[0])[0]
    msh = [
        "MSH", enc, mirror[5], mirror[6], mirror[3], mirror[4], hl7_timestamp(now), "",
        enc[0].join(("ACK", event, "ACK")) if event else "ACK",
        control_id or next_ack_control_id(), mirror[11] or "P", mirror[12] or "2.5",
    ]
    extra = profile.header_fields(enc) if profile is not None else {}
    charset = _reply_charset(mirror[18], enc, message)
    if charset:
        extra[18] = charset
    if extra:
        msh += [""] * (max(extra) - len(msh))
        for number, value in extra.items():
            msh[number - 1] = value
    msa = ["MSA", code, original_id]
    errors = [i for i in issues if i.severity == "E"]
    if code[1] != "A" and errors and _has_msa3(version):
        msa.append(escape(errors[0].text, sep, enc))
    segments = [sep.join(msh), sep.join(msa)]
    segments += [_err_segment(issue, sep, enc) for issue in issues]
    return "\r".join(segments) + "\r"


def _reply_charset(sent: str, enc: str, message: Hl7Message | None) -> str:
    """MSH-18 of the ACK: the sender's own when it names a character set (the ACK is written in
    it), else nothing, or ``UNICODE UTF-8`` when the ACK is written in UTF-8 anyway: a sender's
    MSH-18 of ``^`` or a space was read as empty, and mirroring it would name no charset at all."""
    if not sent or codec_for(sent.split(enc[1])[0].split(enc[0])[0]) is not None:
        return sent
    return "UNICODE UTF-8" if message is not None and codec_for(message.charset) == "utf-8" else ""


def _has_msa3(version: str) -> bool:
    """MSA-3 (text message) was withdrawn in v2.7; older receivers still show it to people."""
    try:
        return tuple(int(p) for p in version.split(".")[:2]) < (2, 7)
    except ValueError:
        return True


def _err_segment(issue: Issue, sep: str, enc: str) -> str:
    """ERR in v2.5 form: ERR-2 location, ERR-3 table-0357 code, ERR-4 severity, ERR-8 user message."""
    component = enc[0]
    name = TABLE_0357.get(issue.code, "Application error")
    fields = [
        "ERR",
        "",
        issue.location,
        component.join((str(issue.code), name, "HL70357")),
        issue.severity,
        "", "", "",
        escape(issue.text, sep, enc),
    ]
    return sep.join(fields)


_codecs: dict[str, str] = {}


def encode_reply(text: str, charset: str) -> bytes:
    """Encode an ACK in the sender's character set; characters it cannot hold become ``?`` rather
    than failing the answer."""
    codec = _codecs.get(charset)
    if codec is None:
        codec = codec_for(charset) or "utf-8"
        if len(_codecs) < 256:  # MSH-18 is the sender's text: remember only a bounded few
            _codecs[charset] = codec
    return text.encode(codec, errors="replace")


__all__ = ["ACCEPT", "ack_codes", "acknowledgements", "build_ack", "encode_reply", "is_enhanced_mode",
           "next_ack_control_id"]
