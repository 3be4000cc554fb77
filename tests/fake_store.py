"""A real HTTP server standing in for the provincial record store.

It records every request (idempotency key, headers, body) and can be told how to answer the
next requests: ``ok``, a status (``500``, ``400``…), ``503`` with ``Retry-After``, ``hang``
(never answer), ``drop`` (close the connection after the headers arrived). Used in-process by the
tests and as a subprocess (``python -m tests.fake_store``) by the crash test and the drain
benchmark, where it appends one JSON line per accepted request to a file.

``--fail-every N`` makes every Nth request answer 503, for intermittent-failure runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import deque
from dataclasses import dataclass, field

from twisted.internet import reactor as default_reactor
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


@dataclass
class Received:
    idempotency_key: str
    content_type: str
    authorization: str
    body: bytes
    answered: int


@dataclass
class StoreBehaviour:
    """Answers to give, first the queued ones (one per request), then ``default``."""

    default: str = "ok"
    queued: deque = field(default_factory=deque)
    fail_every: int = 0
    retry_after: str = "1"
    #: The body of a 4xx answer; a real store's often quotes the record it refused.
    reject_body: str = ""

    def next(self, count: int) -> str:
        if self.queued:
            return self.queued.popleft()
        if self.fail_every and count % self.fail_every == 0:
            return "503"
        return self.default


class StoreResource(Resource):
    isLeaf = True

    def __init__(self, behaviour: StoreBehaviour, journal=None) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.hanging: list = []
        self._journal = journal
        self._count = 0

    def render_POST(self, request):
        self._count += 1
        answer = self.behaviour.next(self._count)
        body = request.content.read()
        key = (request.getHeader("idempotency-key") or "")
        if answer == "hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        if answer == "drop":
            request.transport.abortConnection()
            return NOT_DONE_YET
        code = 200 if answer == "ok" else int(answer)
        self.received.append(Received(key, request.getHeader("content-type") or "",
                                      request.getHeader("authorization") or "", body, code))
        if code == 200 and self._journal is not None:
            self._journal.write(json.dumps({"key": key, "sha": _digest(body)}) + "\n")
            self._journal.flush()
        request.setResponseCode(code)
        if code == 503:
            request.setHeader("retry-after", self.behaviour.retry_after)
            return b"store busy\n"
        if code == 200:
            return b'{"status": "stored"}'
        return (self.behaviour.reject_body or f"rejected with {code}: invalid record\n").encode()

    def accepted_keys(self) -> list[str]:
        return [r.idempotency_key for r in self.received if r.answered == 200]

    def release_hanging(self) -> None:
        for request in self.hanging:
            if not request._disconnected:
                request.finish()
        self.hanging.clear()


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def start_store(reactor=default_reactor, behaviour: StoreBehaviour | None = None, port: int = 0, journal=None):
    """Listen on 127.0.0.1; returns (resource, listening port)."""
    resource = StoreResource(behaviour or StoreBehaviour(), journal)
    site = Site(resource)
    site.noisy = False
    listening = reactor.listenTCP(port, site, interface="127.0.0.1")
    return resource, listening


def url_of(listening) -> str:
    return f"http://127.0.0.1:{listening.getHost().port}/records"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--journal", required=True, help="append one JSON line per accepted request")
    parser.add_argument("--fail-every", type=int, default=0)
    args = parser.parse_args(argv)
    journal = open(args.journal, "a", encoding="utf-8")
    _, listening = start_store(behaviour=StoreBehaviour(fail_every=args.fail_every, retry_after="0"),
                               port=args.port, journal=journal)
    print(listening.getHost().port, flush=True)
    http.HTTPFactory.noisy = False
    default_reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
