"""FrameDecoder on its own: what a read sequence yields, whatever the reads' boundaries."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.formats.framing import FrameDecoder, Violation, wrap

LIMIT = 1 << 20

payloads = st.lists(st.binary(max_size=200).filter(lambda b: b"\x0b" not in b and b"\x1c" not in b), max_size=8)
junk_bytes = st.binary(min_size=1, max_size=50).filter(lambda b: b"\x0b" not in b)


def feed_all(decoder: FrameDecoder, reads: list[bytes]) -> tuple[list[bytes], list[Violation]]:
    frames, violations = [], []
    for read in reads:
        for item in decoder.feed(read):
            (violations if isinstance(item, Violation) else frames).append(item)
    return frames, violations


def split(data: st.DataObject, stream: bytes) -> list[bytes]:
    """The stream cut at points hypothesis picks (possibly none, possibly every byte)."""
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=len(stream) + 1))
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(payloads, st.data())
def test_any_split_of_the_stream_yields_the_frames_of_one_whole_read(frames, data):
    stream = b"".join(wrap(p) for p in frames)

    whole, whole_violations = feed_all(FrameDecoder(LIMIT), [stream])
    pieces, piece_violations = feed_all(FrameDecoder(LIMIT), split(data, stream))

    assert whole == frames
    assert pieces == whole
    assert whole_violations == [] and piece_violations == []


@settings(max_examples=300, deadline=None)
@given(junk_bytes, payloads, st.data())
def test_junk_before_the_first_start_block_is_skipped_and_counted_byte_for_byte(junk, frames, data):
    stream = junk + b"".join(wrap(p) for p in frames)

    got, violations = feed_all(FrameDecoder(LIMIT), split(data, stream))

    assert got == frames
    assert {v.kind for v in violations} == {"junk_before_start_block"}
    assert sum(v.count for v in violations) == len(junk)


def test_one_byte_per_feed_yields_each_frame_once():
    first, second = b"MSH|^~\\&|A\rPID|1", b"MSH|^~\\&|B\rPID|2"
    stream = wrap(first) + wrap(second)

    frames, violations = feed_all(FrameDecoder(LIMIT), [stream[i:i + 1] for i in range(len(stream))])

    assert frames == [first, second]
    assert violations == []


def test_frame_is_yielded_at_its_end_block_before_the_trailing_cr_arrives():
    decoder = FrameDecoder(LIMIT)

    assert decoder.feed(b"\x0bMSH|1\x1c") == [b"MSH|1"]
    assert decoder.feed(b"\r") == []


def test_missing_trailing_cr_is_counted_when_the_next_frame_follows_directly():
    frames, violations = feed_all(FrameDecoder(LIMIT), [b"\x0bMSH|1\x1c\x0bMSH|2\x1c\r"])

    assert frames == [b"MSH|1", b"MSH|2"]
    assert violations == [Violation("missing_trailing_cr")]


def test_pending_holds_the_start_of_an_unfinished_frame_only():
    decoder = FrameDecoder(LIMIT)
    decoder.feed(wrap(b"MSH|done"))
    assert decoder.pending == b""

    decoder.feed(b"\x0bMSH|half")

    assert decoder.pending == b"MSH|half"


def test_frame_over_the_limit_is_reported_once_and_the_decoder_stops():
    decoder = FrameDecoder(10)

    first = decoder.feed(b"\x0bMSH|" + b"x" * 20)
    later = decoder.feed(b"\x1c\r" + wrap(b"MSH|ok"))

    assert [v.kind for v in first] == ["frame_too_large"]
    assert first[0].head.startswith(b"MSH|")
    assert later == []


def test_frame_of_exactly_the_limit_is_accepted():
    decoder = FrameDecoder(10)

    assert decoder.feed(wrap(b"0123456789")) == [b"0123456789"]
