"""``mllp`` destination: forwards each payload (an HL7 v2 message) to a receiver over MLLP and
reads the receiver's ACK to decide delivered, retry or dead.

One persistent connection, one message in flight. MLLP has no request id but MSA-2, so a second
message sent before the first ACK would leave no sure way to tell whose answer came back; further
deliveries wait in order. Every ACK's MSA-2 must equal the sent MSH-10. An answer that does not
(a late ACK for an earlier message that timed out, or a confused receiver) means the stream can
no longer be trusted, so the connection is dropped and the next message opens a fresh one; a
timeout or an unreadable answer is handled the same way.

ACK codes: AA/CA delivered; codes listed in ``dead_letter_codes`` (default AE, CE: the receiver
says the content is wrong, so sending it again cannot help) dead with the ACK's own error text;
any other AR/CR/AE/CE retried. Payloads are never logged; reasons built from an ACK's text are
masked, because receivers quote identifiers in their errors.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.logger import Logger

from gateway.config import ConfigError, DestinationConfig, setting
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult
from gateway.formats.framing import FrameDecoder, Violation, wrap
from gateway.formats.hl7v2 import (UTF8_BOM, CharsetError, Hl7Message, MessageFormatError, normalize_segment_ends,
                                   peek_header)
from gateway.model.masking import mask_text

log = Logger(namespace="hssk.destination.mllp")

ACCEPTED = ("AA", "CA")
REFUSED = ("AE", "AR", "CE", "CR")
#: An ACK is a few hundred bytes; anything near this bound is not an ACK (invariant 6).
MAX_ACK_BYTES = 1024 * 1024
#: Reasons end up in the outbox row and in logs; a receiver's error text is cut to this length.
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class MllpSettings:
    """The keys of an ``mllp`` destination's table."""

    #: A Twisted client endpoint string: ``tcp:10.0.0.5:2575``, ``tls:host:2576:…`` for TLS.
    endpoint: str = ""
    #: MSA-1 codes that dead-letter the row: the receiver says the content is wrong.
    dead_letter_codes: tuple[str, ...] = ("AE", "CE")
    connect_timeout_seconds: float = setting(10.0, rule="must be a positive number", test=lambda v: v > 0)
    response_timeout_seconds: float = setting(30.0, rule="must be a positive number", test=lambda v: v > 0)


def check_mllp(destination: DestinationConfig, settings: MllpSettings) -> None:
    if not settings.endpoint:
        raise ConfigError(destination.key("endpoint"),
                          "is required: a Twisted client endpoint such as 'tcp:127.0.0.1:2576'")


class AnswerTooLarge(Exception):
    """The receiver sent a frame larger than :data:`MAX_ACK_BYTES`."""


class AckConnection(Protocol):
    """One connection to the receiver: writes a framed message and hands the next frame that
    comes back to whoever waits for it. A frame nobody waits for is discarded; the MSA-2 check
    would reject it anyway."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.dropped = False
        self._decoder = FrameDecoder(MAX_ACK_BYTES)
        self._waiter: Deferred | None = None
        self._lost_waiters: list[Deferred] = []

    @property
    def usable(self) -> bool:
        return bool(self.connected) and not self.dropped

    def send(self, payload: bytes) -> Deferred:
        """Write one framed message; fires with the next frame, errbacks when the connection is
        lost first. Cancelling it (a timeout) stops waiting but leaves the connection as it is."""
        self._waiter = Deferred(canceller=self._stop_waiting)
        self.transport.write(wrap(payload))
        return self._waiter

    def _stop_waiting(self, waiter: Deferred) -> None:
        if self._waiter is waiter:
            self._waiter = None

    def drop(self) -> None:
        """Abort the connection now: what it carries next can no longer be matched to a message."""
        if self.usable:
            self.dropped = True
            self.transport.abortConnection()

    def when_lost(self) -> Deferred:
        d: Deferred = Deferred()
        if self.connected:
            self._lost_waiters.append(d)
        else:
            d.callback(None)
        return d

    def dataReceived(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if self.dropped:
                return
            if isinstance(item, Violation):
                if item.kind == "frame_too_large":
                    self._fail(AnswerTooLarge(f"the receiver sent a frame larger than {MAX_ACK_BYTES} bytes"))
                    self.drop()
                continue
            waiter, self._waiter = self._waiter, None
            if waiter is None:
                log.warn("{destination}: discarded an answer that no message was waiting for",
                         destination=self.destination)
            else:
                waiter.callback(item)

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.errback(error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self._fail(reason.value)
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            d.callback(None)


class MllpDestination:
    """Delivers outbox rows to one MLLP receiver (``endpoint`` is a Twisted client endpoint
    string, so TLS and client certificates come from the string, e.g. ``tls:host:2576``).

    ``clock`` (IReactorTime, default ``reactor``) drives the connect and response timeouts, so a
    test can use real sockets and a ``task.Clock``.
    """

    def __init__(self, destination: DestinationConfig, config: MllpSettings, reactor, clock=None) -> None:
        self.name = destination.name
        self._config = config
        self._clock = clock or reactor
        try:
            self._endpoint = clientFromString(reactor, config.endpoint)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(destination.key("endpoint"),
                              f"is not a Twisted client endpoint string such as 'tcp:127.0.0.1:2576': {e}") from None
        self._queue: deque[tuple[Delivery, Deferred]] = deque()
        self._busy = False
        self._draining = False
        self._closed = False
        self._connection: AckConnection | None = None
        self._connecting: Deferred | None = None

    def deliver(self, delivery: Delivery) -> Deferred:
        """Queue ``delivery`` behind the ones already waiting; fires with its
        :class:`DeliveryResult` once its ACK is judged (never errbacks)."""
        if self._closed:
            return succeed(DeliveryResult(RETRY, "connection", f"destination {self.name} is closed"))
        done: Deferred = Deferred()
        self._queue.append((delivery, done))
        self._next()
        return done

    def close(self) -> Deferred:
        """Answer what still waits with a retry and close the connection; fires once it is closed."""
        self._closed = True
        waiting, self._queue = self._queue, deque()
        for _, done in waiting:
            done.callback(DeliveryResult(RETRY, "connection", "the gateway is shutting down"))
        if self._connecting is not None:
            self._connecting.cancel()
        connection = self._connection
        if connection is None or not connection.connected:
            return succeed(None)
        lost = connection.when_lost()
        if not connection.dropped:
            connection.transport.loseConnection()
        return lost

    def _next(self) -> None:
        """Start the next queued delivery once none is in flight. A loop, not recursion: attempts
        that finish at once (a payload without MSH-10) must not stack one call per queued row."""
        if self._draining:
            return
        self._draining = True
        try:
            while not self._busy and self._queue:
                self._busy = True
                delivery, done = self._queue.popleft()
                attempt = self._attempt(delivery)
                attempt.addErrback(self._unexpected, delivery)
                attempt.addCallback(self._finished, done)
        finally:
            self._draining = False

    def _finished(self, result: DeliveryResult, done: Deferred) -> None:
        self._busy = False
        done.callback(result)
        self._next()

    def _unexpected(self, failure, delivery: Delivery) -> DeliveryResult:
        """A bug here must cost one attempt, not the dispatcher: the row is retried."""
        log.failure("{destination}: delivering row {row_id} failed unexpectedly", failure,
                    destination=self.name, row_id=delivery.row_id)
        if self._connection is not None:
            self._connection.drop()
        return DeliveryResult(RETRY, "error", f"internal error in the mllp destination: "
                                              f"{mask_text(failure.getErrorMessage())[:MAX_REASON_CHARS]}")

    @inlineCallbacks
    def _attempt(self, delivery: Delivery):
        control_id = control_id_of(delivery.payload)
        if not control_id:
            return DeliveryResult(DEAD, "no_control_id", "the payload has no MSH-10 message control id, so no ACK "
                                                         "could ever be matched to it")
        try:
            connection = yield self._connect()
        except (ConnectError, DNSLookupError, DeferredTimeout, CancelledError, OSError) as e:
            return DeliveryResult(RETRY, "connection", _connect_failure(self._config, e))
        waiting = connection.send(delivery.payload)
        waiting.addTimeout(self._config.response_timeout_seconds, self._clock)
        try:
            frame = yield waiting
        except DeferredTimeout:
            connection.drop()
            return DeliveryResult(RETRY, "timeout", f"no ACK within {self._config.response_timeout_seconds:g} s "
                                                    f"(response_timeout_seconds); connection dropped")
        except AnswerTooLarge as e:
            return DeliveryResult(RETRY, "bad_ack", f"{e}; connection dropped")
        except (ConnectionClosed, OSError) as e:
            return DeliveryResult(RETRY, "connection", f"connection to {self._config.endpoint} lost before the ACK: "
                                                       f"{e.__class__.__name__}")
        result = judge_ack(frame, control_id, self._config.dead_letter_codes)
        if result.label in ("msa_mismatch", "bad_ack"):
            log.warn("{destination}: unusable answer ({label}); reconnecting", destination=self.name,
                     label=result.label)
            connection.drop()
        return result

    def _connect(self) -> Deferred:
        """The open connection, or a new one within ``connect_timeout_seconds``."""
        if self._connection is not None and self._connection.usable:
            return succeed(self._connection)
        connecting = connectProtocol(self._endpoint, AckConnection(self.name))
        connecting.addTimeout(self._config.connect_timeout_seconds, self._clock)
        self._connecting = connecting

        def connected(connection: AckConnection) -> AckConnection:
            self._connecting = None
            self._connection = connection
            log.info("{destination}: connected to {endpoint}", destination=self.name, endpoint=self._config.endpoint)
            return connection

        def failed(failure):
            self._connecting = None
            return failure

        return connecting.addCallbacks(connected, failed)


def _connect_failure(config: MllpSettings, error: Exception) -> str:
    if isinstance(error, DeferredTimeout):
        return (f"cannot connect to {config.endpoint} within {config.connect_timeout_seconds:g} s "
                f"(connect_timeout_seconds)")
    if isinstance(error, CancelledError):
        return f"connecting to {config.endpoint} was cancelled at shutdown"
    return f"cannot connect to {config.endpoint}: {error}"


def judge_ack(frame: bytes, control_id: str, dead_letter_codes: tuple[str, ...]) -> DeliveryResult:
    """What the receiver's answer ``frame`` to the message with MSH-10 ``control_id`` means."""
    ack = _parse_answer(frame)
    if ack is None or not ack.segments("MSA"):
        return DeliveryResult(RETRY, "bad_ack", "the answer is not an HL7 ACK (no MSH or no MSA segment); "
                                                "connection dropped")
    code = ack.field("MSA", 1).strip().upper()
    answered = ack.field("MSA", 2)
    if answered != control_id:
        return DeliveryResult(RETRY, "msa_mismatch", mask_text(
            f"ACK MSA-2 {answered[:64]!r} does not match the sent MSH-10 {control_id[:64]!r}; connection dropped"))
    if code in ACCEPTED:
        return DeliveryResult(DELIVERED, code)
    if code not in REFUSED:
        return DeliveryResult(RETRY, "bad_ack", mask_text(f"MSA-1 {code[:8]!r} is not an acknowledgment code "
                                                          f"(AA, AE, AR, CA, CE, CR); connection dropped"))
    outcome = DEAD if code in dead_letter_codes else RETRY
    return DeliveryResult(outcome, code, f"receiver answered {code}: {error_text(ack)}")


def _parse_answer(frame: bytes) -> Hl7Message | None:
    try:
        return Hl7Message.from_bytes(frame)
    except MessageFormatError:
        return None
    except CharsetError:
        pass
    # MSA-1 and MSA-2 are ASCII in every charset; Latin-1 maps every byte, so they still read.
    raw = frame.removeprefix(UTF8_BOM).lstrip(b"\r\n")
    try:
        return Hl7Message(normalize_segment_ends(raw.decode("latin-1")), "latin-1")
    except MessageFormatError:
        return None


def control_id_of(payload: bytes) -> str:
    """MSH-10 of the payload as the receiver will read it (decoded by its MSH-18), or "" when
    the payload has no MSH."""
    try:
        return Hl7Message.from_bytes(payload).control_id
    except MessageFormatError:
        return ""
    except CharsetError:
        header = peek_header(payload)
        return header.control_id if header is not None else ""


def error_text(ack: Hl7Message) -> str:
    """MSA-3 and each ERR's words (ERR-8 user message, else the ERR-3 code's text, else the
    v2.3-style ERR-1), masked and cut short; the receiver's own words are what an operator needs."""
    parts = [ack.unescape(ack.field("MSA", 3))]
    for err in ack.segments("ERR"):
        code = ack.components(_nth(err, 3))
        parts.append(ack.unescape(_nth(err, 8) or _nth(code, 1) or _nth(err, 1)))
    found = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    text = "; ".join(found) if found else "no error text in the ACK"
    return mask_text(text)[:MAX_REASON_CHARS]


def _nth(values: list[str], n: int) -> str:
    return values[n] if n < len(values) else ""
