"""How the registry reads a transport's evidence: addresses (IPv4, IPv6, IPv4-mapped), Bearer and
Basic headers, and what ``auth.required`` does to an anonymous sender."""
import base64

import pytest

from gateway.config import ClientConfig
from gateway.core.clients import BAD_CREDENTIALS, ANONYMOUS_NOT_ALLOWED, ClientRegistry, Refusal, token_digest

CLIENTS = (
    ClientConfig("bv_q1", facilities=("79001",), token_sha256=(token_digest("t-q1"),), addresses=("10.79.1.0/24",)),
    ClientConfig("bv_q3", facilities=("79003", "79025"), addresses=("2001:db8:79::/48",)),
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@pytest.mark.parametrize("host, expected", [
    ("10.79.1.7", "bv_q1"),
    ("::ffff:10.79.1.7", "bv_q1"),
    ("2001:db8:79::5", "bv_q3"),
    ("2001:db8:79::5%eth0", "bv_q3"),
    ("10.79.2.7", None),
    ("/run/hssk.sock", None),
])
def test_address_names_the_client_whose_network_holds_it(host, expected):
    client = ClientRegistry(CLIENTS).authenticate(host, None)

    assert (client.name if client else None) == expected


@pytest.mark.parametrize("header, expected", [
    ("Bearer t-q1", "bv_q1"),
    ("bearer   t-q1 ", "bv_q1"),
    (basic("bv_q1", "t-q1"), "bv_q1"),
    (basic("bv_q3", "t-q1"), BAD_CREDENTIALS),
    ("Bearer t-q2", BAD_CREDENTIALS),
    ("Basic not*base64", BAD_CREDENTIALS),
    ("Digest username=bv_q1", BAD_CREDENTIALS),
])
def test_credentials_name_the_client_or_are_refused_even_from_a_known_address(header, expected):
    found = ClientRegistry(CLIENTS).authenticate("10.79.1.7", header)

    assert (found.reason if isinstance(found, Refusal) else found.name) == expected


def test_anonymous_sender_is_let_in_unless_auth_is_required():
    assert ClientRegistry(CLIENTS).authenticate("192.0.2.1", None) is None
    refusal = ClientRegistry(CLIENTS, required=True).authenticate("192.0.2.1", None)
    assert refusal.reason == ANONYMOUS_NOT_ALLOWED and "192.0.2.1 is not a known client's address" in refusal.text


def test_a_client_with_one_facility_offers_it_for_plugins_that_claim_by_it():
    registry = ClientRegistry(CLIENTS)

    assert registry.by_token("t-q1").facility == "79001"
    assert registry.by_address("2001:db8:79::1").facility is None
