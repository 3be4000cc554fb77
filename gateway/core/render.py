"""The core's own renderer: canonical JSON, the format every destination can take.

Registered like a plugin (``trylast``), so a vendor plugin that renders ``json`` differently wins.
"""
from __future__ import annotations

import json

from gateway.core.hookspecs import Payload, hookimpl


@hookimpl(trylast=True)
def hssk_render(records, destination, message, idempotency_key) -> Payload | None:
    if destination.format != "json":
        return None
    document = {
        "id": idempotency_key,
        "source": {"sender": message.sender, "control_id": message.control_id, "message_type": message.message_type},
        "records": records.to_dict(),
    }
    return Payload("application/json", json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
