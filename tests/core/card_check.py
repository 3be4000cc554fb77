"""A BHYT card check at a stand-in for the BHXH portal: the remote lookup of the lookup tests.

:class:`CardPortal` is a real twisted.web server on 127.0.0.1 that answers ``GET /card/<card>``
as told per card: ``valid``, ``expired``, ``500``, or ``hang`` (no answer until the test releases
it; a request its client gave up on is noted in ``cancelled``). ``log`` records each question and
answer in order.

:class:`CardCheck` is the plugin: it asks the portal about every record set's BHYT card
(``hssk_lookups``), performs the lookup with twisted.web's Agent on the reactor
(``hssk_perform_lookup``), and judges the answer (``hssk_check_lookups``): an unknown card is AE
103; a portal that failed or was silent is, as the plugin is told, an AA with a warning or an AR
to send again. ``plugin`` is an instance for the entry-point group (the child-process test),
asking the portal at ``HSSK_TEST_PORTAL``.
"""
from __future__ import annotations

import json
import os

from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway.plugin import Issue, Lookup, PluginDescription, Unavailable, hookimpl

SERVICE = "bhxh_card"
#: PID-3 repetitions of a message with a card: the CCCD, then the card (type HC).
CARD_PID = "PID|1||079085000123^^^BCA^NI~{card}^^^BHXH^HC||Nguyễn^Văn An||19850412|M"


class CardPortal(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []
        self.hanging: dict[str, object] = {}
        self.cancelled: list[str] = []

    def render_GET(self, request):
        card = request.postpath[-1].decode()
        self.log.append(("asked", card))
        answer = self.answers.get(card, "valid")
        if answer == "hang":
            self.hanging[card] = request
            request.notifyFinish().addErrback(lambda _: self.cancelled.append(card))
            return NOT_DONE_YET
        return self._answer(request, card, answer)

    def release(self, card: str, answer: str = "valid") -> None:
        request = self.hanging.pop(card)
        request.write(self._answer(request, card, answer))
        request.finish()

    def _answer(self, request, card: str, answer: str) -> bytes:
        self.log.append(("answered", card))
        if answer == "500":
            request.setResponseCode(500)
            return b"the portal is down"
        request.setHeader("content-type", "application/json")
        return json.dumps({"card": card, "valid": answer == "valid"}).encode()

    async def listen(self) -> str:
        self.port = await TCP4ServerEndpoint(default_reactor, 0, interface="127.0.0.1").listen(Site(self))
        return f"http://127.0.0.1:{self.port.getHost().port}"


class CardCheck:
    hssk_contract = "1.0"
    __name__ = "card_check"

    def __init__(self, url: str = "", on_silence: str = "warn", timeout: float = 2.0, max_concurrent: int = 8) -> None:
        self.url = url
        self.on_silence = on_silence
        self.timeout = timeout
        self.max_concurrent = max_concurrent

    @hookimpl
    def hssk_describe(self):
        return PluginDescription("card_check", "checks BHYT cards at the BHXH portal")

    @hookimpl
    def hssk_lookups(self, records):
        card = records.person.identifier("BHYT") if records.person else ""
        if card:
            return [Lookup(SERVICE, card, timeout_seconds=self.timeout, max_concurrent=self.max_concurrent)]
        return None

    @hookimpl
    def hssk_perform_lookup(self, lookup, reactor):
        if lookup.service != SERVICE:
            return None
        url = self.url or os.environ["HSSK_TEST_PORTAL"]
        d = Agent(reactor).request(b"GET", f"{url}/card/{lookup.key}".encode())

        def read(response):
            if response.code != 200:
                raise RuntimeError(f"the portal answered {response.code}")
            body = _Body()
            response.deliverBody(body)
            return body.done

        return d.addCallback(read).addCallback(json.loads)

    @hookimpl
    def hssk_check_lookups(self, records, answers):
        for lookup, answer in answers.items():
            if lookup.service != SERVICE:
                continue
            if not answer.answered:
                if self.on_silence == "reject":
                    raise Unavailable([Issue(207, f"IN1-36: the BHXH portal did not check the card ({answer.outcome}); "
                                                  f"send again later", "IN1^1^36")])
                return [Issue(0, f"IN1-36: card not checked at the BHXH portal ({answer.outcome})", "IN1^1^36", "W")]
            if not answer.value["valid"]:
                return [Issue(103, "IN1-36: the BHXH portal knows no valid card by this number", "IN1^1^36")]
        return None


class _Body(Protocol):
    """A response body, whole."""

    def __init__(self) -> None:
        self.done = Deferred()
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason=None) -> None:
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


plugin = CardCheck()
