"""A record store that keeps everything it is sent: the destination a plugin's tests deliver to.

It is a real twisted.web server on 127.0.0.1 (port 0), so a delivery goes through the gateway's
own HTTP destination (its client, retries, Idempotency-Key header) exactly as it would to the
provincial store. Each destination the kit configures posts to ``/<destination name>``, so one
server records every format at once and :meth:`RecordingDestination.deliveries` tells them apart.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site


@dataclass(frozen=True)
class Delivery:
    """One request the gateway delivered: which destination, under which key, with which payload."""

    destination: str
    idempotency_key: str
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class _Recorder(Resource):
    isLeaf = True

    def __init__(self, recording: RecordingDestination) -> None:
        super().__init__()
        self.recording = recording

    def render_POST(self, request) -> bytes:
        self.recording._record(Delivery(
            destination=request.path.decode("ascii", "replace").strip("/"),
            idempotency_key=(request.getHeader("idempotency-key") or ""),
            content_type=(request.getHeader("content-type") or ""),
            body=request.content.read()))
        request.setResponseCode(200)
        return b'{"status": "stored"}'


class RecordingDestination:
    """Listens on 127.0.0.1, answers 200 to every POST and keeps it, in the order received.

    ``url(name)`` is what a ``[destinations.NAME]`` table of kind ``http`` posts to; the
    ``hssk_gateway`` fixture points one destination per format at it."""

    def __init__(self, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # the installed one, looked up when used (see gateway.testing.gateway)
        self.reactor = reactor
        self.received: list[Delivery] = []
        self._port = None
        self._waiters: list[tuple[Callable[[], bool], Deferred]] = []

    def start(self) -> RecordingDestination:
        site = Site(_Recorder(self))
        site.noisy = False
        self._port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        return self

    def stop(self) -> Deferred:
        return self._port.stopListening()

    def url(self, destination: str) -> str:
        return f"http://127.0.0.1:{self._port.getHost().port}/{destination}"

    def deliveries(self, destination: str | None = None, key: str | None = None) -> list[Delivery]:
        """What was delivered, oldest first: to one destination, under one idempotency key, or all."""
        return [d for d in self.received
                if (destination is None or d.destination == destination) and (key is None or d.idempotency_key == key)]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "deliveries") -> Deferred:
        """Fires once ``condition()`` holds after a delivery (at once if it holds now); fails with
        a TimeoutError naming ``what`` after ``timeout`` seconds, so a test never hangs."""
        d: Deferred = Deferred()
        if condition():
            d.callback(None)
            return d
        self._waiters.append((condition, d))

        def timed_out(failure, _timeout):
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; delivered so far: "
                                 f"{[(r.destination, r.idempotency_key) for r in self.received]}")

        return d.addTimeout(timeout, self.reactor, onTimeoutCancel=timed_out)

    def wait_for_keys(self, keys: set[str] | frozenset[str], timeout: float = 10.0) -> Deferred:
        """Fires once a delivery was received under each of ``keys``."""
        return self.wait_for(lambda: keys <= {d.idempotency_key for d in self.received}, timeout,
                             f"{len(keys)} idempotency keys")

    def _record(self, delivery: Delivery) -> None:
        self.received.append(delivery)
        ready = [(c, d) for c, d in self._waiters if c()]
        self._waiters = [(c, d) for c, d in self._waiters if (c, d) not in ready]
        for _, d in ready:
            if not d.called:
                d.callback(None)


def recording_settings(recording: RecordingDestination, formats: Iterable[str], privacy: str = "filtered") -> dict[str, Any]:
    """Config keys for one ``http`` destination per format, named after it and posting to
    ``recording``: what a ``[destinations.json]`` table would say. ``privacy`` is the
    destinations' policy; ``filtered`` (the default, as in production) removes HIV and drug-use
    data before rendering."""
    settings: dict[str, Any] = {}
    for name in formats:
        settings.update({f"destinations.{name}.kind": "http", f"destinations.{name}.url": recording.url(name),
                         f"destinations.{name}.format": name, f"destinations.{name}.privacy": privacy})
    return settings
