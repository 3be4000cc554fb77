"""TLS that the gateway terminates itself, so that a listener can ask its clients for a certificate.

Twisted's ``ssl:`` server endpoint string takes a key and a certificate but cannot require a
client certificate. So a listener with ``tls_certificate`` set listens on its plain ``listen``
endpoint (``tcp:2575:interface=10.79.0.5``) and wraps it in TLS built here; with
``tls_client_ca`` the handshake then fails for a client without a certificate that CA bundle
vouches for, and the certificate names the client (``[clients.NAME].certificates``, see
:mod:`gateway.core.clients`).
"""
from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL.crypto import X509
from twisted.internet import ssl
from twisted.internet.endpoints import serverFromString, wrapServerTLS
from twisted.internet.interfaces import ISSLTransport, IStreamServerEndpoint


def listening_endpoint(reactor, listen: str, certificate: str = "", private_key: str = "",
                       client_ca: str = "") -> IStreamServerEndpoint:
    """``listen`` as Twisted parses it, wrapped in the gateway's own TLS when ``certificate`` is set."""
    endpoint = serverFromString(reactor, listen)
    if not certificate:
        return endpoint
    return wrapServerTLS(server_options(certificate, private_key, client_ca), endpoint)


def server_options(certificate: str, private_key: str, client_ca: str = "") -> ssl.CertificateOptions:
    """The server side of the handshake: the certificate (a PEM file whose first certificate is the
    gateway's and the rest its chain), its key, and, with ``client_ca`` (a PEM bundle), the CAs a
    client certificate must come from. Raises ValueError (or OSError) naming what is wrong."""
    chain = load_certificates(certificate)
    key = load_pem_private_key(Path(private_key).read_bytes(), password=None)
    trust = None
    if client_ca:
        trust = ssl.trustRootFromCertificates([ssl.Certificate(X509.from_cryptography(c))
                                               for c in load_certificates(client_ca)])
    return ssl.CertificateOptions(privateKey=key, certificate=chain[0], extraCertChain=chain[1:], trustRoot=trust)


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order; ValueError when it holds none."""
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def is_tls(transport) -> bool:
    return ISSLTransport.providedBy(transport)


def peer_certificate(transport) -> x509.Certificate | None:
    """The certificate the client presented in the TLS handshake, None without TLS or without one."""
    if not is_tls(transport):
        return None
    found = transport.getPeerCertificate()
    return None if found is None else found.to_cryptography()
