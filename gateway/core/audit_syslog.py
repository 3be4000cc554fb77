"""A copy of each audit entry to a syslog collector (RFC 5424), so the newest entries have a
witness on another host: a hash chain shows an entry deleted or edited in its middle, not its
tail cut off.

``audit.syslog`` is ``udp:HOST:PORT`` (one datagram per entry, RFC 5426) or ``tcp:HOST:PORT``
(octet-counted frames on one connection, RFC 6587 §3.4.1, opened again after a failure). The
facility is authpriv (10); a refusal is a notice, everything else informational. The entry's
fields are structured data ``[audit@32473 …]`` (32473 is the documentation enterprise number
of RFC 5612), the message its digest, so a collector can check the copy against the chain.

Sending blocks (a TCP connect, a full buffer): the gateway calls :meth:`SyslogSink.send` from
its thread pool, the CLI directly. A collector that is down costs a logged error and the
metric, never the audit entry itself, which is in the journal already.
"""
from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timezone

from twisted.logger import Logger

log = Logger(namespace="hssk.audit")

AUTHPRIV = 10
NOTICE, INFO = 5, 6
SD_ID = "audit@32473"
#: Seconds a TCP connect or send may take.
TIMEOUT = 5.0


class SyslogAddressError(ValueError):
    """``audit.syslog`` is not ``udp:HOST:PORT`` or ``tcp:HOST:PORT``."""


def parse_address(text: str) -> tuple[str, str, int]:
    """(protocol, host, port) of ``udp:HOST:PORT`` / ``tcp:HOST:PORT`` (an IPv6 host in brackets)."""
    protocol, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if protocol not in ("udp", "tcp") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SyslogAddressError(f"{text!r} is not udp:HOST:PORT or tcp:HOST:PORT (e.g. udp:10.0.0.5:514)")
    return protocol, host, int(port)


def _param(value: object) -> str:
    """An SD-PARAM value: ``"``, ``\\`` and ``]`` escaped (RFC 5424 §6.3.3)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _name(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, ``-`` if empty."""
    kept = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return kept or "-"


def frame(row: dict, hostname: str, app_name: str, procid: int) -> bytes:
    """One audit entry as an RFC 5424 message (without transport framing)."""
    severity = NOTICE if row["outcome"] != "ok" else INFO
    stamp = datetime.fromtimestamp(row["at"], timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    params = " ".join(f'{key}="{_param(row[key])}"' for key in ("id", "surface", "actor", "peer", "action", "target",
                                                               "outcome", "reason", "prev_hash"))
    header = (f"<{AUTHPRIV * 8 + severity}>1 {stamp} {_name(hostname, 255)} {_name(app_name, 48)} {procid} "
              f"{_name(row['action'], 32)}")
    return f"{header} [{SD_ID} {params}] {row['hash']}".encode("utf-8")


class SyslogSink:
    """Sends frames to one collector; thread-safe (one lock around the socket)."""

    def __init__(self, address: str, app_name: str = "hssk-gateway", hostname: str | None = None) -> None:
        self.protocol, self.host, self.port = parse_address(address)
        self.app_name = app_name
        self.hostname = hostname or socket.gethostname()
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, rows: list[dict]) -> None:
        """Copy ``rows``; a failure is logged (the entries are in the journal) and the next send
        connects again."""
        frames = [frame(row, self.hostname, self.app_name, os.getpid()) for row in rows]
        with self._lock:
            try:
                if self.protocol == "udp":
                    self._send_udp(frames)
                else:
                    self._send_tcp(frames)
            except OSError as e:
                self.close()
                log.error("could not copy {count} audit entries to syslog {protocol}:{host}:{port}: {error}",
                          count=len(frames), protocol=self.protocol, host=self.host, port=self.port, error=str(e))

    def _send_udp(self, frames: list[bytes]) -> None:
        if self._socket is None:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0][0]
            self._socket = socket.socket(family, socket.SOCK_DGRAM)
        for data in frames:
            self._socket.sendto(data, (self.host, self.port))

    def _send_tcp(self, frames: list[bytes]) -> None:
        if self._socket is None:
            self._socket = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        self._socket.sendall(b"".join(str(len(data)).encode("ascii") + b" " + data for data in frames))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
