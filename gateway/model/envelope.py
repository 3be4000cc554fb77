"""The envelope: raw bytes plus what the transport knows about where they came from."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Envelope:
    """One inbound message as received, before anyone has looked inside.

    ``client`` names the configured client the transport authenticated (``[clients.NAME]``, by
    token or address; see :mod:`gateway.core.clients`) and ``facilities`` holds the facility
    codes it may send for; both are empty for an anonymous sender. ``facility`` is the one
    facility code when the client has exactly one, else None.

    ``replay_of`` is set when the bytes come from the journal rather than from a sender (see
    :mod:`gateway.core.replay`): the journal id of the message's first attempt. Such a decision
    is journaled as a new attempt of that message and answered to nobody.
    ``forced_charset`` is the listener's (``mllp.charset``, the operator's word: it overrides
    MSH-18); ``content_charset`` is what the sender's transport says the bytes are (an HTTP
    Content-Type charset), second to MSH-18 (see :meth:`Hl7Message.from_bytes`).
    """

    raw: bytes
    transport: str
    peer: str
    received_at: float
    listener: str = ""
    facility: str | None = None
    forced_charset: str = ""
    client: str = ""
    facilities: frozenset[str] = frozenset()
    replay_of: int | None = None
    content_charset: str = ""


def peer_of(address) -> str:
    """``host:port`` of a transport's peer address, ``?`` for what the address type lacks (a
    UNIX socket has no port), as envelopes and logs name the sender's end."""
    return f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
