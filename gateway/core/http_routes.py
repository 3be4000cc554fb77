"""HTTP endpoints a plugin adds to the intake listener: a national system's own API that a HIS
already speaks (the BHXH portal's token and submission endpoints), answered in that system's
shape, while what the HIS sends still goes through the normal intake.

A plugin returns :class:`HttpRoute` objects from :func:`gateway.core.hookspecs.hssk_http_routes`.
The transport mounts each at its path and, for each request, hands the route's ``handle`` an
:class:`HttpCall`: the request as data (method, headers, body, peer, time received) and what
the plugin may do with it (read the body as a form off the reactor, submit bytes to the intake
as a configured client, count a wrong credential against the peer). ``handle`` returns an
:class:`HttpAnswer`, or a Deferred of one. The transport knows nothing of any vendor: the path,
the credentials and the answer's shape are the plugin's.

    >>> HttpRoute("api/token/take", lambda call: HttpAnswer.json({"ok": True})).segments
    (b'api', b'token', b'take')
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from gateway.config import GatewayConfig
    from gateway.core.documents import DocumentRequest

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: First path segments that are the gateway's own (health, readiness, metrics, the admin API).
RESERVED_PREFIXES = frozenset({"healthz", "readyz", "metrics", "admin"})


class RouteError(Exception):
    """A route cannot be mounted (a bad or reserved path, two plugins on one path); start-up stops."""


@dataclass(frozen=True)
class HttpAnswer:
    """What a route answers: status, body and its media type, and any extra headers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpAnswer:
        """``body`` as UTF-8 JSON, Vietnamese text kept readable."""
        return cls(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), headers=dict(headers or {}))


class HttpCall:
    """One request to a plugin's route, built by the transport.

    ``headers`` are lower-cased names with their last value as text (ISO-8859-1, so a stray byte
    is a wrong value, never an error). ``retry_after`` is set (seconds) when the peer is locked
    out after too many wrong credentials (``auth.max_failures``): answer it as refused without
    looking at what it sent. ``received_at`` is the gateway clock's time of arrival."""

    def __init__(self, *, method: str, path: str, headers: Mapping[str, str], body: bytes, peer: str,
                 received_at: float, retry_after: int | None, form: Callable[[int], Deferred],
                 submit: Callable[..., Deferred], credentials_failed: Callable[[], None]) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.peer = peer
        self.received_at = received_at
        self.retry_after = retry_after
        self._form = form
        self._submit = submit
        self._credentials_failed = credentials_failed

    def header(self, name: str) -> str:
        """A request header, ``""`` when absent."""
        return self.headers.get(name.lower(), "")

    def form(self, max_fields: int = 32) -> Deferred:
        """The body as an HTML form (urlencoded or multipart), parsed on a thread: a Deferred of
        its fields (the first value of each, as text), failing with ``ValueError`` saying why for
        a body that is no form or has more than ``max_fields`` fields."""
        return self._form(max_fields)

    def submit(self, raw: bytes, *, source: str, client: str, request: DocumentRequest | None = None) -> Deferred:
        """Hand ``raw`` to the intake as an input of the registered ``source`` sent by the
        configured ``[clients.NAME]`` ``client`` (its facilities bind what it may send for, as
        for any intake endpoint). Fires with the :class:`~gateway.model.outcome.Outcome` once the
        decision is journaled (invariant 1), or refused at a bound (``committed`` False)."""
        return self._submit(raw, source=source, client=client, request=request)

    def credentials_failed(self) -> None:
        """Count a wrong credential against the peer, as every intake endpoint does; enough of
        them lock the peer out for a while (``auth.max_failures``)."""
        self._credentials_failed()


@dataclass(frozen=True)
class HttpRoute:
    """``path`` (``api/token/take``: segments of letters, digits, ``_ . -``) answered by
    ``handle(call)`` for the ``methods`` given; other methods are answered 405."""

    path: str
    handle: Callable[[HttpCall], HttpAnswer | Deferred]
    methods: tuple[str, ...] = ("POST",)

    def __post_init__(self) -> None:
        parts = self.path.strip("/").split("/")
        if not all(_SEGMENT.fullmatch(p) for p in parts) or parts[0] in RESERVED_PREFIXES:
            raise RouteError(f"route {self.path!r} must be path segments of letters, digits, _ . and -, not "
                             f"under {', '.join(sorted(RESERVED_PREFIXES))}")

    @property
    def segments(self) -> tuple[bytes, ...]:
        return tuple(p.encode("ascii") for p in self.path.strip("/").split("/"))


@dataclass
class HttpRoutes:
    """The routes of one plugin manager and the plugin that added each."""

    routes: dict[tuple[bytes, ...], HttpRoute] = field(default_factory=dict)
    owners: dict[tuple[bytes, ...], str] = field(default_factory=dict)

    @classmethod
    def from_hook(cls, hook, config: GatewayConfig, source_routes: frozenset[bytes] = frozenset()) -> HttpRoutes:
        """Ask every plugin's ``hssk_http_routes``; a path two plugins take, one a source's route
        takes, or a route under another route stop start-up naming the plugins."""
        found = cls()
        for impl in hook.hssk_http_routes.get_hookimpls():
            arguments = {"config": config}
            for route in impl.function(*(arguments[name] for name in impl.argnames)) or ():
                if not isinstance(route, HttpRoute):
                    raise RouteError(f"plugin {impl.plugin_name!r}: hssk_http_routes returned "
                                     f"{type(route).__name__}, not an HttpRoute")
                key = route.segments
                if key[0] in source_routes:
                    raise RouteError(f"plugin {impl.plugin_name!r}: route /{route.path} is under the source route "
                                     f"/{key[0].decode()}")
                clash = next((k for k in found.routes if k[:len(key)] == key or key[:len(k)] == k), None)
                if clash is not None:
                    raise RouteError(f"route /{route.path} of plugin {impl.plugin_name!r} clashes with "
                                     f"/{b'/'.join(clash).decode()} of plugin {found.owners[clash]!r}")
                found.routes[key] = route
                found.owners[key] = impl.plugin_name
        return found

    def __iter__(self) -> Iterator[HttpRoute]:
        return iter(self.routes.values())
