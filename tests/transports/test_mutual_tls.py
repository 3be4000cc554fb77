"""Inbound mutual TLS (issue 15, item 14): a listener with ``tls_client_ca`` takes only clients with
a certificate from that CA bundle, and ``[clients.NAME].certificates`` names the client by its
certificate's SHA-256 fingerprint or subject, so an MLLP sender is known without a network rule.

Everything runs over real TLS on 127.0.0.1 with a CA and certificates made in the test.
"""
from __future__ import annotations

import socket
import ssl as stdlib_ssl
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import hashes
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.threads import deferToThread

from gateway.app import validate_runtime
from gateway.config import ConfigError, load_config
from tests.support import (MLLPClient, TestCA, TestPlugin, err_segments, hl7, journal_rows, metric_value, msa,
                           msa_codes, replace_msh_field, send_and_receive, start_gateway)

REFUSED = "hssk_connections_refused_total"


class Pki:
    """The gateway's CA with a server certificate and three client certificates, and a CA nobody
    configured with a certificate of its own."""

    def __init__(self, directory: Path) -> None:
        self.ca = TestCA(directory)
        self.server = self.ca.issue("localhost", server=True)
        self.by_fingerprint = self.ca.issue("his.bv-q1.example.vn")
        self.by_subject = self.ca.issue("lis.bv-q1.example.vn")
        self.unlisted = self.ca.issue("his.stranger.example.vn")
        self.foreign = TestCA(directory, "Another CA").issue("his.bv-q1.example.vn")

    def listener(self, section: str) -> dict:
        cert, key, _ = self.server
        return {f"{section}.tls_certificate": cert, f"{section}.tls_private_key": key,
                f"{section}.tls_client_ca": self.ca.pem}

    def clients(self) -> dict:
        fingerprint = self.by_fingerprint[2].fingerprint(hashes.SHA256()).hex(":").upper()
        return {"clients": {
            "bv_q1": {"facilities": ["79001"], "certificates": [f"sha256:{fingerprint}"]},
            "lis_q1": {"facilities": ["79001"], "certificates": ["subject:CN=lis.bv-q1.example.vn"]},
        }}


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


@pytest_twisted.async_yield_fixture
async def tls_gateway(tmp_path, pki):
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()], **pki.listener("mllp"),
                             **pki.listener("http"), **pki.clients())
    yield gw
    await gw.stop()


async def connect_tls(gateway, pki: Pki, certificate: tuple | None) -> MLLPClient:
    """An MLLP connection over TLS that trusts the gateway's CA and presents ``certificate``."""
    client_certificate = None
    if certificate is not None:
        cert, key, _ = certificate
        client_certificate = ssl.PrivateCertificate.loadPEM(Path(cert).read_bytes() + Path(key).read_bytes())
    options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(Path(pki.ca.pem).read_bytes()),
                                      clientCertificate=client_certificate)
    host, port = gateway.address("mllp")
    return await connectProtocol(wrapClientTLS(options, TCP4ClientEndpoint(reactor, host, port)), MLLPClient())


@pytest.mark.parametrize("who,client", [("by_fingerprint", "bv_q1"), ("by_subject", "lis_q1")])
@pytest_twisted.ensureDeferred
async def test_a_client_certificate_names_its_client(tls_gateway, pki, who, client):
    connection = await connect_tls(tls_gateway, pki, getattr(pki, who))

    ack = await send_and_receive(connection, hl7(control_id="MTLS1"))

    assert msa(ack)[1:3] == ["AA", "MTLS1"]
    [row] = journal_rows(tls_gateway)
    assert row["client"] == client
    connection.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_the_facility_check_applies_to_a_client_known_by_its_certificate(tls_gateway, pki):
    connection = await connect_tls(tls_gateway, pki, pki.by_fingerprint)

    ack = await send_and_receive(connection, hl7(control_id="OTHERFAC").replace(b"|79001|", b"|79025|", 1))

    assert msa(ack)[1:3] == ["AR", "OTHERFAC"]
    [err] = err_segments(ack)
    assert (err[2], err[3].split("^")[0]) == ("MSH^1^4", "204")
    assert "bv_q1" in err[8]
    connection.transport.loseConnection()


@pytest.mark.parametrize("who", [None, "foreign"], ids=["no certificate", "another CA's certificate"])
@pytest_twisted.ensureDeferred
async def test_a_client_without_a_certificate_from_the_ca_is_refused_in_the_handshake(tls_gateway, pki, who):
    connection = await connect_tls(tls_gateway, pki, None if who is None else getattr(pki, who))

    connection.send(hl7(control_id="NOCERT1"))
    await connection.closed

    assert connection.frames == []
    assert journal_rows(tls_gateway) == []
    assert metric_value(tls_gateway, REFUSED, transport="mllp", reason="tls_handshake") == 1


@pytest_twisted.ensureDeferred
async def test_a_certificate_from_the_ca_that_names_no_client_is_refused_with_ar(tls_gateway, pki):
    connection = await connect_tls(tls_gateway, pki, pki.unlisted)

    connection.send(hl7(control_id="UNLISTED1"))
    await connection.closed

    assert msa_codes(connection.frames) == [("AR", "UNLISTED1")]
    assert "CN=his.stranger.example.vn" in err_segments(connection.frames[0])[0][8]
    assert "names no client" in err_segments(connection.frames[0])[0][8]
    assert journal_rows(tls_gateway) == []
    assert metric_value(tls_gateway, REFUSED, transport="mllp", reason="bad_credentials") == 1


def post_over_tls(port: int, pki: Pki, certificate: tuple | None, body: bytes) -> bytes:
    """Blocking, on a thread: one HTTP request over TLS with Python's own ssl module, the answer."""
    context = stdlib_ssl.create_default_context(cafile=pki.ca.pem)
    if certificate is not None:
        context.load_cert_chain(certificate[0], certificate[1])
    request = (b"POST /hl7 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/hl7-v2\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer


@pytest_twisted.ensureDeferred
async def test_http_intake_knows_a_client_by_its_certificate_and_refuses_one_without(tls_gateway, pki):
    port = tls_gateway.address("http")[1]

    known = await deferToThread(post_over_tls, port, pki, pki.by_subject, hl7(control_id="HTTPMTLS"))
    with pytest.raises((stdlib_ssl.SSLError, ConnectionError)):
        await deferToThread(post_over_tls, port, pki, None, hl7(control_id="HTTPNOCERT"))

    assert known.startswith(b"HTTP/1.1 200 ") and b"MSA|AA|HTTPMTLS" in known
    [row] = journal_rows(tls_gateway)
    assert (row["control_id"], row["client"]) == ("HTTPMTLS", "lis_q1")


@pytest_twisted.ensureDeferred
async def test_an_ssl_endpoint_listener_still_serves_clients_known_by_address(tmp_path, pki):
    cert, key, _ = pki.server
    gw = await start_gateway(tmp_path / "data", plugins=[TestPlugin()],
                             **{"mllp.listen": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
                                "clients": {"local": {"facilities": ["79001"], "addresses": ["127.0.0.1/32"]}}})
    try:
        connection = await connect_tls(gw, pki, None)

        ack = await send_and_receive(connection, replace_msh_field(hl7(control_id="SSLEP1"), 10, "SSLEP1"))

        assert msa(ack)[1:3] == ["AA", "SSLEP1"]
        assert journal_rows(gw)[0]["client"] == "local"
        connection.transport.loseConnection()
    finally:
        await gw.stop()


@pytest.mark.parametrize("overrides,key", [
    ({"clients": {"a": {"facilities": ["79001"], "certificates": ["sha256:abc"]}}}, "clients.a.certificates"),
    ({"clients": {"a": {"facilities": ["79001"], "certificates": ["CN=his"]}}}, "clients.a.certificates"),
    ({"clients": {"a": {"facilities": ["79001"], "certificates": ["subject:CN=his"]},
                  "b": {"facilities": ["79002"], "certificates": ["subject:CN=his"]}}}, "clients.b.certificates"),
    ({"mllp.tls_client_ca": "ca.pem"}, "mllp.tls_client_ca"),
    ({"http.tls_certificate": "cert.pem"}, "http.tls_private_key"),
    ({"mllp.listen": "ssl:2575:privateKey=k.pem", "mllp.tls_certificate": "c.pem", "mllp.tls_private_key": "k.pem"},
     "mllp.listen"),
], ids=["short fingerprint", "no kind", "one subject, two clients", "client ca without certificate",
        "certificate without key", "ssl endpoint and tls_certificate"])
def test_tls_settings_that_cannot_work_are_config_errors_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        load_config(environ={}, overrides=overrides)

    assert error.value.key == key


def test_tls_files_that_do_not_load_are_a_config_error_before_anything_listens(tmp_path, pki):
    cert, key, _ = pki.server
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path / "data"), "mllp.tls_certificate": key,
                                                "mllp.tls_private_key": key})

    with pytest.raises(ConfigError) as error:
        validate_runtime(config, reactor)

    assert error.value.key == "mllp.tls_certificate"
