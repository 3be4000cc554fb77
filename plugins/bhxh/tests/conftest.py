"""Fixtures of the BHXH plugin's tests: a facility certificate made at test time, the portal
double on 127.0.0.1, and a gateway whose ``bhxh`` destination sends to it."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from twisted.internet.task import Clock

from plugins.bhxh.testing import PortalDouble

FACILITY = "92001"
ACCOUNT = "92001_BV"
PASSWORD = "mật khẩu 1"
P12_PASSWORD = "p12-secret"
#: Thursday 3 December 2026, 06:00 in Vietnam: outside the portal's peak hours.
OFF_PEAK = datetime.datetime(2026, 12, 2, 23, 0, tzinfo=datetime.timezone.utc).timestamp()
SAMPLE = Path(__file__).parents[2] / "dhg_his" / "samples" / "xml4750_ngoai_tru.xml"


@dataclass(frozen=True)
class Certificate:
    pkcs12: Path
    pem: Path

    @property
    def pem_bytes(self) -> bytes:
        return self.pem.read_bytes()


def make_certificate(directory: Path, name: str = "Benh vien 92001") -> Certificate:
    """A self-signed facility certificate and key as a password-protected PKCS#12 file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    p12 = directory / "facility.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"facility", key, certificate, None, serialization.BestAvailableEncryption(P12_PASSWORD.encode())))
    pem = directory / "facility.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Certificate(p12, pem)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("certificate"))


@pytest.fixture
def portal_clock() -> Clock:
    """The double's clock, at :data:`OFF_PEAK`."""
    clock = Clock()
    clock.advance(OFF_PEAK)
    return clock


@pytest_twisted.async_yield_fixture
async def portal(portal_clock, certificate):
    double = PortalDouble(clock=portal_clock, trusted_certificate=certificate.pem_bytes).add_account(ACCOUNT, PASSWORD)
    double.start()
    yield double
    await double.stop()


@pytest.fixture
def hssk_plugins():
    return ["bhxh", "dhg_his"]


@pytest.fixture
def hssk_formats():
    return ()


@pytest.fixture
def bhxh_settings() -> dict:
    """A test's own keys of the bhxh destination (parametrize it by name)."""
    return {}


@pytest.fixture
def hssk_settings(portal, certificate, monkeypatch, bhxh_settings):
    monkeypatch.setenv("HSSK_TEST_BHXH_PASSWORD", PASSWORD)
    monkeypatch.setenv("HSSK_TEST_BHXH_P12_PASSWORD", P12_PASSWORD)
    prefix = "destinations.bhxh."
    return {"plugins.dhg_his.xml_facilities": [FACILITY],
            **{prefix + key: value for key, value in {
                "kind": "bhxh", "format": "xml130", "privacy": "full", "url": portal.url, "username": ACCOUNT,
                "password_env": "HSSK_TEST_BHXH_PASSWORD", "ma_cskcb": FACILITY, "ma_tinh": "92",
                "pkcs12_file": str(certificate.pkcs12), "pkcs12_password_env": "HSSK_TEST_BHXH_P12_PASSWORD",
                "backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.05, "response_timeout_seconds": 5.0,
                **bhxh_settings}.items()}}
