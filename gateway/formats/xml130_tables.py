"""Where each XML 130/4750 field goes in the canonical model, table by table.

The reader and the writer both follow these tables, so a field mapped here is read and written
the same way. Sources: vn-standards.md §1.3 (tags), §1.5–1.7 (field lists in annex order), and
the 4210 names of §1.2/§1.5. 4210 detail-table names that the reference does not list (XML2–5)
come from public client code and are marked [U] below.
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.model.records import (
    Appointment,
    CheckIn,
    ClinicalNote,
    DischargeLetter,
    MedicationLine,
    Observation,
    Referral,
    ServiceLine,
)

TEXT, NUMBER, LIST = "text", "number", "list"


@dataclass(frozen=True)
class FieldMap:
    """One XML field: its tag, the model attribute that carries it, and how its text is typed."""

    tag: str
    attribute: str
    kind: str = TEXT


@dataclass(frozen=True)
class TableSpec:
    """A FILEHOSO table: LOAIHOSO, the 4750 root / list / record tags, the record class, the
    fields in annex order, and its 4210 form when it had one."""

    kind: str
    root: str
    list_tag: str
    record: str
    record_class: type
    fields: tuple[FieldMap, ...]
    legacy_root: str = ""
    legacy_renames: tuple[tuple[str, str], ...] = ()  # (4210 tag, 4750 tag)
    legacy_only: frozenset[str] = frozenset()  # 4210 fields 4750 has no place for: kept in extra, not written


def _f(spec: str) -> tuple[FieldMap, ...]:
    """``"MA_LK ma_lk; SO_LUONG quantity n; MA_BAC_SI doctors l"`` → field maps."""
    maps = []
    for item in spec.split(";"):
        tag, attribute, *kind = item.split()
        maps.append(FieldMap(tag, attribute, {"n": NUMBER, "l": LIST}.get(kind[0]) if kind else TEXT))
    return tuple(maps)


XML2 = TableSpec(
    "XML2", "CHITIEU_CHITIET_THUOC", "DSACH_CHI_TIET_THUOC", "CHI_TIET_THUOC", MedicationLine, _f(
        "MA_LK ma_lk; STT stt; MA_THUOC code; MA_PP_CHEBIEN preparation_method;"
        "MA_CSKCB_THUOC dispensing_facility; MA_NHOM cost_group; TEN_THUOC name; DON_VI_TINH unit;"
        "HAM_LUONG strength; DUONG_DUNG route; DANG_BAO_CHE dosage_form; LIEU_DUNG dose;"
        "CACH_DUNG directions; SO_DANG_KY registration_number; TT_THAU tender; PHAM_VI scope;"
        "TYLE_TT_BH insurance_rate n; SO_LUONG quantity n; DON_GIA unit_price n;"
        "THANH_TIEN_BV amount_hospital n; THANH_TIEN_BH amount_insurance n;"
        "T_NGUONKHAC_NSNN other_state_budget n; T_NGUONKHAC_VTNN other_foreign_aid n;"
        "T_NGUONKHAC_VTTN other_domestic_aid n; T_NGUONKHAC_CL other_remaining n; T_NGUONKHAC other_total n;"
        "MUC_HUONG benefit_level n; T_BNTT patient_paid n; T_BNCCT patient_copay n; T_BHTT fund_paid n;"
        "MA_KHOA department; MA_BAC_SI doctors l; MA_DICH_VU service_code; NGAY_YL ordered_at;"
        "NGAY_TH_YL performed_at; MA_PTTT payment_method; NGUON_CTRA funding_source;"
        "VET_THUONG_TP war_wound; DU_PHONG reserve"),
    legacy_root="DSACH_CHI_TIET_THUOC",
    legacy_renames=(("TYLE_TT", "TYLE_TT_BH"), ("THANH_TIEN", "THANH_TIEN_BV")),
    legacy_only=frozenset({"T_NGOAIDS", "MA_BENH"}),  # [U] 4210 XML2 names from client code
)

XML3 = TableSpec(
    "XML3", "CHITIEU_CHITIET_DVKT_VTYT", "DSACH_CHI_TIET_DVKT", "CHI_TIET_DVKT", ServiceLine, _f(
        "MA_LK ma_lk; STT stt; MA_DICH_VU service_code; MA_PTTT_QT procedure_codes l;"
        "MA_VAT_TU supply_code; MA_NHOM cost_group; GOI_VTYT supply_package; TEN_VAT_TU supply_name;"
        "TEN_DICH_VU service_name; MA_XANG_DAU fuel_code; DON_VI_TINH unit; PHAM_VI scope;"
        "SO_LUONG quantity n; DON_GIA_BV unit_price_hospital n; DON_GIA_BH unit_price_insurance n;"
        "TT_THAU tender; TYLE_TT_DV service_rate n; TYLE_TT_BH insurance_rate n;"
        "THANH_TIEN_BV amount_hospital n; THANH_TIEN_BH amount_insurance n; T_TRANTT ceiling_amount n;"
        "MUC_HUONG benefit_level n; T_NGUONKHAC_NSNN other_state_budget n; T_NGUONKHAC_VTNN other_foreign_aid n;"
        "T_NGUONKHAC_VTTN other_domestic_aid n; T_NGUONKHAC_CL other_remaining n; T_NGUONKHAC other_total n;"
        "T_BNTT patient_paid n; T_BNCCT patient_copay n; T_BHTT fund_paid n; MA_KHOA department;"
        "MA_GIUONG bed_code; MA_BAC_SI doctors l; NGUOI_THUC_HIEN performers l; MA_BENH diagnosis_codes;"
        "MA_BENH_YHCT traditional_codes; NGAY_YL ordered_at; NGAY_TH_YL performed_at; NGAY_KQ result_at;"
        "MA_PTTT payment_method; VET_THUONG_TP war_wound; PP_VO_CAM anaesthesia; VI_TRI_TH_DVKT body_site;"
        "MA_MAY machine; MA_HIEU_SP product_code; TAI_SU_DUNG reuse; DU_PHONG reserve"),
    legacy_root="DSACH_CHI_TIET_DVKT",
    legacy_renames=(("DON_GIA", "DON_GIA_BV"), ("TYLE_TT", "TYLE_TT_DV"), ("THANH_TIEN", "THANH_TIEN_BV")),
    legacy_only=frozenset({"T_NGOAIDS"}),
)

XML4 = TableSpec(
    "XML4", "CHITIEU_CHITIET_DICHVUCANLAMSANG", "DSACH_CHI_TIET_CLS", "CHI_TIET_CLS", Observation, _f(
        "MA_LK ma_lk; STT stt; MA_DICH_VU service_code; MA_CHI_SO code; TEN_CHI_SO name; GIA_TRI value;"
        "DON_VI_DO unit; MO_TA description; KET_LUAN conclusion; NGAY_KQ observed_at;"
        "MA_BS_DOC_KQ reader; DU_PHONG reserve"),
    legacy_root="DSACH_CHI_TIET_CLS",
    legacy_only=frozenset({"MA_MAY"}),  # 4750 moved MA_MAY to XML3
)

XML5 = TableSpec(
    "XML5", "CHITIEU_CHITIET_DIENBIENLAMSANG", "DSACH_CHI_TIET_DIEN_BIEN_BENH", "CHI_TIET_DIEN_BIEN_BENH",
    ClinicalNote, _f(
        "MA_LK ma_lk; STT stt; DIEN_BIEN_LS progress; GIAI_DOAN_BENH stage; HOI_CHAN consultation;"
        "PHAU_THUAT surgery; THOI_DIEM_DBLS recorded_at; NGUOI_THUC_HIEN author; DU_PHONG reserve"),
    legacy_root="DSACH_CHI_TIET_DIEN_BIEN_BENH",
    legacy_renames=(("DIEN_BIEN", "DIEN_BIEN_LS"), ("NGAY_YL", "THOI_DIEM_DBLS")),  # [U] from client code
)

LINE_TABLES = (XML2, XML3, XML4, XML5)

#: XML1 (TONG_HOP) fields in 4750 annex order (66 fields, vn-standards §1.5).
XML1_ORDER = tuple(
    "MA_LK STT MA_BN HO_TEN SO_CCCD NGAY_SINH GIOI_TINH NHOM_MAU MA_QUOCTICH MA_DANTOC MA_NGHE_NGHIEP "
    "DIA_CHI MATINH_CU_TRU MAHUYEN_CU_TRU MAXA_CU_TRU DIEN_THOAI MA_THE_BHYT MA_DKBD GT_THE_TU GT_THE_DEN "
    "NGAY_MIEN_CCT LY_DO_VV LY_DO_VNT MA_LY_DO_VNT CHAN_DOAN_VAO CHAN_DOAN_RV MA_BENH_CHINH MA_BENH_KT "
    "MA_BENH_YHCT MA_PTTT_QT MA_DOITUONG_KCB MA_NOI_DI MA_NOI_DEN MA_TAI_NAN NGAY_VAO NGAY_VAO_NOI_TRU "
    "NGAY_RA GIAY_CHUYEN_TUYEN SO_NGAY_DTRI PP_DIEU_TRI KET_QUA_DTRI MA_LOAI_RV GHI_CHU NGAY_TTOAN T_THUOC "
    "T_VTYT T_TONGCHI_BV T_TONGCHI_BH T_BNTT T_BNCCT T_BHTT T_NGUONKHAC T_BHTT_GDV NAM_QT THANG_QT "
    "MA_LOAI_KCB MA_KHOA MA_CSKCB MA_KHUVUC CAN_NANG CAN_NANG_CON NAM_NAM_LIEN_TUC NGAY_TAI_KHAM MA_HSBA "
    "MA_TTDV DU_PHONG".split())

#: 4210 XML1 names → 4750 names (vn-standards §1.5, "4210 XML1").
XML1_LEGACY_RENAMES = (
    ("MA_THE", "MA_THE_BHYT"), ("MIEN_CUNG_CT", "NGAY_MIEN_CCT"), ("TEN_BENH", "CHAN_DOAN_RV"),
    ("MA_BENH", "MA_BENH_CHINH"), ("MA_BENHKHAC", "MA_BENH_KT"), ("MA_NOI_CHUYEN", "MA_NOI_DI"),
    ("TINH_TRANG_RV", "MA_LOAI_RV"), ("T_TONGCHI", "T_TONGCHI_BV"), ("T_NGOAIDS", "T_BHTT_GDV"),
)
#: 4210 XML1 fields with no 4750 place: kept in the encounter's extra, not written as 4750.
XML1_LEGACY_ONLY = frozenset({"MA_LYDO_VVIEN", "MUC_HUONG"})
#: Fields whose presence marks an XML1 as 4210.
XML1_LEGACY_MARKERS = frozenset({"MA_THE", "T_TONGCHI", "MA_BENH", "TINH_TRANG_RV", "MA_LYDO_VVIEN"})

#: XML7 discharge letter (26 fields). vn-standards §1.7 names MA_CHA, MA_ME and MA_THE_TAM; the
#: annex order and the other names are from public client code, several agreeing [C]. The
#: parents' fields go to the person (``XML7_PARENTS``); tags not in ``fields`` or there repeat
#: XML1 or are kept in ``extra`` (see DischargeLetter).
XML7 = TableSpec(
    "XML7", "CHI_TIEU_DU_LIEU_GIAY_RA_VIEN", "", "CHI_TIEU_DU_LIEU_GIAY_RA_VIEN", DischargeLetter, _f(
        "MA_LK ma_lk; NGAY_CT issued_on; MA_THE_TAM temporary_card; DU_PHONG reserve"))
XML7_ORDER = tuple(
    "MA_LK SO_LUU_TRU MA_YTE MA_KHOA_RV NGAY_VAO NGAY_RA MA_DINH_CHI_THAI NGUYENNHAN_DINHCHI THOIGIAN_DINHCHI "
    "TUOI_THAI CHAN_DOAN_RV PP_DIEUTRI GHI_CHU MA_TTDV MA_BS TEN_BS NGAY_CT MA_CHA MA_ME MA_THE_TAM HO_TEN_CHA "
    "HO_TEN_ME SO_NGAY_NGHI NGOAITRU_TUNGAY NGOAITRU_DENNGAY DU_PHONG".split())
#: XML7's parents as ``Person.related``: (relationship, the code field, the name field). The codes
#: say "mã số định danh y tế (mã số BHXH)" (PL4750): a BHXH number or, since NĐ 102/2025, the
#: 12-digit personal id (vn-standards §3.3).
XML7_PARENTS = (("mother", "MA_ME", "HO_TEN_ME"), ("father", "MA_CHA", "HO_TEN_CHA"))

#: XML13 referral, annex order (39 fields). Tags not in ``fields`` repeat XML1 (see Referral).
XML13 = TableSpec(
    "XML13", "CHI_TIEU_GIAYCHUYENTUYEN", "", "CHI_TIEU_GIAYCHUYENTUYEN", Referral, _f(
        "MA_LK ma_lk; SO_HOSO record_number; SO_CHUYENTUYEN referral_number; GIAY_CHUYEN_TUYEN referral_letter;"
        "MA_NOI_DI from_facility; MA_NOI_DEN to_facility; DAU_HIEU_LS clinical_signs; QT_BENHLY history;"
        "TOMTAT_KQ results_summary; PP_DIEUTRI treatment_given; TEN_DICH_VU services_used; TEN_THUOC drugs_used;"
        "PP_DIEU_TRI treatment_method; MA_LOAI_RV discharge_type; MA_LYDO_CT reason;"
        "HUONG_DIEU_TRI treatment_direction; PHUONGTIEN_VC transport; HOTEN_NGUOI_HT escort_name;"
        "CHUCDANH_NGUOI_HT escort_title; MA_BAC_SI doctor; MA_TTDV head_of_facility; DU_PHONG reserve"))
XML13_ORDER = tuple(
    "MA_LK SO_HOSO SO_CHUYENTUYEN GIAY_CHUYEN_TUYEN MA_CSKCB MA_NOI_DI MA_NOI_DEN HO_TEN NGAY_SINH GIOI_TINH "
    "MA_QUOCTICH MA_DANTOC MA_NGHE_NGHIEP DIA_CHI MA_THE_BHYT GT_THE_DEN NGAY_VAO NGAY_VAO_NOI_TRU NGAY_RA "
    "DAU_HIEU_LS CHAN_DOAN_RV QT_BENHLY TOMTAT_KQ PP_DIEUTRI MA_BENH_CHINH MA_BENH_KT MA_BENH_YHCT "
    "TEN_DICH_VU TEN_THUOC PP_DIEU_TRI MA_LOAI_RV MA_LYDO_CT HUONG_DIEU_TRI PHUONGTIEN_VC HOTEN_NGUOI_HT "
    "CHUCDANH_NGUOI_HT MA_BAC_SI MA_TTDV DU_PHONG".split())

#: XML14 follow-up appointment, annex order (22 fields).
XML14 = TableSpec(
    "XML14", "CHI_TIEU_GIAYHEN_KHAMLAI", "", "CHI_TIEU_GIAYHEN_KHAMLAI", Appointment, _f(
        "MA_LK ma_lk; SO_GIAYHEN_KL number; NGAY_HEN_KL appointment_at; MA_BAC_SI doctor;"
        "MA_TTDV head_of_facility; NGAY_CT issued_on; DU_PHONG reserve"))
XML14_ORDER = tuple(
    "MA_LK SO_GIAYHEN_KL MA_CSKCB HO_TEN NGAY_SINH GIOI_TINH DIA_CHI MA_THE_BHYT GT_THE_DEN NGAY_VAO "
    "NGAY_VAO_NOI_TRU NGAY_RA NGAY_HEN_KL CHAN_DOAN_RV MA_BENH_CHINH MA_BENH_KT MA_BENH_YHCT MA_DOITUONG_KCB "
    "MA_BAC_SI MA_TTDV NGAY_CT DU_PHONG".split())

#: Check-in (TRANG_THAI_KCB), 26 fields; the first-cost fields map to CheckIn, the rest to the
#: person and encounter exactly as in XML1.
CHECK_IN = TableSpec(
    "CHECKIN", "CHI_TIEU_TRANG_THAI_KCB", "DSACH_TRANG_THAI_KCB", "TRANG_THAI_KCB", CheckIn, _f(
        "STT stt; MA_DICH_VU service_code; TEN_DICH_VU service_name; MA_THUOC drug_code; TEN_THUOC drug_name;"
        "MA_VAT_TU supply_code; TEN_VAT_TU supply_name; NGAY_YL ordered_at; DU_PHONG reserve"))
CHECK_IN_ORDER = tuple(
    "MA_LK STT MA_BN HO_TEN SO_CCCD NGAY_SINH GIOI_TINH MA_THE_BHYT MA_DKBD GT_THE_TU GT_THE_DEN "
    "MA_DOITUONG_KCB NGAY_VAO NGAY_VAO_NOI_TRU LY_DO_VNT MA_LY_DO_VNT MA_LOAI_KCB MA_CSKCB MA_DICH_VU "
    "TEN_DICH_VU MA_THUOC TEN_THUOC MA_VAT_TU TEN_VAT_TU NGAY_YL DU_PHONG".split())

#: Tables the reader keeps verbatim as RawTable: not mapped to the model yet.
RAW_TABLES = ("XML6", "XML8", "XML9", "XML10", "XML11", "XML12", "XML15")

#: Decimal places the writer uses, per field (vn-standards §1.4: SO_LUONG and DON_GIA 3,
#: THANH_TIEN_* 2). Other numbers are written exactly as held. Pass another mapping to the
#: writer if BHXH's checker wants more fields fixed.
DEFAULT_DECIMALS = {
    "SO_LUONG": 3, "DON_GIA": 3, "THANH_TIEN_BV": 2, "THANH_TIEN_BH": 2,
}

#: XML1 fields that map one-to-one onto an Encounter attribute.
XML1_ENCOUNTER = _f(
    "MA_LK ma_lk; STT stt; MA_CSKCB facility; MA_LOAI_KCB encounter_class; NGAY_VAO admitted_at;"
    "NGAY_RA discharged_at; MA_DOITUONG_KCB patient_class; NGAY_VAO_NOI_TRU inpatient_admitted_at;"
    "KET_QUA_DTRI outcome; MA_LOAI_RV discharge_type; MA_HSBA record_number; MA_KHOA departments l;"
    "MA_NOI_DI referred_from; MA_NOI_DEN referred_to; LY_DO_VV admission_reason; LY_DO_VNT inpatient_reason;"
    "MA_LY_DO_VNT inpatient_reason_code; MA_TAI_NAN accident; GIAY_CHUYEN_TUYEN referral_letter;"
    "SO_NGAY_DTRI treatment_days; PP_DIEU_TRI treatment_method; GHI_CHU note; MA_KHUVUC region;"
    "CAN_NANG weight; CAN_NANG_CON newborn_weights; NAM_NAM_LIEN_TUC continuous_five_years;"
    "NGAY_TAI_KHAM follow_up_dates l; MA_TTDV head_of_facility; DU_PHONG reserve")
#: XML1 fields that map onto Person attributes (HO_TEN and identifiers are handled apart).
XML1_PERSON = _f(
    "NGAY_SINH birth_date; GIOI_TINH sex; NHOM_MAU blood_group; MA_QUOCTICH nationality;"
    "MA_DANTOC ethnicity; MA_NGHE_NGHIEP occupation; DIEN_THOAI phone")
XML1_ADDRESS = _f("DIA_CHI text; MATINH_CU_TRU province; MAHUYEN_CU_TRU district; MAXA_CU_TRU commune")
XML1_DIAGNOSIS = _f(
    "MA_BENH_CHINH main; MA_BENH_KT secondary l; MA_BENH_YHCT traditional l; CHAN_DOAN_VAO admission_text;"
    "CHAN_DOAN_RV discharge_text; MA_PTTT_QT procedures l")
XML1_CLAIM = _f(
    "T_THUOC drugs n; T_VTYT supplies n; T_TONGCHI_BV total_hospital n; T_TONGCHI_BH total_insurance n;"
    "T_BNTT patient_paid n; T_BNCCT patient_copay n; T_BHTT fund_paid n; T_NGUONKHAC other_sources n;"
    "T_BHTT_GDV fund_paid_outside_capitation n; NAM_QT settlement_year; THANG_QT settlement_month;"
    "NGAY_TTOAN paid_at; NGAY_MIEN_CCT copay_exempt_from")
#: Fields that hold the card list and the person's other identifiers.
XML1_IDENTIFIER_TAGS = frozenset({"HO_TEN", "SO_CCCD", "MA_BN", "MA_THE_BHYT", "MA_DKBD", "GT_THE_TU", "GT_THE_DEN"})

#: Fields written as 12-character yyyymmddHHMM: a date-only value gets ``0000`` for the time.
TIME_FIELDS = frozenset({
    "NGAY_SINH", "NGAY_VAO", "NGAY_VAO_NOI_TRU", "NGAY_RA", "NGAY_TTOAN", "NGAY_YL", "NGAY_TH_YL",
    "NGAY_KQ", "THOI_DIEM_DBLS", "NGAY_HEN_KL"})

CLAIM_DOCUMENT, CHECK_IN_DOCUMENT = "GIAMDINHHS", "CHECKIN"


@dataclass(frozen=True)
class ClaimFile:
    """One XML 130/4750 file: the GIAMDINHHS envelope with one RecordSet per HOSO (MA_LK), or a
    check-in file (CHI_TIEU_TRANG_THAI_KCB) with one RecordSet per TRANG_THAI_KCB."""

    records: tuple
    facility: str = ""  # THONGTINDONVI/MACSKCB
    created_on: str = ""  # THONGTINHOSO/NGAYLAP, yyyymmdd
    standard: str = "4750"  # "4210" when the file used the 4210 table forms
    document: str = CLAIM_DOCUMENT
