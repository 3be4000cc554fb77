"""The facility's signature on a claim file: CHUKYDONVI as an enveloped XMLDSig signature.

BHXH's letters (CV 1245, CV 3190) say the facility signs the file with its digital certificate
and that clients leave an empty ``<CHUKYDONVI></CHUKYDONVI>`` to sign into (vn-standards §1.2);
they do not name the XMLDSig profile (open question 4). We sign the way the public clients do
and the way ``xmlsec1 --verify`` checks: the whole document (``URI=""``), the
enveloped-signature transform then inclusive C14N 1.0, RSA-SHA256 and SHA-256, the certificate
in ``KeyInfo/X509Data``. The ``ds:Signature`` goes inside the root's CHUKYDONVI (GIAMDINHHS's,
or the check-in file's), so the element the annex names holds it.

The key comes from the facility's PKCS#12 file (what a CA hands a facility, the USB token
export) with its password read from the environment, never from the config file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree
from signxml import SignatureConstructionMethod, XMLSigner, XMLVerifier
from signxml.exceptions import InvalidInput, InvalidSignature

DS = "http://www.w3.org/2000/09/xmldsig#"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
SLOT = "CHUKYDONVI"
#: The parser for our own rendered files (signing) and the portal double's received ones
#: (checking): no entities, no DTD, no network, as every parser in the gateway.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


class SigningError(Exception):
    """The file cannot be signed: no CHUKYDONVI to sign into, or no usable key. A row that hits
    it is not the portal's to judge, so the message says what to fix."""


@dataclass(frozen=True)
class FacilityCertificate:
    """A facility's signing key and certificate (chain after it), loaded once at start-up."""

    key: object
    certificates: tuple

    @classmethod
    def from_pkcs12(cls, path: str | Path, password_env: str) -> FacilityCertificate:
        """Load ``path`` with the password in environment variable ``password_env`` (empty: a
        file without a password). Raises :class:`SigningError` saying which file and why."""
        password = os.environ.get(password_env, "") if password_env else ""
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise SigningError(f"cannot read the PKCS#12 file {path}: {e.strerror or e}") from None
        try:
            key, certificate, chain = pkcs12.load_key_and_certificates(data, password.encode() or None)
        except ValueError as e:
            raise SigningError(f"cannot open the PKCS#12 file {path} (wrong password in ${password_env}, or not "
                               f"PKCS#12): {e}") from None
        if key is None or certificate is None:
            raise SigningError(f"the PKCS#12 file {path} holds no private key with its certificate")
        return cls(key, (certificate, *chain))


def sign_file(document: bytes, certificate: FacilityCertificate) -> bytes:
    """``document`` (UTF-8 XML whose root has a CHUKYDONVI child) with the facility's enveloped
    signature inside that CHUKYDONVI."""
    try:
        root = etree.fromstring(document, _PARSER)
    except etree.XMLSyntaxError as e:
        raise SigningError(f"the file to sign is not well-formed XML: {e}") from None
    slot = root.find(SLOT)
    if slot is None:
        raise SigningError(f"{root.tag} has no {SLOT} child to hold the facility's signature")
    for child in list(slot):
        slot.remove(child)
    slot.text = None
    etree.SubElement(slot, f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped, signature_algorithm="rsa-sha256",
                       digest_algorithm="sha256", c14n_algorithm=C14N)
    try:
        signed = signer.sign(root, key=certificate.key, cert=list(certificate.certificates))
    except InvalidInput as e:
        raise SigningError(f"signing failed: {e}") from None
    return etree.tostring(signed, xml_declaration=True, encoding="utf-8")


def signature_problem(document: bytes, trusted_pem: bytes) -> str | None:
    """Why ``document``'s CHUKYDONVI signature does not hold for the certificate ``trusted_pem``
    (PEM), or None when it does: what the BHXH portal checks, for the portal double."""
    try:
        root = etree.fromstring(document, _PARSER)
    except etree.XMLSyntaxError as e:
        return f"not well-formed XML: {e}"
    slot = root.find(SLOT)
    if slot is None or slot.find(f"{{{DS}}}Signature") is None:
        return f"{SLOT} holds no XMLDSig signature"
    try:
        XMLVerifier().verify(root, x509_cert=trusted_pem.decode("ascii"))
    except (InvalidSignature, InvalidInput) as e:
        return f"the signature does not verify: {e}"
    return None
