"""The BHXH receiving portal's API as the letters publish it (vn-standards §2.2–2.4): the
endpoint names, form values and password hashing that our client and the portal double share,
so the two cannot drift apart."""
from __future__ import annotations

import hashlib
from datetime import datetime
from zoneinfo import ZoneInfo

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
#: The decisions whose endpoints the portal serves: QĐ 130 (CV 3190), 4750 (CV 1245), 3176.
STANDARDS = ("130", "4750", "3176")
CHECK_IN, CLAIM = "checkin", "claim"
#: The root element each kind of file must have.
ROOTS = {CHECK_IN: "CHI_TIEU_TRANG_THAI_KCB", CLAIM: "GIAMDINHHS"}
#: The form's ``loaiHoSo``: 0 for a check-in file (XML0), 130 for a claim file (GIAMDINHHS).
LOAI_HO_SO = {CHECK_IN: "0", CLAIM: "130"}
TOKEN_PATH = "api/token/take"


def password_hash(password: str) -> str:
    """What the portal takes as ``password`` and ``passwordHash``: MD5, upper-case hex."""
    return hashlib.md5(password.encode("utf-8")).hexdigest().upper()


def endpoint_path(kind: str, standard: str) -> str:
    """``api/qd130/checkInKcbQd4750`` / ``api/qd130/guiHoSoXmlQD4750`` (the portal's spelling)."""
    name = f"checkInKcbQd{standard}" if kind == CHECK_IN else f"guiHoSoXmlQD{standard}"
    return f"api/qd130/{name}"


def peak_window_end(moment: datetime) -> datetime | None:
    """When the peak window ``moment`` is in ends (weekdays 8–11 h and 14–19 h, Vietnam time,
    when the portal takes files of 20 MB at most, else 100 MB), or None outside the windows."""
    local = moment.astimezone(VIETNAM)
    if local.weekday() >= 5:
        return None
    for start, end in ((8, 11), (14, 19)):
        if start <= local.hour < end:
            return local.replace(hour=end, minute=0, second=0, microsecond=0)
    return None
