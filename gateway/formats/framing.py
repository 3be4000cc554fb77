"""MLLP frame decoding, kept free of sockets so that it can be proven on its own.

A frame is ``<VT> payload <FS><CR>``. Real senders are sloppy, so the decoder tolerates what does
not lose data and counts it: bytes before a start block are skipped, and a frame whose FS is not
followed by CR is still a frame. What would lose data — a frame larger than the bound — is
reported so that the connection can be refused.
"""
from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"


@dataclass(frozen=True)
class Violation:
    """A framing problem. ``kind`` is a metrics label: ``junk_before_start_block``,
    ``missing_trailing_cr`` (both tolerated) or ``frame_too_large`` (fatal for the connection)."""

    kind: str
    count: int = 1
    head: bytes = b""


def wrap(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class FrameDecoder:
    """Feed it the bytes of each read; it returns the complete frames (bytes) and violations.

    The scan position is remembered, so a 2 MiB frame arriving one byte per read is still scanned
    once, not once per byte.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._scanned = 0
        self._expect_cr = False
        self._failed = False

    @property
    def pending(self) -> bytes:
        """The start of an unfinished frame (for an AR at idle timeout), else b""."""
        return bytes(self._buffer[:4096]) if self._in_frame else b""

    def feed(self, data: bytes) -> list[bytes | Violation]:
        if self._failed:
            return []
        out: list[bytes | Violation] = []
        buf = self._buffer
        buf += data
        pos = 0
        while pos < len(buf):
            if self._expect_cr:
                self._expect_cr = False
                if buf[pos] == 0x0D:
                    pos += 1
                    continue
                out.append(Violation("missing_trailing_cr"))
            if not self._in_frame:
                start = buf.find(START_BLOCK, pos)
                if start < 0:
                    out.append(Violation("junk_before_start_block", len(buf) - pos))
                    pos = len(buf)
                    break
                if start > pos:
                    out.append(Violation("junk_before_start_block", start - pos))
                pos = start + 1
                self._in_frame = True
                self._scanned = pos
            end = buf.find(END_BLOCK, max(self._scanned, pos))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) - pos > self.max_frame_bytes:
                    self._failed = True
                    out.append(Violation("frame_too_large", head=bytes(buf[pos:pos + 4096])))
                    buf.clear()
                    return out
                break
            if end - pos > self.max_frame_bytes:
                self._failed = True
                out.append(Violation("frame_too_large", head=bytes(buf[pos:pos + 4096])))
                buf.clear()
                return out
            out.append(bytes(buf[pos:end]))
            pos = end + 1
            self._in_frame = False
            self._expect_cr = True
        del buf[:pos]
        if self._in_frame:
            self._scanned -= pos
        return out
