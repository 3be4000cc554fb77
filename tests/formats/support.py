"""Helpers for the XML 130 tests: the synthetic samples and a way to edit one table inside them."""
from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

from lxml import etree

SAMPLES = Path(__file__).resolve().parents[2] / "plugins" / "vnpt_his" / "samples"
INPATIENT_4750 = SAMPLES / "xml4750_noi_tru.xml"
REFERRAL_4750 = SAMPLES / "xml4750_chuyen_tuyen.xml"
CHECK_IN_4750 = SAMPLES / "xml4750_checkin.xml"
OUTPATIENT_4210 = SAMPLES / "xml4210_ngoai_tru.xml"


#: A minimal XML6 (HIV care record) for the sample episode, which the privacy policy must drop.
HIV_CARE_TABLE = ('<?xml version="1.0" encoding="utf-8"?><CHI_TIEU_HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS>'
                  "<MA_LK>79025.2024070100123</MA_LK><NHOM_DOI_TUONG>0</NHOM_DOI_TUONG>"
                  "</CHI_TIEU_HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS>")


def sample(path: Path) -> bytes:
    return path.read_bytes()


def inner_tables(document: bytes) -> dict[str, str]:
    """LOAIHOSO → decoded table XML of the first HOSO."""
    root = etree.fromstring(document)
    return {f.findtext("LOAIHOSO"): base64.b64decode(f.findtext("NOIDUNGFILE")).decode("utf-8")
            for f in root.iter("FILEHOSO")}


def edit_table(document: bytes, kind: str, change: Callable[[str], str]) -> bytes:
    """The same envelope with table ``kind`` (added if missing) replaced by ``change(old text)``."""
    root = etree.fromstring(document)
    hoso = next(root.iter("HOSO"))
    for file in hoso.iter("FILEHOSO"):
        if file.findtext("LOAIHOSO") == kind:
            old = base64.b64decode(file.findtext("NOIDUNGFILE")).decode("utf-8")
            file.find("NOIDUNGFILE").text = base64.b64encode(change(old).encode("utf-8")).decode("ascii")
            break
    else:
        file = etree.SubElement(hoso, "FILEHOSO")
        etree.SubElement(file, "LOAIHOSO").text = kind
        etree.SubElement(file, "NOIDUNGFILE").text = base64.b64encode(change("").encode("utf-8")).decode("ascii")
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def drop_table(document: bytes, kind: str) -> bytes:
    root = etree.fromstring(document)
    for file in list(root.iter("FILEHOSO")):
        if file.findtext("LOAIHOSO") == kind:
            file.getparent().remove(file)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")
