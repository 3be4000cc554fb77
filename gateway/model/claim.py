"""Claim-side canonical records: the XML 130/4750 detail tables and the XML1 totals.

Kept apart from ``records.py`` so the person/encounter core stays short; ``records.py`` re-exports
every name here, so callers import from ``gateway.model.records`` only.

Conventions shared by every record:

- Each field's comment names the XML 130/4750 field (QĐ 4750 annex) it carries.
- Times are kept as sent (``yyyymmddHHMM``, 12 characters); dates ``yyyymmdd``.
- Money, quantities and rates are :class:`~decimal.Decimal` (``.`` separator in XML), ``None``
  when the field was empty, so ``0`` and "not sent" stay different.
- ``;`` lists (MA_BAC_SI, NGUOI_THUC_HIEN, MA_BENH_KT …) are tuples of strings.
- ``extra`` holds fields the model does not map, as ``(tag, text)`` pairs in document order, so
  a file read and written again keeps them; see ``gateway/formats/xml130_tables.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

#: Unmapped XML fields of one record, ``(TAG, text)`` in document order.
Extra = tuple[tuple[str, str], ...]


def extra_value(extra: Extra, tag: str) -> str | None:
    """The text of an unmapped field, or ``None`` when the record did not carry it."""
    return next((text for name, text in extra if name == tag), None)


@dataclass(frozen=True)
class Diagnosis:
    """The episode's diagnoses as XML1 states them (ICD-10 per QĐ 4469/2020)."""

    main: str = ""  # MA_BENH_CHINH: exactly one ICD-10 code
    secondary: tuple[str, ...] = ()  # MA_BENH_KT: at most 12 ICD-10 codes, `;` list
    traditional: tuple[str, ...] = ()  # MA_BENH_YHCT: traditional-medicine codes, `;` list
    admission_text: str = ""  # CHAN_DOAN_VAO: admission diagnosis, free text
    discharge_text: str = ""  # CHAN_DOAN_RV: discharge diagnosis, free text (4210 TEN_BENH)
    procedures: tuple[str, ...] = ()  # MA_PTTT_QT: ICD-9-CM procedure codes, `;` list


@dataclass(frozen=True)
class ClaimTotals:
    """XML1 money totals. The consistency rules are in ``gateway.rules.validation``."""

    drugs: Decimal | None = None  # T_THUOC
    supplies: Decimal | None = None  # T_VTYT
    total_hospital: Decimal | None = None  # T_TONGCHI_BV: Σ THANH_TIEN_BV of XML2 + XML3 (4210 T_TONGCHI)
    total_insurance: Decimal | None = None  # T_TONGCHI_BH: Σ THANH_TIEN_BH of XML2 + XML3
    patient_paid: Decimal | None = None  # T_BNTT: paid by the patient outside the BHYT scope
    patient_copay: Decimal | None = None  # T_BNCCT: the patient's co-payment
    fund_paid: Decimal | None = None  # T_BHTT: paid by the BHYT fund = T_TONGCHI_BH − T_BNCCT
    other_sources: Decimal | None = None  # T_NGUONKHAC
    fund_paid_outside_capitation: Decimal | None = None  # T_BHTT_GDV (4210 T_NGOAIDS, see LegacyRules)
    settlement_year: str = ""  # NAM_QT, 4 digits
    settlement_month: str = ""  # THANG_QT, 2 digits
    paid_at: str = ""  # NGAY_TTOAN: empty until paid
    copay_exempt_from: str = ""  # NGAY_MIEN_CCT


@dataclass(frozen=True)
class MedicationLine:
    """One XML2 line (CHI_TIET_THUOC): a drug dispensed or administered in the episode."""

    ma_lk: str = ""  # MA_LK: must equal XML1 MA_LK
    stt: str = ""  # STT: 1..n within the table
    code: str = ""  # MA_THUOC: active-ingredient code (BYT common code set)
    preparation_method: str = ""  # MA_PP_CHEBIEN
    dispensing_facility: str = ""  # MA_CSKCB_THUOC
    cost_group: str = ""  # MA_NHOM: cost group (QĐ 5937 annex 3)
    name: str = ""  # TEN_THUOC
    unit: str = ""  # DON_VI_TINH
    strength: str = ""  # HAM_LUONG
    route: str = ""  # DUONG_DUNG
    dosage_form: str = ""  # DANG_BAO_CHE
    dose: str = ""  # LIEU_DUNG
    directions: str = ""  # CACH_DUNG
    registration_number: str = ""  # SO_DANG_KY
    tender: str = ""  # TT_THAU
    scope: str = ""  # PHAM_VI: 1 in the BHYT list, 2 outside, 3 outside but paid (NĐ 70/2015)
    insurance_rate: Decimal | None = None  # TYLE_TT_BH, percent (4210 TYLE_TT)
    quantity: Decimal | None = None  # SO_LUONG, 3 decimals
    unit_price: Decimal | None = None  # DON_GIA, 3 decimals
    amount_hospital: Decimal | None = None  # THANH_TIEN_BV = SO_LUONG × DON_GIA (4210 THANH_TIEN)
    amount_insurance: Decimal | None = None  # THANH_TIEN_BH = THANH_TIEN_BV × TYLE_TT_BH / 100
    other_state_budget: Decimal | None = None  # T_NGUONKHAC_NSNN
    other_foreign_aid: Decimal | None = None  # T_NGUONKHAC_VTNN
    other_domestic_aid: Decimal | None = None  # T_NGUONKHAC_VTTN
    other_remaining: Decimal | None = None  # T_NGUONKHAC_CL
    other_total: Decimal | None = None  # T_NGUONKHAC
    benefit_level: Decimal | None = None  # MUC_HUONG: 80, 95 or 100 (× off-route rate)
    patient_paid: Decimal | None = None  # T_BNTT
    patient_copay: Decimal | None = None  # T_BNCCT
    fund_paid: Decimal | None = None  # T_BHTT
    department: str = ""  # MA_KHOA
    doctors: tuple[str, ...] = ()  # MA_BAC_SI, `;` list
    service_code: str = ""  # MA_DICH_VU
    ordered_at: str = ""  # NGAY_YL
    performed_at: str = ""  # NGAY_TH_YL (new in 4750)
    payment_method: str = ""  # MA_PTTT: 1 fee-for-service, 2 capitation, 3 DRG
    funding_source: str = ""  # NGUON_CTRA
    war_wound: str = ""  # VET_THUONG_TP
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class ServiceLine:
    """One XML3 line (CHI_TIET_DVKT): a technical service, bed day or medical supply."""

    ma_lk: str = ""  # MA_LK
    stt: str = ""  # STT
    service_code: str = ""  # MA_DICH_VU
    procedure_codes: tuple[str, ...] = ()  # MA_PTTT_QT, ICD-9-CM, `;` list
    supply_code: str = ""  # MA_VAT_TU
    cost_group: str = ""  # MA_NHOM
    supply_package: str = ""  # GOI_VTYT
    supply_name: str = ""  # TEN_VAT_TU
    service_name: str = ""  # TEN_DICH_VU
    fuel_code: str = ""  # MA_XANG_DAU
    unit: str = ""  # DON_VI_TINH
    scope: str = ""  # PHAM_VI
    quantity: Decimal | None = None  # SO_LUONG
    unit_price_hospital: Decimal | None = None  # DON_GIA_BV (4210 DON_GIA)
    unit_price_insurance: Decimal | None = None  # DON_GIA_BH
    tender: str = ""  # TT_THAU
    service_rate: Decimal | None = None  # TYLE_TT_DV, percent (4210 TYLE_TT)
    insurance_rate: Decimal | None = None  # TYLE_TT_BH, percent
    amount_hospital: Decimal | None = None  # THANH_TIEN_BV (4210 THANH_TIEN)
    amount_insurance: Decimal | None = None  # THANH_TIEN_BH
    ceiling_amount: Decimal | None = None  # T_TRANTT
    benefit_level: Decimal | None = None  # MUC_HUONG
    other_state_budget: Decimal | None = None  # T_NGUONKHAC_NSNN
    other_foreign_aid: Decimal | None = None  # T_NGUONKHAC_VTNN
    other_domestic_aid: Decimal | None = None  # T_NGUONKHAC_VTTN
    other_remaining: Decimal | None = None  # T_NGUONKHAC_CL
    other_total: Decimal | None = None  # T_NGUONKHAC
    patient_paid: Decimal | None = None  # T_BNTT
    patient_copay: Decimal | None = None  # T_BNCCT
    fund_paid: Decimal | None = None  # T_BHTT
    department: str = ""  # MA_KHOA
    bed_code: str = ""  # MA_GIUONG: H/T/C/K + 3 digits
    doctors: tuple[str, ...] = ()  # MA_BAC_SI, `;` list
    performers: tuple[str, ...] = ()  # NGUOI_THUC_HIEN, `;` list
    diagnosis_codes: str = ""  # MA_BENH
    traditional_codes: str = ""  # MA_BENH_YHCT
    ordered_at: str = ""  # NGAY_YL
    performed_at: str = ""  # NGAY_TH_YL
    result_at: str = ""  # NGAY_KQ
    payment_method: str = ""  # MA_PTTT
    war_wound: str = ""  # VET_THUONG_TP
    anaesthesia: str = ""  # PP_VO_CAM: 1 general, 2 regional, 3 acupuncture, 4 other
    body_site: str = ""  # VI_TRI_TH_DVKT
    machine: str = ""  # MA_MAY (was in XML4 under 4210)
    product_code: str = ""  # MA_HIEU_SP
    reuse: str = ""  # TAI_SU_DUNG
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class ClinicalNote:
    """One XML5 entry (CHI_TIET_DIEN_BIEN_BENH): clinical progress at a point in time."""

    ma_lk: str = ""  # MA_LK
    stt: str = ""  # STT
    progress: str = ""  # DIEN_BIEN_LS (4210 DIEN_BIEN), e.g. `CSST<M75_T37_HA120/70_NT18_HL2>`
    stage: str = ""  # GIAI_DOAN_BENH
    consultation: str = ""  # HOI_CHAN
    surgery: str = ""  # PHAU_THUAT
    recorded_at: str = ""  # THOI_DIEM_DBLS (4210 NGAY_YL)
    author: str = ""  # NGUOI_THUC_HIEN
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class Referral:
    """XML13 (CHI_TIEU_GIAYCHUYENTUYEN), the referral letter.

    The fields XML13 repeats from XML1 (HO_TEN, NGAY_SINH, MA_THE_BHYT, NGAY_VAO, MA_BENH_CHINH…)
    are written from the person, encounter and diagnosis; a copy that differs from XML1 is kept in
    ``extra`` under its tag and wins when the table is written again.
    """

    ma_lk: str = ""  # MA_LK
    record_number: str = ""  # SO_HOSO
    referral_number: str = ""  # SO_CHUYENTUYEN
    referral_letter: str = ""  # GIAY_CHUYEN_TUYEN
    from_facility: str = ""  # MA_NOI_DI
    to_facility: str = ""  # MA_NOI_DEN
    clinical_signs: str = ""  # DAU_HIEU_LS
    history: str = ""  # QT_BENHLY
    results_summary: str = ""  # TOMTAT_KQ
    treatment_given: str = ""  # PP_DIEUTRI
    services_used: str = ""  # TEN_DICH_VU
    drugs_used: str = ""  # TEN_THUOC
    treatment_method: str = ""  # PP_DIEU_TRI
    discharge_type: str = ""  # MA_LOAI_RV: 2 or 5 for a referral
    reason: str = ""  # MA_LYDO_CT: 1 meets rules, 2 beyond capability, 3 patient's request
    treatment_direction: str = ""  # HUONG_DIEU_TRI
    transport: str = ""  # PHUONGTIEN_VC
    escort_name: str = ""  # HOTEN_NGUOI_HT
    escort_title: str = ""  # CHUCDANH_NGUOI_HT
    doctor: str = ""  # MA_BAC_SI
    head_of_facility: str = ""  # MA_TTDV
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class DischargeLetter:
    """XML7 (CHI_TIEU_DU_LIEU_GIAY_RA_VIEN), the discharge letter.

    Its parents' fields describe the patient, so they live on the person: MA_ME / HO_TEN_ME and
    MA_CHA / HO_TEN_CHA are ``Person.related`` (mother, father), each code an identifier whose
    system its shape decides; MA_THE_TAM is also a BHYT identifier of the person, the child's own
    card, which lets the person index link a provisional newborn. Repeated XML1 fields (NGAY_VAO,
    NGAY_RA, CHAN_DOAN_RV, MA_TTDV) and the letter's other fields are handled as in
    :class:`Referral`.
    """

    ma_lk: str = ""  # MA_LK
    temporary_card: str = ""  # MA_THE_TAM: the child's temporary BHYT card, 15 characters
    issued_on: str = ""  # NGAY_CT, yyyymmdd
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class Appointment:
    """XML14 (CHI_TIEU_GIAYHEN_KHAMLAI), the follow-up appointment letter.

    Repeated XML1 fields are handled as in :class:`Referral`.
    """

    ma_lk: str = ""  # MA_LK
    number: str = ""  # SO_GIAYHEN_KL
    appointment_at: str = ""  # NGAY_HEN_KL, yyyymmddHHMM
    doctor: str = ""  # MA_BAC_SI
    head_of_facility: str = ""  # MA_TTDV
    issued_on: str = ""  # NGAY_CT, yyyymmdd
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class CheckIn:
    """The check-in record (TRANG_THAI_KCB): the first cost at the treating department.

    The person and episode fields of check-in live in the record set's person and encounter.
    Check-in is not a basis for payment (QĐ 4750).
    """

    stt: str = ""  # STT
    service_code: str = ""  # MA_DICH_VU
    service_name: str = ""  # TEN_DICH_VU
    drug_code: str = ""  # MA_THUOC
    drug_name: str = ""  # TEN_THUOC
    supply_code: str = ""  # MA_VAT_TU
    supply_name: str = ""  # TEN_VAT_TU
    ordered_at: str = ""  # NGAY_YL
    reserve: str = ""  # DU_PHONG
    extra: Extra = ()


@dataclass(frozen=True)
class RawTable:
    """A FILEHOSO table the model does not map (XML6–12, XML15), kept verbatim.

    ``kind`` is LOAIHOSO (``XML6``); ``content`` the decoded UTF-8 XML. XML6 is HIV/AIDS care
    data: the privacy policy must drop it before any record leaves the gateway.
    """

    kind: str
    content: str
