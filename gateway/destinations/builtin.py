"""The built-in destination kinds, registered as a plugin through ``hssk_destination_kinds``
like any other kind, so the gateway has no list of kinds of its own:

``http``    POST each record set to a record store (:mod:`gateway.destinations.http`)
``file``    drop each payload as a file in a folder (:mod:`gateway.destinations.file`)
``mllp``    forward each HL7 message to an MLLP receiver (:mod:`gateway.destinations.mllp`)
``batch``   collect a period's rows into one file for a folder or a URL (:mod:`gateway.core.batch`)
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.config import ConfigError, DestinationConfig
from gateway.core.batch import BatchSettings
from gateway.core.destination import Destination
from gateway.core.destination_kinds import DestinationContext, DestinationKind
from gateway.destinations.file import FileDestination, FileSettings, check_file
from gateway.destinations.http import HttpDestination, HttpSettings, check_http, check_url
from gateway.destinations.mllp import MllpDestination, MllpSettings, check_mllp
from gateway.model.hooks import hookimpl


@dataclass(frozen=True)
class BatchDestinationSettings(HttpSettings, BatchSettings):
    """A ``batch`` destination's keys: its schedule and file format, and one sink, a folder
    (``directory``, written as a ``file`` destination writes) or a URL (the ``http`` keys)."""

    directory: str = ""


def check_batch(destination: DestinationConfig, settings: BatchDestinationSettings) -> None:
    if bool(settings.url) == bool(settings.directory):
        raise ConfigError(destination.key("url"),
                          "a batch destination needs exactly one sink: url (http) or directory (file)")
    if settings.url:
        check_url(settings.url, destination.key("url"))


def build_http(destination: DestinationConfig, settings: HttpSettings, context: DestinationContext) -> Destination:
    return HttpDestination(destination, settings, context.reactor)


def build_file(destination: DestinationConfig, settings: FileSettings, context: DestinationContext) -> Destination:
    return FileDestination(destination.name, context.directory(settings.directory), context.reactor)


def build_mllp(destination: DestinationConfig, settings: MllpSettings, context: DestinationContext) -> Destination:
    return MllpDestination(destination, settings, context.reactor, context.clock)


def build_batch_sink(destination: DestinationConfig, settings: BatchDestinationSettings,
                     context: DestinationContext) -> Destination:
    """Where a period's file goes: the folder, or the URL (``check_batch`` makes it one of the two)."""
    if settings.directory:
        return FileDestination(destination.name, context.directory(settings.directory), context.reactor)
    return HttpDestination(destination, settings, context.reactor)


KINDS = (
    DestinationKind("http", HttpSettings, build_http, check_http),
    DestinationKind("file", FileSettings, build_file, check_file),
    DestinationKind("mllp", MllpSettings, build_mllp, check_mllp),
    DestinationKind("batch", BatchDestinationSettings, build_batch_sink, check_batch, batched=True),
)


@hookimpl
def hssk_destination_kinds() -> tuple[DestinationKind, ...]:
    return KINDS
