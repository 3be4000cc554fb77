"""Just enough PNG reading to tell a screenshot shows something: its size, and how much its pixels
vary (a blank page is one colour). 8-bit RGB and RGBA, non-interlaced: what Chromium writes."""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    #: Rows of pixel bytes, unfiltered, ``channels`` bytes a pixel.
    rows: list[bytes]
    channels: int

    def grey_variance(self) -> float:
        """The variance of the pixels' mean of R, G and B (0 for a page of one colour)."""
        total = squares = count = 0
        c = self.channels
        for row in self.rows:
            for x in range(0, len(row), c):
                v = (row[x] + row[x + 1] + row[x + 2]) / 3
                total += v
                squares += v * v
                count += 1
        mean = total / count
        return squares / count - mean * mean

    def distinct_colours(self, limit: int = 64) -> int:
        seen: set[bytes] = set()
        c = self.channels
        for row in self.rows[:: max(1, self.height // 60)]:
            for x in range(0, len(row), c * 7):
                seen.add(row[x:x + 3])
                if len(seen) >= limit:
                    return len(seen)
        return len(seen)


def read_png(path: Path) -> Image:
    data = path.read_bytes()
    assert data[:8] == SIGNATURE, f"{path} is not a PNG"
    position, idat, header = 8, [], None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunk = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, previous = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        _unfilter(kind, line, previous, channels)
        rows.append(bytes(line))
        previous = line
    return Image(width, height, rows, channels)


def _unfilter(kind: int, line: bytearray, up: bytes, bpp: int) -> None:
    n = len(line)
    if kind == 1:
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif kind == 2:
        for i in range(n):
            line[i] = (line[i] + up[i]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + up[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = up[i]
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
