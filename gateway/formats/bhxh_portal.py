"""The BHXH portal's answer shape and form (vn-standards §2.2–2.4), shared by every endpoint that
speaks it: the gateway's built-in portal pair (:mod:`gateway.transports.xml_http`) and the BHXH
plugin's portal-compatible intake. Its JSON (``maKetQua``, ``maGiaoDich``, ``thoiGianTiepNhan``,
``thongDiep``) is a format a HIS already reads, so it lives with the other formats.

    >>> portal_body("200", "17", 0.0, "ok")
    {'maKetQua': '200', 'maGiaoDich': '17', 'thoiGianTiepNhan': '19700101070000', 'thongDiep': 'ok'}
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from gateway.model.outcome import ACCEPT, ERROR, REJECT, Outcome

#: Vietnam has kept UTC+7 without daylight saving since 1975, so a fixed offset is exact and
#: needs no tz database on the host.
VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")
#: ``thoiGianTiepNhan`` as the portal writes it (vn-standards §2.3: ``yyyyMMddHHmmss``).
RECEPTION_TIME_FORMAT = "%Y%m%d%H%M%S"

#: ``maKetQua`` values of the portal-compatible endpoints. "200" is the portal's success code;
#: the rest are the gateway's choice among codes the portal is known to use (4210 list, §2.6),
#: because the 4750 error list is not published. "429" is the gateway's own: the portal is known
#: to have no code for a sender locked out, so it is HTTP's, as 401 and 403 are.
BHXH_CODES = {
    "200": "accepted and stored (also a repeat of a file already accepted)",
    "205": "a form field is missing or wrong: maCSKCB, loaiHoSo or fileHSBase64 (not base64, "
           "maCSKCB not the file's MACSKCB, the other kind of file)",
    "123": "the file is refused as it is: not well-formed or unsafe XML, or a rule of QĐ 4750 broken",
    "401": "the sender is not a known client (no or wrong credentials, an address no client has)",
    "403": "no plugin of this gateway takes files of this facility, or the client may not send for it "
           "(the form's maCSKCB, the file's MACSKCB or an episode's MA_CSKCB is not one of its facilities)",
    "429": "the sender's address presented wrong credentials too often (auth.max_failures) and is refused "
           "for a while, whatever it sends: the Retry-After header says how many seconds",
    "1001": "the request is larger than http.max_body_bytes",
    "124": "not stored now (the gateway is at a bound or timed out): send the same file again later",
}

#: Form fields of the portal API. ``username`` and ``maTinh`` are accepted and not used: the
#: gateway has no portal accounts, and the facility code says the province.
FORM_FIELDS = ("username", "loaiHoSo", "maTinh", "maCSKCB", "fileHSBase64")
_FORM_LOCATIONS = frozenset(FORM_FIELDS)


def portal_code(outcome: Outcome) -> str:
    """The ``maKetQua`` for a decision (see :data:`BHXH_CODES`)."""
    if send_again(outcome):
        return "124"
    if outcome.ack_code == ACCEPT:
        return "200"
    if outcome.ack_code == ERROR:
        return "123"
    if any(i.location in _FORM_LOCATIONS for i in outcome.issues):
        return "205"
    return "403"


def send_again(outcome: Outcome) -> bool:
    """Not stored, or AR 207 (a plugin or the journal too slow): the same file may succeed later."""
    return not outcome.committed or outcome.ack_code == REJECT and any(i.code == 207 for i in outcome.issues)


def portal_message(code: str, outcome: Outcome) -> str:
    if code == "200":
        records = outcome.extra.get("records", 0)
        repeat = " (đã tiếp nhận trước đó / already received)" if outcome.duplicate else ""
        return f"Tiếp nhận thành công / accepted: {records} hồ sơ (records){repeat}"
    summary = {
        "123": "Hồ sơ không hợp lệ / file refused",
        "124": "Chưa lưu được hồ sơ, vui lòng gửi lại sau / not stored, send again later",
        "205": "Sai tham số / wrong parameter",
        "403": "Cơ sở KCB không được tiếp nhận / facility not served by this gateway or not this client's",
    }[code]
    details = "; ".join(f"{i.location}: {i.text}" if i.location else i.text for i in outcome.issues)
    return f"{summary}: {details}" if details else summary


def portal_body(code: str, transaction: str, received_at: float, message: str) -> dict:
    return {"maKetQua": code, "maGiaoDich": transaction, "thoiGianTiepNhan": reception_time(received_at),
            "thongDiep": message}


def reception_time(seconds: float) -> str:
    """``thoiGianTiepNhan``: the reception time, Vietnam local time, ``yyyyMMddHHmmss``."""
    return datetime.fromtimestamp(seconds, VIETNAM_TIME).strftime(RECEPTION_TIME_FORMAT)


def decode_file_field(text: str) -> bytes | None:
    """``fileHSBase64`` as bytes. A space is read as ``+``: a client that form-encodes without
    escaping ``+`` sends base64's ``+`` as a space, and a space is never base64 itself. Line
    breaks (MIME-style base64) are dropped."""
    cleaned = "".join(text.replace(" ", "+").split())
    try:
        raw = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw or None


def form_problem(fields: Mapping[str, str], raw: bytes | None, file_type: str, document: str) -> str | None:
    """What is wrong with a check-in or submission form (answered ``205``), or None. ``raw`` is
    ``fileHSBase64`` decoded (:func:`decode_file_field`); ``file_type`` the ``loaiHoSo`` the
    endpoint takes (130 claim, 0 check-in) and ``document`` the kind of file that is."""
    missing = [name for name in ("loaiHoSo", "maCSKCB", "fileHSBase64") if not fields.get(name)]
    if missing:
        return wrong_parameter(f"missing form field(s) {', '.join(missing)}; send {', '.join(FORM_FIELDS)} as "
                               f"application/x-www-form-urlencoded or multipart/form-data")
    if fields["loaiHoSo"] != file_type:
        return wrong_parameter(f"loaiHoSo: {fields['loaiHoSo']!r}, this endpoint takes loaiHoSo={file_type} "
                               f"({document} file)")
    if raw is None:
        return wrong_parameter("fileHSBase64: not valid base64 (RFC 4648 alphabet, '=' padding)")
    return None


def wrong_parameter(text: str) -> str:
    """``thongDiep`` of a ``205`` answer."""
    return f"Sai tham số / wrong parameter: {text}"
