"""What the gateway decided about one message, and the errors that explain the decision."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

ACCEPT = "AA"
ERROR = "AE"
REJECT = "AR"

#: HL7 table 0357 (message error condition codes) names, used in ERR-3.2.
TABLE_0357 = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

#: Journal status for each application ACK code.
STATUS_BY_CODE = {ACCEPT: "accepted", ERROR: "error", REJECT: "rejected"}
#: Every journal status: a decision's, or ``ignored`` (an inbound ACK, answered with nothing).
MESSAGE_STATUSES = (*STATUS_BY_CODE.values(), "ignored")


@dataclass(frozen=True)
class Issue:
    """One ERR segment: what is wrong, where, under which table-0357 code.

    ``location`` is ``SEG^sequence^field^component`` as in ERR-2 (``PID^1^3^1``); ``text`` must
    name the field and the rule and must not contain an unmasked identifier or a patient's name.
    """

    code: int
    text: str
    location: str = ""
    severity: str = "E"

    def to_dict(self) -> dict:
        return {"code": self.code, "text": self.text, "location": self.location, "severity": self.severity}

    @classmethod
    def from_dict(cls, data: dict) -> Issue:
        return cls(data["code"], data["text"], data.get("location", ""), data.get("severity", "E"))


class ContentError(Exception):
    """Raised by an adapter when the message's content is wrong: the sender gets AE with these issues."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(i.text for i in self.issues))


class Unavailable(Exception):
    """Raised by a plugin that cannot decide the message now, through no fault of its content (a
    remote service it must consult did not answer): the sender gets AR with these issues and may
    send it again, and the journal keeps it as rejected, so the resend is decided afresh."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(i.text for i in self.issues))


class NotRenderable(Exception):
    """Raised by :func:`~gateway.core.hookspecs.hssk_render` when this record set has no place in
    the destination's format (an XML 130 file is an episode's file, so a person without an episode
    cannot be one). The sender's answer does not change: the destination does not get the record set, and it is
    journaled, counted (``hssk_records_not_routed_total``) and logged as not routed.

    ``reason`` is a short fixed word, the metric's label (``no_episode``); ``text`` says it to
    an operator, without patient data."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass(frozen=True)
class Outcome:
    """The answer a transport gives its sender, known only after the journal commit."""

    ack_code: str
    issues: tuple[Issue, ...] = ()
    message_id: int | None = None
    replies: tuple[str, ...] = ()
    charset: str = "utf-8"
    duplicate: bool = False
    plugin: str = ""
    message_type: str = ""
    facility: str = ""
    committed: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def accepted(self) -> bool:
        return self.ack_code == ACCEPT
