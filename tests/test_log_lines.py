"""The text log line the gateway writes is Twisted's classic line, character for character: the
cheaper formatter (one time stamp per second, no string.Formatter for a one-field message) must
not change what operators and their log shippers read."""
from __future__ import annotations

import pytest
from twisted.logger import LogLevel, formatEventAsClassicLogText, formatTime, timeFormatRFC3339
from twisted.python.failure import Failure

from gateway.logs import ClassicText, json_line


class _Line:
    def __str__(self) -> str:
        return "decided message 7: mllp from TEST_HIS|79001, control id MS******01, ADT^A04: CA"


class _Broken:
    def __str__(self) -> str:
        raise ValueError("no text")


def _failure() -> Failure:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return Failure()


EVENTS = {
    "one field": {"log_format": "{decided}", "decided": _Line()},
    "one str field": {"log_format": "{text}", "text": "line one\nline two"},
    "several fields": {"log_format": "refusing MLLP peer {peer}: {reason}", "peer": "127.0.0.1:5", "reason": "x"},
    "format spec": {"log_format": "{n:05d}", "n": 42},
    "missing field": {"log_format": "{absent}"},
    "unformattable": {"log_format": "{bad}", "bad": _Broken()},
    "no format": {},
    "log_system": {"log_format": "{x}", "x": "legacy", "log_system": "-"},
    "failure": {"log_format": "{x}", "x": "failed", "log_failure": _failure()},
}


@pytest.mark.parametrize("name", EVENTS)
@pytest.mark.parametrize("when", [1764968523.25, 1764968523.75, None])
def test_text_line_is_twisteds_classic_line(name, when):
    event = dict(EVENTS[name], log_namespace="hssk.intake", log_level=LogLevel.info)
    if when is not None:
        event["log_time"] = when
    expected = formatEventAsClassicLogText(event, formatTime=lambda t: formatTime(t, timeFormatRFC3339))

    assert ClassicText()(event) == expected


def test_the_time_stamp_follows_the_second_it_was_cached_for():
    text = ClassicText()
    first = {"log_format": "{x}", "x": "a", "log_time": 1764968523.9, "log_level": LogLevel.warn}
    second = dict(first, log_time=1764968524.1)

    assert text(first).split(" ")[0] == formatTime(1764968523.9, timeFormatRFC3339)
    assert text(second).split(" ")[0] == formatTime(1764968524.1, timeFormatRFC3339)


def test_json_message_of_a_one_field_event_is_the_fields_text():
    line = json_line({"log_format": "{decided}", "decided": _Line(), "log_time": 1764968523.0,
                      "log_level": LogLevel.info, "log_namespace": "hssk.intake"})

    assert '"message": "decided message 7: mllp from TEST_HIS|79001' in line
