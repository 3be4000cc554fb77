"""Builds the destination object for each ``[destinations.NAME]`` table by its ``kind``."""
from __future__ import annotations

from gateway.config import DestinationConfig
from gateway.destinations import Destination


def build_destination(config: DestinationConfig, reactor) -> Destination:
    if config.kind == "file":
        from gateway.destinations.file import FileDestination

        return FileDestination(config.name, config.directory, reactor)
    if config.kind == "http":
        from gateway.destinations.http import HttpDestination

        return HttpDestination(config, reactor)
    if config.kind == "mllp":
        from gateway.destinations.mllp import MllpDestination

        return MllpDestination(config, reactor)
    raise ValueError(f"destinations.{config.name}.kind: {config.kind!r} has no per-record delivery")
