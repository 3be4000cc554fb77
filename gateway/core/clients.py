"""Who is sending: the ``[clients.NAME]`` of the config, and how a transport's evidence names one.

A client is a HIS, LIS or immunization system that sends to the gateway, with the facility codes
it may send for. It is known by a bearer token over HTTP (the config holds only the token's
SHA-256, so a leaked config file leaks no credential), by the TLS client certificate it presents
to a listener with ``tls_client_ca`` (its SHA-256 fingerprint or its subject), or by the network it
connects from, which is how a provincial WAN already tells hospitals apart and how BHXH itself
admits facilities (registered public IPs, vn-standards §2.1). MLLP has no credentials of its own,
so an MLLP client is known by its certificate or its address.

The transports ask :meth:`ClientRegistry.authenticate`; the pipeline then refuses a message
whose facility (MSH-4, THONGTINDONVI/MACSKCB) is not one of the client's, because a hospital's
credentials must not let it write another hospital's records.

    >>> from gateway.config import ClientConfig
    >>> registry = ClientRegistry([ClientConfig("bv_q1", facilities=("79001",), addresses=("10.1.0.0/24",))])
    >>> registry.authenticate("10.1.0.7", None).name
    'bv_q1'
    >>> registry.authenticate("10.2.0.7", None) is None
    True
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.config import AuthConfig, ClientConfig, client_certificate_key
from gateway.model.envelope import Envelope
from gateway.model.outcome import Issue

ANONYMOUS_NOT_ALLOWED = "unauthenticated"
BAD_CREDENTIALS = "bad_credentials"


@dataclass(frozen=True)
class Client:
    """An authenticated sender: its config name and the facility codes it may send for."""

    name: str
    facilities: frozenset[str]

    @property
    def facility(self) -> str | None:
        """The facility code when the client has only one, for plugins that claim by it."""
        return next(iter(self.facilities)) if len(self.facilities) == 1 else None


@dataclass(frozen=True)
class Refusal:
    """Why a request is not let in: ``reason`` is the metric label, ``text`` the answer, and
    ``retry_after`` the seconds a locked-out peer must wait (None: not locked out)."""

    reason: str
    text: str
    retry_after: int | None = None


def token_digest(token: str) -> str:
    """What ``clients.NAME.token_sha256`` holds for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's IP, an IPv4-mapped IPv6 address read as the IPv4 it carries; None when
    ``host`` is not an IP (a UNIX socket)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ClientRegistry:
    """The configured clients, looked up by token digest or by network.

    ``required`` (``auth.required``) decides what happens to a request that names no client:
    let in anonymously (the default, so ``make run`` works on a fresh machine), or refused.
    Credentials that are presented but wrong are refused either way, because a sender who
    believes it is authenticated must hear that it is not.
    """

    def __init__(self, clients: Iterable[ClientConfig], required: bool = False) -> None:
        self.required = required
        self._by_digest: dict[str, Client] = {}
        self._networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Client]] = []
        self._by_certificate: dict[str, Client] = {}
        self._by_name: dict[str, Client] = {}
        for config in clients:
            client = Client(config.name, frozenset(config.facilities))
            self._by_name[config.name] = client
            for digest in config.token_sha256:
                self._by_digest[digest.lower()] = client
            for entry in config.certificates:
                self._by_certificate[client_certificate_key(entry)] = client
            for network in config.addresses:
                self._networks.append((ipaddress.ip_network(network, strict=False), client))

    @classmethod
    def from_config(cls, clients: Iterable[ClientConfig], auth: AuthConfig) -> ClientRegistry:
        return cls(clients, auth.required)

    def by_address(self, host: str) -> Client | None:
        ip = ip_of(host)
        if ip is None:
            return None
        return next((client for network, client in self._networks
                     if network.version == ip.version and ip in network), None)

    def named(self, name: str) -> Client:
        """The client configured as ``name`` today; one no longer configured may send for no
        facility (a replay of what it sent is refused as its messages now would be). A client
        known by neither token nor address (one a plugin authenticates, as the BHXH portal's
        accounts) is named too."""
        return self._by_name.get(name) or Client(name, frozenset())

    def by_token(self, token: str) -> Client | None:
        return self._by_digest.get(token_digest(token))

    def by_certificate(self, certificate: x509.Certificate) -> Client | None:
        """The client whose ``certificates`` list the certificate's fingerprint, else its subject."""
        fingerprint = f"sha256:{certificate.fingerprint(hashes.SHA256()).hex()}"
        return (self._by_certificate.get(fingerprint)
                or self._by_certificate.get(f"subject:{certificate.subject.rfc4514_string()}"))

    def authenticate(self, host: str, authorization: str | None,
                     certificate: x509.Certificate | None = None) -> Client | Refusal | None:
        """The client an HTTP ``Authorization`` header (Bearer token, or Basic with the client
        name as user and the token as password), else the TLS client certificate, else the peer's
        address names; None for an anonymous sender the config lets in. A certificate is a
        credential like a token: one that names no client is refused."""
        if authorization:
            client = self._from_header(authorization)
            if client is None:
                return Refusal(BAD_CREDENTIALS, "the Authorization header names no client: send 'Bearer <token>' "
                                                "or Basic with the client name and its token")
            return client
        if certificate is not None:
            client = self.by_certificate(certificate)
            if client is None:
                return Refusal(BAD_CREDENTIALS, f"the TLS client certificate ({certificate.subject.rfc4514_string()}, "
                                                f"sha256 {certificate.fingerprint(hashes.SHA256()).hex()}) names no "
                                                f"client (clients.NAME.certificates)")
            return client
        client = self.by_address(host)
        if client is None and self.required:
            return Refusal(ANONYMOUS_NOT_ALLOWED, f"{host} is not a known client's address and no credentials were "
                                                  f"sent (auth.required; see clients.NAME.addresses and token_sha256)")
        return client

    def _from_header(self, authorization: str) -> Client | None:
        scheme, _, value = authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer":
            return self.by_token(value)
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except ValueError:  # binascii.Error, a non-ASCII value and UnicodeDecodeError all are
                return None
            client = self.by_token(password)
            return client if client is not None and client.name == user else None
        return None


def envelope_for(raw: bytes, transport: str, peer: str, received_at: float, listener: str, client: Client | None,
                 forced_charset: str = "", content_charset: str = "") -> Envelope:
    """The envelope of what ``client`` (None: an anonymous sender) sent, as every transport builds it."""
    if client is None:
        return Envelope(raw, transport, peer, received_at, listener, None, forced_charset,
                        content_charset=content_charset)
    return Envelope(raw, transport, peer, received_at, listener, client.facility, forced_charset, client=client.name,
                    facilities=client.facilities, content_charset=content_charset)


def facility_refusal(envelope: Envelope, named: Sequence[tuple[str, str, str]]) -> Issue | None:
    """The AR issue when an authenticated client sends for a facility that is not its own (ERR-3
    204, unknown key). ``named`` is every ``(field, code, location)`` where the message names the
    facility it is for (MSH-4; a file's MACSKCB, its episodes' MA_CSKCB and the form's maCSKCB):
    one foreign code is enough, because a header is as easy to write as a form field. The text
    names them all, so the sender sees which one gave it away; ERR-2 is the first foreign one."""
    if not envelope.client:
        return None
    foreign = [(code, location) for _, code, location in named if code not in envelope.facilities]
    if not foreign:
        return None
    fields = ", ".join(f"{field} {code!r}" for field, code, _ in named)
    codes = ", ".join(dict.fromkeys(repr(code) for code, _ in foreign))
    return Issue(204, f"{fields}: client {envelope.client!r} may send for facility "
                      f"{', '.join(sorted(envelope.facilities))} only, not {codes} "
                      f"(clients.{envelope.client}.facilities)", foreign[0][1])
