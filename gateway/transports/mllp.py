"""MLLP listener: one small protocol per connection, one factory holding what they share.

Answers go back in the order the messages arrived on the connection, because HL7 senders match
ACKs by position as often as by MSA-2; the intake journals them in that order too.
"""
from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from gateway.config import MllpConfig
from gateway.core.ack import encode_reply
from gateway.core.audit import ANONYMOUS, MLLP
from gateway.core.clients import Client, ClientRegistry, Refusal, envelope_for
from gateway.core.intake import ArrivalOrder, Intake
from gateway.core.metrics import Metrics
from gateway.formats.framing import FrameDecoder, Violation, wrap
from gateway.model.envelope import Envelope, peer_of
from gateway.model.outcome import Outcome
from gateway.transports.tls import is_tls, peer_certificate

log = Logger(namespace="hssk.mllp")

TRANSPORT = "mllp"
#: How long a connection that will be refused (over max_connections, or no client while
#: auth.required) may take to send the frame its AR answers, before it is closed without one:
#: it holds a socket, and the idle timeout (minutes) is for connections we serve.
REFUSAL_GRACE_SECONDS = 10.0


class _Slot:
    """A place in the connection's answer queue, filled when the message's outcome is known."""

    __slots__ = ("data", "ready", "received_at", "close_after")

    def __init__(self, received_at: float) -> None:
        self.data = b""
        self.ready = False
        self.received_at = received_at
        self.close_after = False


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class MLLPProtocol(Protocol, TimeoutMixin):
    def __init__(self, factory: MLLPFactory) -> None:
        self.factory = factory
        self.decoder = FrameDecoder(factory.config.max_frame_bytes)
        self.callLater = factory.clock.callLater
        self._answers: deque[_Slot] = deque()
        #: Frames (and framing violations) read but not yet taken in, because the connection had
        #: ``max_in_flight_per_connection`` messages unanswered; reading is paused meanwhile.
        self._waiting: deque[bytes | Violation] = deque()
        self._paused = False
        #: Pipelined messages are journaled in the order they arrived, as they are answered.
        self._arrivals = ArrivalOrder()
        self._refusal: Refusal | None = None
        self._closing = False
        #: The sender closed its side: close ours once every answer owed is written.
        self._input_ended = False
        #: A TLS connection whose handshake (and so whose client) is not known yet.
        self._handshaking = False
        self.client: Client | None = None

    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        self.peer = peer_of(address)
        self.host = getattr(address, "host", "")
        self.factory.opened(self)
        if is_tls(self.transport):
            # Who it is shows only once the handshake is done (its certificate); no data comes before.
            self._handshaking = True
            self.setTimeout(min(self.factory.config.idle_timeout_seconds, REFUSAL_GRACE_SECONDS))
        else:
            self._authenticate(None)

    def handshakeCompleted(self) -> None:
        self._handshaking = False
        self._authenticate(peer_certificate(self.transport))

    def _authenticate(self, certificate) -> None:
        found = self.factory.clients.authenticate(self.host, None, certificate)
        audit = self.factory.intake.audit
        if isinstance(found, Refusal):
            self._refusal = self._refusal or found
            if audit is not None:
                audit.refused(MLLP, self.peer, f"{found.reason}: {found.text}")
        else:
            self.client = found
            self._refusal = self._refusal or self.factory.admit(self)
            if audit is not None:
                audit.authenticated(MLLP, found.name if found is not None else ANONYMOUS, self.peer, self.host)
        idle = self.factory.config.idle_timeout_seconds
        self.setTimeout(idle if self._refusal is None else min(idle, REFUSAL_GRACE_SECONDS))

    def connectionLost(self, reason=None) -> None:
        self.setTimeout(None)
        self.factory.closed(self)
        if self._handshaking:
            self.factory.metrics.connections_refused.labels(transport=TRANSPORT, reason="tls_handshake").inc()
            log.warn("MLLP peer {peer} left before the TLS handshake completed: {reason}", peer=self.peer,
                     reason=reason.getErrorMessage() if reason is not None else "closed")

    def readConnectionLost(self) -> None:
        """The sender half-closed after its last frame (``nc -q1``, ``shutdown(SHUT_WR)``) and is
        still reading: answer everything it sent, then close. A frame it left unfinished gets AR."""
        if self._closing:
            return
        self._input_ended = True
        head = self.decoder.pending
        if head and self._refusal is not None:
            self._refuse(head, self._refusal.text, self._refusal.reason)
        elif head:
            self.factory.metrics.framing_violations.labels(kind="incomplete_frame_at_close").inc()
            self._refuse(head, "frame incomplete when the sender closed its side of the connection", "half_closed")
        else:
            self._flush()

    def writeConnectionLost(self) -> None:
        """Never called: the gateway closes whole connections, not its write side alone."""

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._waiting.extend(self.decoder.feed(data))
        self._take_in()

    def _take_in(self) -> None:
        """Take in waiting frames while the connection is under its in-flight bound; past it,
        stop reading the socket (the sender's TCP window fills and it waits) until answers drain.
        Frames already read wait here in order, so answers keep the arrival order."""
        waiting, answers = self._waiting, self._answers
        bound = self.factory.config.max_in_flight_per_connection
        while waiting and not self._closing and len(answers) < bound:
            item = waiting.popleft()
            if isinstance(item, Violation):
                self.factory.metrics.framing_violations.labels(kind=item.kind).inc(item.count)
                if item.kind == "frame_too_large":
                    self._refuse(item.head, f"frame exceeds the {self.factory.config.max_frame_bytes}-byte limit "
                                            f"(mllp.max_frame_bytes)", "frame_too_large")
            elif self._refusal is not None:
                self._refuse(item, self._refusal.text, self._refusal.reason)
            else:
                self._submit(item)
        if self._closing:
            waiting.clear()
        if waiting and not self._paused:
            self._paused = True
            self.factory.metrics.connections_paused.labels(transport=TRANSPORT).inc()
            self.transport.pauseProducing()
        elif self._paused and not waiting:
            self._paused = False
            self.transport.resumeProducing()

    def _submit(self, frame: bytes) -> None:
        now = self.factory.clock.seconds()
        slot = _Slot(now)
        self._answers.append(slot)
        envelope = envelope_for(frame, TRANSPORT, self.peer, now, self.factory.listener, self.client,
                                self.factory.config.charset)
        self.factory.intake.submit(envelope, self._arrivals).addCallback(self._answered, slot)

    def _answered(self, outcome: Outcome, slot: _Slot) -> None:
        slot.data = b"".join(wrap(encode_reply(text, outcome.charset)) for text in outcome.replies)
        slot.ready = True
        if self._answers[0] is slot:
            self._flush()

    def _flush(self) -> None:
        """Write every answer that is ready and has no unanswered message before it."""
        answers = self._answers
        out = []
        now = self.factory.clock.seconds()
        latency = self.factory.ack_latency
        close = False
        while answers and answers[0].ready:
            done = answers.popleft()
            out.append(done.data)
            if done.close_after:
                close = True
                break
            latency.observe(now - done.received_at)
        if out:
            self.transport.write(b"".join(out))
            if self._paused:
                self.resetTimeout()  # a paused sender is waiting on us, not idle
                self._take_in()
        if close or (self._input_ended and not answers):
            self.transport.loseConnection()

    def _refuse(self, head: bytes, reason: str, label: str) -> None:
        """Answer AR when the frame's MSH is readable, then close: the bound is not negotiable.
        The refusal queues behind the answers still owed on this connection, so messages sent
        before the offending frame are still acknowledged first."""
        self._closing = True
        self.factory.metrics.connections_refused.labels(transport=TRANSPORT, reason=label).inc()
        log.warn("refusing MLLP peer {peer}: {reason}", peer=self.peer, reason=reason)
        now = self.factory.clock.seconds()
        slot = _Slot(now)
        slot.ready = slot.close_after = True
        if head.lstrip(b"\xef\xbb\xbf\r\n").startswith(b"MSH"):
            envelope = Envelope(head, TRANSPORT, self.peer, now, self.factory.listener, None, self.factory.config.charset)
            outcome = self.factory.intake.refusal(envelope, reason)
            slot.data = b"".join(wrap(encode_reply(t, outcome.charset)) for t in outcome.replies)
        self._answers.append(slot)
        self._flush()

    def timeoutConnection(self) -> None:
        head = self.decoder.pending
        if self._refusal is not None:
            self._refuse(head, self._refusal.text, self._refusal.reason)
        elif head:
            self.factory.metrics.framing_violations.labels(kind="incomplete_frame_at_timeout").inc()
            self._refuse(head, f"frame incomplete after {self.factory.config.idle_timeout_seconds:g} s idle "
                               f"(mllp.idle_timeout_seconds)", "idle_timeout")
        else:
            self.factory.metrics.connections_refused.labels(transport=TRANSPORT, reason="idle_timeout").inc()
            self.transport.loseConnection()


class MLLPFactory(Factory):
    """Shared by every connection of one listener: config, intake, metrics, clock, the clients
    it may recognise by address, the count."""

    #: The start-up summary names the listeners; Twisted's "Starting factory" lines add nothing.
    noisy = False

    def __init__(self, config: MllpConfig, intake: Intake, metrics: Metrics, clock: IReactorTime,
                 listener: str = "mllp", clients: ClientRegistry | None = None) -> None:
        self.config = config
        self.clients = clients or ClientRegistry(())
        self.intake = intake
        self.metrics = metrics
        self.clock = clock
        self.listener = listener
        #: Admitted connections (a client, or an anonymous sender the config lets in), at most
        #: ``max_connections``, at most ``max_connections_per_peer`` of them per address.
        self.connections: set[MLLPProtocol] = set()
        self.per_peer: dict[str, int] = {}
        #: Connections not admitted: being refused (a stranger while ``auth.required``, one over a
        #: limit), or a TLS handshake not done yet. They have places of their own, as many again,
        #: so idle strangers cannot take the clients' places.
        self.refusing: set[MLLPProtocol] = set()
        self.ack_latency = metrics.ack_latency.labels(transport=TRANSPORT)

    def buildProtocol(self, addr) -> MLLPProtocol | None:
        """Past the places of connections not admitted, a new one that its address does not name
        as a client is closed at once, before a byte is read."""
        if len(self.refusing) >= self.config.max_connections and isinstance(
                self.clients.authenticate(getattr(addr, "host", ""), None), Refusal):
            self.metrics.connections_refused.labels(transport=TRANSPORT, reason="max_connections").inc()
            return None
        return MLLPProtocol(self)

    def opened(self, protocol: MLLPProtocol) -> None:
        self.refusing.add(protocol)
        self.metrics.open_connections.labels(transport=TRANSPORT).inc()

    def admit(self, protocol: MLLPProtocol) -> Refusal | None:
        """An authenticated connection takes its place among the admitted, or the Refusal that
        says which limit it is over."""
        if len(self.connections) >= self.config.max_connections:
            return Refusal("max_connections", f"the listener already has {len(self.connections)} connections, its "
                                              f"limit (mllp.max_connections)")
        host = protocol.host
        if self.per_peer.get(host, 0) >= self.config.max_connections_per_peer:
            return Refusal("max_connections_per_peer", f"{host} already has {self.per_peer[host]} connections, the "
                                                       f"limit for one address (mllp.max_connections_per_peer)")
        self.refusing.discard(protocol)
        self.connections.add(protocol)
        self.per_peer[host] = self.per_peer.get(host, 0) + 1
        return None

    def closed(self, protocol: MLLPProtocol) -> None:
        if protocol in self.connections:
            self.connections.discard(protocol)
            left = self.per_peer.pop(protocol.host) - 1
            if left:
                self.per_peer[protocol.host] = left
        elif protocol in self.refusing:
            self.refusing.discard(protocol)
        else:
            return
        self.metrics.open_connections.labels(transport=TRANSPORT).dec()
