"""A lazy view of one HL7 v2 message.

The hot path (framing → ACK) needs only the MSH. Full python-hl7 parsing costs about 1.5 ms for a
typical ADT, so :class:`Hl7Message` splits the MSH eagerly and everything else only when a plugin
asks: ``segments("PID")`` splits just the PID lines, ``parsed`` gives the full python-hl7 tree.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import hl7

from gateway.formats.charsets import codec_for

UTF8_BOM = b"\xef\xbb\xbf"


class MessageFormatError(ValueError):
    """The bytes are not an HL7 v2 message we can answer with a normal ACK (no usable MSH)."""


@dataclass(frozen=True)
class CharsetError(ValueError):
    """The message's bytes cannot be decoded with the character set it declares (or is forced to)."""

    charset: str
    segment: str
    sequence: int
    offset: int

    def __str__(self) -> str:
        return (f"bytes at offset {self.offset} ({self.segment} segment {self.sequence}) "
                f"are not valid {self.charset}")


class UnknownCharsetError(CharsetError):
    """MSH-18 or the transport's charset (an HTTP Content-Type parameter, the two ways a charset
    reaches here unchecked) names no character set the gateway decodes; see
    :func:`gateway.formats.charsets.codec_for`."""

    def __init__(self, charset: str, named_by: str = "MSH-18") -> None:
        super().__init__(charset, "MSH", 1, 0)
        self.named_by = named_by

    def __str__(self) -> str:
        return f"{self.named_by}: {self.charset[:40]!r} names no character set the gateway can decode"


class CharsetConflictError(CharsetError):
    """MSH-18 and the transport's charset name different character sets and the bytes do not read
    the same in both, so either reading may be the garbled one."""

    def __init__(self, charset: str, content_charset: str) -> None:
        super().__init__(charset, "MSH", 1, 0)
        self.content_charset = content_charset

    def __str__(self) -> str:
        return (f"MSH-18 {self.charset[:40]!r} and the Content-Type charset {self.content_charset[:40]!r} name "
                f"different character sets, and the message does not read the same in both")


class Hl7Message:
    """One decoded HL7 v2 message with its MSH split and the rest split on demand.

    The header's fields every reader asks for (sender, type, control id, version, the ack
    types) are read once here, as plain attributes: one message is asked for them dozens of
    times on its way (identify, rules, routing, rendering, the ACK), and a property that split
    MSH again each time was a measurable share of deciding a message."""

    __slots__ = ("text", "charset", "field_separator", "encoding_characters", "_msh", "_index", "_parsed", "_digest",
                 "sending_application", "sending_facility", "sender", "message_code", "trigger_event",
                 "message_type", "control_id", "processing_id", "version", "accept_ack_type",
                 "application_ack_type")

    def __init__(self, text: str, charset: str) -> None:
        if not text.startswith("MSH") or len(text) < 8:
            raise MessageFormatError("message does not start with an MSH segment")
        self.text = text
        self.charset = charset
        self.field_separator = text[3]
        end = text.find("\r")
        msh = self._msh = (text if end < 0 else text[:end]).split(self.field_separator)
        self.encoding_characters = msh[1] if len(msh) > 1 else "^~\\&"
        if len(self.encoding_characters) < 4:
            raise MessageFormatError(f"MSH-2 encoding characters {self.encoding_characters!r} are incomplete")
        self._index: dict[str, list[list[str]]] | None = None
        self._parsed = None
        self._digest: str | None = None
        component = self.encoding_characters[0]
        fields = msh + [""] * (16 - len(msh)) if len(msh) < 16 else msh
        self.sending_application = fields[2].split(component, 1)[0]
        self.sending_facility = fields[3].split(component, 1)[0]
        #: Who the sender is for duplicate detection: MSH-3 and MSH-4, first components.
        self.sender = f"{self.sending_application}|{self.sending_facility}"
        code = fields[8].split(component)
        self.message_code = code[0]
        self.trigger_event = code[1] if len(code) > 1 else ""
        #: ``ADT^A04`` style: MSH-9.1 and MSH-9.2 (the structure, MSH-9.3, is left out).
        self.message_type = f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code
        self.control_id = fields[9]
        self.processing_id = fields[10].split(component, 1)[0]
        self.version = fields[11].split(component, 1)[0]
        self.accept_ack_type = fields[14].upper()
        self.application_ack_type = fields[15].upper()

    def __reduce__(self):
        """Pickled as text, charset and digest: a decision made in a child process travels back
        without the segment index or python-hl7 tree, which the receiver rebuilds if it asks."""
        return _restored, (self.text, self.charset, self._digest)

    @classmethod
    def from_bytes(cls, raw: bytes, forced_charset: str = "", default_charset: str = "utf-8",
                   content_charset: str = "") -> Hl7Message:
        """Decode a frame's bytes: strip a UTF-8 BOM, take the charset from MSH-18 (unless the
        listener forces one), and accept CR, LF or CRLF as segment ends.

        ``content_charset`` is what the transport says the bytes are (an HTTP Content-Type's
        charset). MSH-18 comes first, since it travels with the message into the journal and a
        replay; the transport's charset stands in for an empty MSH-18, before ``default_charset``.
        When both are given and name different character sets, the bytes must read the same in
        both (pure ASCII does): Windows-1258 and Latin-1 decode any byte, so a clean decoding
        proves nothing, and only agreement shows that neither reading is garbled.

        Raises :class:`MessageFormatError` when there is no MSH, :class:`UnknownCharsetError` when
        MSH-18 or ``content_charset`` names no character set the gateway knows,
        :class:`CharsetConflictError` when the two disagree, and :class:`CharsetError` when the
        bytes do not decode; the last three still let the caller read the MSH through
        :func:`peek_header` to answer with an AE.
        """
        if raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        raw = raw.lstrip(b"\r\n")
        declared = forced_charset or _declared_charset(raw)
        if not forced_charset and content_charset:
            _check_agreement(raw, declared, content_charset)
        declared = declared or content_charset or default_charset
        codec = codec_for(declared)
        if codec is None:
            raise UnknownCharsetError(declared)
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError as e:
            segment, sequence = _segment_at(raw, e.start)
            raise CharsetError(declared, segment, sequence, e.start) from None
        return cls(normalize_segment_ends(text), declared)

    def msh(self, n: int) -> str:
        """MSH-n as sent (components still joined); MSH-1 is the field separator itself."""
        if n == 1:
            return self.field_separator
        return self._msh[n - 1] if n - 1 < len(self._msh) else ""

    @property
    def content_digest(self) -> str:
        """The message's content identity for telling a repeat from a conflict (see
        :func:`content_digest`)."""
        if self._digest is None:
            self._digest = content_digest(self.text, self.field_separator)
        return self._digest

    def _split(self) -> dict[str, list[list[str]]]:
        """Split every segment into fields, once per message; every reader shares the result."""
        index: dict[str, list[list[str]]] = {}
        ordered = []
        for line in self.text.split("\r"):
            if line:
                fields = line.split(self.field_separator)
                index.setdefault(fields[0], []).append(fields)
                ordered.append(fields)
        index[""] = ordered
        self._index = index
        return index

    def segments(self, name: str) -> list[list[str]]:
        """Every ``name`` segment split into fields, so that ``seg[3]`` is PID-3 (for MSH, ``seg[n]`` is MSH-(n+1))."""
        return (self._index or self._split()).get(name, []) if name else []

    def all_segments(self) -> list[list[str]]:
        """Every segment in message order, split into fields (``seg[0]`` is its name): for groups,
        such as an OBR and the OBX that follow it, which :meth:`segments` keeps apart. The same
        lists :meth:`segments` returns, split once."""
        return (self._index or self._split())[""]

    def field(self, segment: str, n: int, occurrence: int = 0) -> str:
        """Field ``n`` of the ``occurrence``-th ``segment``, or "" when absent."""
        if segment == "MSH":
            return self.msh(n)
        found = self.segments(segment)
        if occurrence >= len(found):
            return ""
        fields = found[occurrence]
        return fields[n] if n < len(fields) else ""

    def components(self, value: str) -> list[str]:
        return value.split(self.encoding_characters[0])

    def repetitions(self, value: str) -> list[str]:
        return value.split(self.encoding_characters[1]) if value else []

    def unescape(self, value: str) -> str:
        """Decode HL7 escape sequences (``\\F\\``, ``\\S\\``, ``\\T\\``, ``\\R\\``, ``\\E\\``, ``\\Xhh\\``, ``\\.br\\``)."""
        return unescape(value, self.field_separator, self.encoding_characters)

    @property
    def parsed(self) -> hl7.Message:
        """The full python-hl7 tree; costly, so only for plugins that need deep access."""
        if self._parsed is None:
            self._parsed = hl7.parse(self.text)
        return self._parsed


def _restored(text: str, charset: str, digest: str | None) -> Hl7Message:
    message = Hl7Message(text, charset)
    message._digest = digest
    return message


def content_digest(text: str, field_separator: str) -> str:
    """SHA-256 of a decoded message (segments ending in CR) with MSH-7 left out.

    A sender that rebuilds a message to send it again stamps a new MSH-7 (the time the message
    was made): that is still the same message. Nothing else is left out: MSH-10 is the key
    itself, and a resend that changes any other field (MSH-11 processing id, MSH-12 version,
    MSH-18 charset, a segment) says something else, so it is a conflict (AE 205). Decoded text,
    so the same message sent with CRLF or LF still matches."""
    end = text.find("\r")
    header, rest = (text, "") if end < 0 else (text[:end], text[end:])
    fields = header.split(field_separator)
    if len(fields) > 6:
        fields[6] = ""  # fields[0] is "MSH" and fields[1] is MSH-2, so MSH-7 is fields[6]
        text = field_separator.join(fields) + rest
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_segment_ends(text: str) -> str:
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return text.rstrip("\r")


def with_msh_field(text: str, separator: str, n: int, value: str) -> str:
    """``text`` with MSH-n (n >= 3) set to ``value``; the other segments are left as they are."""
    end = text.find("\r")
    header, rest = (text, "") if end < 0 else (text[:end], text[end:])
    fields = header.split(separator)
    fields += [""] * (n - len(fields))
    fields[n - 1] = value  # fields[0] is "MSH" and fields[1] is MSH-2, so MSH-n is fields[n - 1]
    return separator.join(fields) + rest


def _declared_charset(raw: bytes) -> str:
    """MSH-18 read straight from the bytes; MSH is ASCII in every charset HL7 allows."""
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        i = raw.find(terminator)
        if 0 <= i < end:
            end = i
    header = raw[:end]
    if not header.startswith(b"MSH") or len(header) < 4:
        return ""
    fields = header.split(header[3:4])
    if len(fields) < 18:
        return ""
    component = fields[1][:1] or b"^"
    value = fields[17].split(fields[1][1:2] or b"~")[0].split(component)[0]
    return value.decode("latin-1").strip()


def _check_agreement(raw: bytes, declared: str, content_charset: str) -> None:
    """Raise unless ``content_charset`` is a known charset that reads ``raw`` as MSH-18 does."""
    other = codec_for(content_charset)
    if other is None:
        raise UnknownCharsetError(content_charset, "Content-Type charset")
    codec = codec_for(declared) if declared else None
    if codec is None or codec == other:
        return
    reading = _decoded(raw, codec)
    if reading is None or reading != _decoded(raw, other):
        raise CharsetConflictError(declared, content_charset)


def _decoded(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return None


def _segment_at(raw: bytes, offset: int) -> tuple[str, int]:
    """Name and 1-based sequence of the segment holding byte ``offset``."""
    before = raw[:offset].replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    start = before.rfind(b"\r") + 1
    name = before[start:start + 3].decode("latin-1") or "MSH"
    sequence = sum(1 for line in before.split(b"\r") if line[:3] == name.encode("latin-1"))
    return name, max(sequence, 1)


def peek_header(raw: bytes, charset: str = "") -> Hl7Message | None:
    """The MSH of a frame that could not be decoded (or was cut short); enough to address an
    AE/AR back to its sender. None when there is no MSH.

    Read in ``charset`` (the one the message declares), a byte it cannot decode becoming U+FFFD,
    so the ACK mirrors the sender's own ``Thử`` rather than its bytes read as Latin-1; without a
    known charset, read as Latin-1 so that every byte maps."""
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM):]
    raw = raw.lstrip(b"\r\n")
    end = min((i for i in (raw.find(b"\r"), raw.find(b"\n")) if i >= 0), default=len(raw))
    codec = codec_for(charset) if charset else None
    try:
        if codec is None:
            return Hl7Message(raw[:end].decode("latin-1"), "latin-1")
        return Hl7Message(raw[:end].decode(codec, errors="replace"), charset)
    except MessageFormatError:
        return None


_ESCAPE = re.compile(r"\\([FSTRE]|X[0-9A-Fa-f]*|\.br)\\")


def unescape(value: str, field_separator: str = "|", encoding_characters: str = "^~\\&") -> str:
    if "\\" not in value and (len(encoding_characters) < 3 or encoding_characters[2] not in value):
        return value
    escape = encoding_characters[2] if len(encoding_characters) > 2 else "\\"
    pattern = _ESCAPE if escape == "\\" else re.compile(re.escape(escape) + r"([FSTRE]|X[0-9A-Fa-f]*|\.br)" + re.escape(escape))
    table = {"F": field_separator, "S": encoding_characters[0], "R": encoding_characters[1],
             "E": escape, "T": encoding_characters[3] if len(encoding_characters) > 3 else "&", ".br": "\n"}

    def replace(match: re.Match) -> str:
        code = match.group(1)
        if code.startswith("X"):
            try:
                return bytes.fromhex(code[1:]).decode("utf-8", errors="replace")
            except ValueError:
                return match.group(0)
        return table[code]

    return pattern.sub(replace, value)


def escape(value: str, field_separator: str = "|", encoding_characters: str = "^~\\&") -> str:
    """Escape text for use inside one HL7 field component; the escape character goes first."""
    esc = encoding_characters[2]
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in ((field_separator, "F"), (encoding_characters[0], "S"), (encoding_characters[1], "R"),
                       (encoding_characters[3], "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", f"{esc}.br{esc}").replace("\n", f"{esc}.br{esc}")
