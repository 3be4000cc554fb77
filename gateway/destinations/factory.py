"""Builds the destination object for each ``[destinations.NAME]`` table by its ``kind``."""
from __future__ import annotations

from pathlib import Path

from gateway.config import DestinationConfig
from gateway.destinations import Destination


def resolve_directory(directory: str, data_dir: str) -> Path:
    """A relative ``directory`` lives under the data dir, next to the journal it is fed from."""
    path = Path(directory)
    return path if path.is_absolute() else Path(data_dir) / path


def build_destination(config: DestinationConfig, reactor, data_dir: str) -> Destination:
    if config.kind == "file":
        from gateway.destinations.file import FileDestination

        return FileDestination(config.name, resolve_directory(config.directory, data_dir), reactor)
    if config.kind == "http":
        from gateway.destinations.http import HttpDestination

        return HttpDestination(config, reactor)
    if config.kind == "mllp":
        from gateway.destinations.mllp import MllpDestination

        return MllpDestination(config, reactor)
    raise ValueError(f"destinations.{config.name}.kind: {config.kind!r} has no per-record delivery")


def build_batch_sink(config: DestinationConfig, reactor, data_dir: str) -> Destination:
    """Where a ``batch`` destination hands its period file: a folder (``directory``, written
    like a ``file`` destination) or a URL (``url``, posted like an ``http`` destination).
    Config validation guarantees exactly one of the two is set."""
    if config.directory:
        from gateway.destinations.file import FileDestination

        return FileDestination(config.name, resolve_directory(config.directory, data_dir), reactor)
    from gateway.destinations.http import HttpDestination

    return HttpDestination(config, reactor)
