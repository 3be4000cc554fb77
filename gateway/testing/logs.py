"""What the gateway logs while a test runs, rendered exactly as production writes it.

The gateway logs through ``twisted.logger``; :class:`LogCapture` observes every event and renders
it with the JSON-lines formatter ``log_format = "json"`` uses (message and traceback), so a test
that finds no CCCD in :attr:`LogCapture.text` has looked at what an operator's log collector would
receive, not at the events' raw fields (which are never written).
"""
from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import globalLogPublisher

from gateway.logs import json_line
from gateway.model.masking import mask_identifier


class LogCapture:
    """Collects log events from :meth:`start` to :meth:`stop`."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def start(self) -> LogCapture:
        globalLogPublisher.addObserver(self.events.append)
        return self

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    @property
    def text(self) -> str:
        """Every event as the line the gateway would write for it."""
        return "".join(json_line(event) for event in self.events)

    def lines_with(self, value: str) -> list[str]:
        return [line for line in self.text.splitlines() if value in line]

    def assert_not_logged(self, values: Iterable[str]) -> None:
        """None of ``values`` (identifiers, names) appears in any rendered line; the assertion
        names the value masked and quotes the first line that leaked it, masked too."""
        for value in values:
            leaked = self.lines_with(value)
            if leaked:
                raise AssertionError(f"{mask_identifier(value)!r} reached the log in {len(leaked)} line(s), e.g. "
                                     f"{leaked[0].replace(value, mask_identifier(value))}")
