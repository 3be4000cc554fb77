"""The envelope: raw bytes plus what the transport knows about where they came from."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Envelope:
    """One inbound message as received, before anyone has looked inside.

    ``facility`` is the facility code the transport authenticated (HTTP credentials, TLS client
    certificate); None when the transport cannot vouch for the sender.
    """

    raw: bytes
    transport: str
    peer: str
    received_at: float
    listener: str = ""
    facility: str | None = None
    forced_charset: str = ""


def peer_of(address) -> str:
    """``host:port`` of a transport's peer address, ``?`` for what the address type lacks (a
    UNIX socket has no port), as envelopes and logs name the sender's end."""
    return f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
