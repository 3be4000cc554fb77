"""CHUKYDONVI as an enveloped XMLDSig signature, checked by Debian's xmlsec1, a verifier that
shares no code with ours."""
from __future__ import annotations

import subprocess

import pytest

from gateway.testing import read_sample, require_program
from plugins.bhxh.checkin import check_in_file
from plugins.bhxh.signing import FacilityCertificate, SigningError, sign_file
from plugins.bhxh.tests.conftest import P12_PASSWORD, SAMPLE


@pytest.fixture
def facility(certificate, monkeypatch) -> FacilityCertificate:
    monkeypatch.setenv("HSSK_TEST_P12_PASSWORD", P12_PASSWORD)
    return FacilityCertificate.from_pkcs12(certificate.pkcs12, "HSSK_TEST_P12_PASSWORD")


def xmlsec1_verify(path, certificate) -> subprocess.CompletedProcess:
    require_program("xmlsec1", "xmlsec1")
    return subprocess.run(["xmlsec1", "--verify", "--trusted-pem", str(certificate.pem), str(path)],
                          capture_output=True, timeout=30)


def test_a_signed_claim_verifies_with_xmlsec1(tmp_path, facility, certificate):
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_file(read_sample(SAMPLE), facility))

    checked = xmlsec1_verify(signed, certificate)

    assert checked.returncode == 0, checked.stderr
    assert b"<CHUKYDONVI><ds:Signature" in signed.read_bytes()


def test_a_check_in_file_is_signed_inside_its_own_chukydonvi(tmp_path, facility, certificate):
    signed = tmp_path / "checkin.xml"
    signed.write_bytes(sign_file(check_in_file(read_sample(SAMPLE)), facility))

    checked = xmlsec1_verify(signed, certificate)

    assert checked.returncode == 0, checked.stderr
    assert signed.read_bytes().count(b"<CHUKYDONVI><ds:Signature xmlns") == 1


def test_a_claim_changed_after_signing_fails_xmlsec1(tmp_path, facility, certificate):
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(sign_file(read_sample(SAMPLE), facility).replace(b"<NGAYLAP>20250510", b"<NGAYLAP>20250511"))

    checked = xmlsec1_verify(tampered, certificate)

    assert checked.returncode != 0
    assert b"FAIL" in checked.stdout + checked.stderr


def test_a_wrong_pkcs12_password_names_the_file_and_the_variable(certificate, monkeypatch):
    monkeypatch.setenv("HSSK_TEST_P12_PASSWORD", "not it")

    with pytest.raises(SigningError, match=r"facility\.p12 \(wrong password in \$HSSK_TEST_P12_PASSWORD"):
        FacilityCertificate.from_pkcs12(certificate.pkcs12, "HSSK_TEST_P12_PASSWORD")


def test_a_file_without_chukydonvi_is_not_signed(facility):
    with pytest.raises(SigningError, match="GIAMDINHHS has no CHUKYDONVI"):
        sign_file(b"<GIAMDINHHS><THONGTINHOSO/></GIAMDINHHS>", facility)
