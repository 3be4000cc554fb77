"""``file`` destination: each payload becomes one file in a folder, written atomically.

The file is named after the idempotency key, so a redelivery after a crash rewrites the same
file instead of adding a second one. Write, fsync, rename, fsync the folder: a reader never
sees half a file, and a power cut never loses one that was reported delivered.
"""
from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from gateway.config import ConfigError, DestinationConfig
from gateway.core.destination import DEAD, DELIVERED, RETRY, Delivery, DeliveryResult

_EXTENSIONS = {"application/json": ".json", "application/xml": ".xml", "text/xml": ".xml",
               "application/fhir+json": ".json", "application/x-ndjson": ".ndjson", "application/hl7-v2": ".hl7"}


@dataclass(frozen=True)
class FileSettings:
    """The keys of a ``file`` destination's table."""

    #: The folder payload files are written to; a relative one is under ``data_dir``.
    directory: str = ""


def check_file(destination: DestinationConfig, settings: FileSettings) -> None:
    if not settings.directory:
        raise ConfigError(destination.key("directory"), "is required: the folder payload files are written to")


def extension_for(content_type: str) -> str:
    media = content_type.split(";")[0].strip().lower()
    return _EXTENSIONS.get(media) or mimetypes.guess_extension(media) or ".bin"


def write_atomically(directory: Path, name: str, body: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    temporary = directory / f".{name}.tmp"
    with open(temporary, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, final)
    folder = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return final


class FileDestination:
    def __init__(self, name: str, directory: str | Path, reactor) -> None:
        self.name = name
        self.directory = Path(directory)
        self._reactor = reactor

    def deliver(self, delivery: Delivery) -> Deferred:
        name = f"{delivery.idempotency_key}{extension_for(delivery.content_type)}"
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), write_atomically, self.directory, name,
                              delivery.payload)
        d.addCallbacks(lambda _: DeliveryResult(DELIVERED, "written"), self._failed)
        return d

    def _failed(self, failure) -> DeliveryResult:
        error = failure.value
        if isinstance(error, PermissionError | IsADirectoryError | NotADirectoryError):
            return DeliveryResult(DEAD, "io_error", f"cannot write into {self.directory}: {error}")
        return DeliveryResult(RETRY, "io_error", f"writing into {self.directory} failed: {error}")

    def close(self) -> Deferred:
        return succeed(None)
