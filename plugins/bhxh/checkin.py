"""The check-in file (XML0, ``CHI_TIEU_TRANG_THAI_KCB``) of a claim, built from the claim file
itself, so a ``bhxh`` destination needs one outbox row per episode and not two.

Its 26 fields (vn-standards §1.6) are XML1's with the first service, drug or supply: we take
the first XML3 line (service or supply) and the first XML2 line (drug) of the record, with
NGAY_YL of the first of them. No check-in for an emergency (``MA_DOITUONG_KCB = 2``, QĐ 4750).
"""
from __future__ import annotations

import base64

from lxml import etree

CHECK_IN_FIELDS = (
    "MA_LK", "STT", "MA_BN", "HO_TEN", "SO_CCCD", "NGAY_SINH", "GIOI_TINH", "MA_THE_BHYT", "MA_DKBD", "GT_THE_TU",
    "GT_THE_DEN", "MA_DOITUONG_KCB", "NGAY_VAO", "NGAY_VAO_NOI_TRU", "LY_DO_VNT", "MA_LY_DO_VNT", "MA_LOAI_KCB",
    "MA_CSKCB", "MA_DICH_VU", "TEN_DICH_VU", "MA_THUOC", "TEN_THUOC", "MA_VAT_TU", "TEN_VAT_TU", "NGAY_YL",
    "DU_PHONG")
EMERGENCY = "2"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


def _tables(hoso: etree._Element) -> dict[str, etree._Element]:
    tables = {}
    for file in hoso.iter("FILEHOSO"):
        kind = (file.findtext("LOAIHOSO") or "").strip()
        content = base64.b64decode(file.findtext("NOIDUNGFILE") or "")
        tables[kind] = etree.fromstring(content, _PARSER)
    return tables


def _first(table: etree._Element | None, record: str) -> dict[str, str]:
    line = table.find(f".//{record}") if table is not None else None
    return {child.tag: (child.text or "") for child in line} if line is not None else {}


def check_in_file(claim: bytes) -> bytes | None:
    """The check-in file for every HOSO of the GIAMDINHHS ``claim`` that needs one, with an
    empty CHUKYDONVI to sign into; None when none does (emergencies only)."""
    root = etree.fromstring(claim, _PARSER)
    out = etree.Element("CHI_TIEU_TRANG_THAI_KCB")
    listing = etree.SubElement(out, "DSACH_TRANG_THAI_KCB")
    for n, hoso in enumerate(root.iter("HOSO"), 1):
        tables = _tables(hoso)
        summary = {child.tag: child.text or "" for child in tables["XML1"]} if "XML1" in tables else {}
        if summary.get("MA_DOITUONG_KCB", "").strip() == EMERGENCY:
            continue
        service, drug = _first(tables.get("XML3"), "CHI_TIET_DVKT"), _first(tables.get("XML2"), "CHI_TIET_THUOC")
        values = {**summary, "STT": summary.get("STT") or str(n),
                  **{k: service.get(k, "") for k in ("MA_DICH_VU", "TEN_DICH_VU", "MA_VAT_TU", "TEN_VAT_TU")},
                  **{k: drug.get(k, "") for k in ("MA_THUOC", "TEN_THUOC")},
                  "NGAY_YL": service.get("NGAY_YL") or drug.get("NGAY_YL") or ""}
        record = etree.SubElement(listing, "TRANG_THAI_KCB")
        for field in CHECK_IN_FIELDS:
            etree.SubElement(record, field).text = values.get(field, "")
    if not len(listing):
        return None
    etree.SubElement(out, "CHUKYDONVI").text = ""
    return etree.tostring(out, xml_declaration=True, encoding="utf-8")
