"""The core's own renderers: canonical JSON, the format every destination can take, and ``hl7v2``,
the original message forwarded as it came (for ``mllp`` destinations).

Registered like a plugin (``trylast``), so a vendor plugin that renders ``json`` or ``hl7v2``
differently wins.
"""
from __future__ import annotations

import json

from gateway.core.hookspecs import Payload, hookimpl
from gateway.formats.charsets import codec_for
from gateway.formats.hl7v2 import Hl7Message

UTF8_CHARSET = "UNICODE UTF-8"


@hookimpl(trylast=True)
def hssk_render(records, destination, message, idempotency_key) -> Payload | None:
    if destination.format == "json":
        return render_json(records, message, idempotency_key)
    if destination.format == "hl7v2":
        return render_hl7v2(message)
    return None


def render_json(records, message: Hl7Message, idempotency_key: str) -> Payload:
    document = {
        "id": idempotency_key,
        "source": {"sender": message.sender, "control_id": message.control_id, "message_type": message.message_type},
        "records": records.to_dict(),
    }
    return Payload("application/json", json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def render_hl7v2(message: Hl7Message) -> Payload:
    """The message as received, segments ending in CR, always encoded as UTF-8.

    The receiver dedupes on MSH-10, which is forwarded unchanged, so the idempotency key needs no
    place of its own. A message that arrived in another character set is re-encoded, and its
    MSH-18 says so, because a receiver decodes by MSH-18.
    """
    text = message.text.rstrip("\r")
    if codec_for(message.charset) != "utf-8":
        text = with_msh_field(text, message.field_separator, 18, UTF8_CHARSET)
    return Payload("application/hl7-v2", (text + "\r").encode("utf-8"))


def with_msh_field(text: str, separator: str, n: int, value: str) -> str:
    """``text`` with MSH-n (n >= 3) set to ``value``; the other segments are left as they are."""
    end = text.find("\r")
    header, rest = (text, "") if end < 0 else (text[:end], text[end:])
    fields = header.split(separator)
    fields += [""] * (n - len(fields))
    fields[n - 1] = value  # fields[0] is "MSH" and fields[1] is MSH-2, so MSH-n is fields[n - 1]
    return separator.join(fields) + rest
