"""ACK profiles: what a plugin may ask of the ACK a message gets (``hssk_ack_profile``).

Some receiving programmes define how their ACK must look beyond HL7's base rules: the CDC IIS
guide for VXU wants the ACK to name its conformance profile in MSH-21 (``Z23^CDCPHINVS``) and,
where a profile asks for it, warnings answered AE rather than AA. A profile says both as data,
so the same ACK builder serves every programme; it is chosen once per message, on the worker
that decides it, and travels with the decision to every place that builds its ACK (the worker,
a pipeline child, the journal writer answering a repeat or a failed commit).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from twisted.logger import Logger

from gateway.model.masking import mask_text
from gateway.model.outcome import ACCEPT, ERROR, REJECT, Issue

log = Logger(namespace="hssk.pipeline")

#: MSH fields a profile may set. MSH-1 to MSH-12 mirror the sender (who the ACK is for, what it
#: answers, the version it parses) and MSH-18 names the charset the ACK is written in.
PROFILE_FIELDS = frozenset(range(13, 26)) - {18}
#: How strict each answer is: a profile can make an answer stricter, never accept an error.
_STRICTNESS = {ACCEPT: 0, ERROR: 1, REJECT: 2}
_STANDARD_ENCODING = "^~\\&"


@dataclass(frozen=True)
class AckProfile:
    """What one message's ACK must carry besides HL7's base rules.

    ``msh_fields`` sets ACK MSH fields by number, written with the standard delimiters
    (``{21: "Z23^CDCPHINVS"}``; ``~`` between repetitions): the gateway writes them with the
    sender's own encoding characters. Only MSH-13 to MSH-25 other than MSH-18 may be set.

    ``severity_codes`` maps an ERR-4 severity (``E``, ``W``, ``I``) to the least answer a message
    with such an issue gets: ``{"W": "AE"}`` answers warnings AE. The decision's own code stands
    when it is stricter (an AR stays AR), so a profile can only make an answer stricter. The
    answer is the decision: a message answered AE is journaled as an error and queues nothing,
    like every AE, so the sender fixes it and sends it again (or an operator replays it).
    """

    msh_fields: Mapping[int, str] = field(default_factory=dict)
    severity_codes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for number, value in self.msh_fields.items():
            if number not in PROFILE_FIELDS:
                raise ValueError(f"MSH-{number} cannot be set by a profile (MSH-13 to MSH-25, not MSH-18)")
            if not isinstance(value, str) or any(c in value for c in "|\r\n"):
                raise ValueError(f"MSH-{number}: a profile's value is text without '|' or line ends, got {value!r}")
        for severity, code in self.severity_codes.items():
            if severity not in ("E", "W", "I") or code not in (ERROR, REJECT):
                raise ValueError(f"severity_codes maps E, W or I to AE or AR, got {severity!r}: {code!r}")
        object.__setattr__(self, "msh_fields", dict(self.msh_fields))
        object.__setattr__(self, "severity_codes", dict(self.severity_codes))

    def code_for(self, code: str, issues: Iterable[Issue]) -> str:
        """The answer for a decision of ``code`` with ``issues`` under this profile."""
        for issue in issues:
            mapped = self.severity_codes.get(issue.severity)
            if mapped is not None and _STRICTNESS[mapped] > _STRICTNESS[code]:
                code = mapped
        return code

    def header_fields(self, encoding: str) -> dict[int, str]:
        """``msh_fields`` written with the sender's encoding characters (MSH-2)."""
        table = str.maketrans(dict(zip(_STANDARD_ENCODING, encoding)))
        return {number: value.translate(table) for number, value in self.msh_fields.items()}


def with_ack_profile(hook, decision):
    """``decision`` with the profile the plugins choose for its message (``hssk_ack_profile``,
    first answer wins) and the code that profile gives it. A decision without an HL7 header to
    answer, or without an answer (an inbound ACK), is left as it is.

    A hook that raises, or returns something that is no :class:`AckProfile`, is a plugin fault
    like any other: AE with ERR 207 for this message, journaled for a replay, nothing queued."""
    if decision.message is None or decision.ack_code is None:
        return decision
    try:
        profile = hook.hssk_ack_profile(message=decision.message, envelope=decision.envelope)
        if profile is not None and not isinstance(profile, AckProfile):
            raise TypeError(f"hssk_ack_profile returned {type(profile).__name__}, not an AckProfile")
    except (Exception, SystemExit) as e:  # a plugin bug costs this message, never the worker
        plugin = decision.plugin or "unknown"
        log.error("hssk_ack_profile raised {error_type} for a message claimed by {plugin}: {error}", plugin=plugin,
                  error_type=type(e).__name__, error=mask_text(str(e)), control_id=decision.message.control_id)
        issue = Issue(207, f"choosing the ACK profile failed ({type(e).__name__} in hssk_ack_profile); the message is "
                           f"journaled and can be replayed once the plugin is fixed", "MSH^1^9")
        return dataclasses.replace(decision, ack_code=ERROR, issues=(issue,), outbox=(), privacy=(), not_routed=(),
                                   fault=(plugin, "ack_profile"))
    if profile is None:
        return decision
    code = profile.code_for(decision.ack_code, decision.issues)
    if code == decision.ack_code:
        return dataclasses.replace(decision, ack_profile=profile)
    return dataclasses.replace(decision, ack_profile=profile, ack_code=code, outbox=(), privacy=(), not_routed=())
