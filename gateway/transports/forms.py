"""HTML form bodies (``application/x-www-form-urlencoded``, ``multipart/form-data``), read only
where a form is expected and never on the reactor.

twisted.web parses the form body of every POST before any resource sees it, whatever the path:
one 29 MB urlencoded POST to ``/healthz`` held the reactor, and with it all intake, for 5–7 s.
:class:`gateway.transports.http.BoundedRequest` therefore leaves bodies alone, and the one
endpoint family that takes a form (the BHXH portal's) hands the body to :func:`parse_form` on a
thread. The number of fields is bounded too, so a body of a million empty fields is refused
before it becomes a million-entry dict.

    >>> parse_form(b"maCSKCB=79025&loaiHoSo=130&hoTen=Nguy%E1%BB%85n", "application/x-www-form-urlencoded", 10)
    {'maCSKCB': '79025', 'loaiHoSo': '130', 'hoTen': 'Nguyễn'}
"""
from __future__ import annotations

from email import policy
from email.parser import BytesParser
from urllib.parse import parse_qs

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class FormError(ValueError):
    """The body is not a form the endpoint can read; the text says why, for the sender."""


def parse_form(body: bytes, content_type: str, max_fields: int) -> dict[str, str]:
    """The form's fields, the first value of each, as text (UTF-8, a bad byte replaced).

    Runs on a worker thread: a form may be as large as ``http.max_body_bytes``."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == URLENCODED:
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise FormError("an urlencoded form is ASCII: percent-encode other bytes (UTF-8)") from None
        try:
            fields = parse_qs(text, keep_blank_values=True, max_num_fields=max_fields, errors="replace")
        except ValueError:
            raise FormError(f"the form has more than {max_fields} fields") from None
        return {name.strip(): values[0].strip() for name, values in fields.items()}
    if media_type == MULTIPART:
        return _multipart(body, content_type, max_fields)
    raise FormError(f"content type {media_type or '(none)'!r} is not a form; send {URLENCODED} or {MULTIPART}")


def _multipart(body: bytes, content_type: str, max_fields: int) -> dict[str, str]:
    header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise FormError("the multipart/form-data body has no parts (is the boundary parameter right?)")
    fields: dict[str, str] = {}
    for n, part in enumerate(message.iter_parts()):
        if n >= max_fields:
            raise FormError(f"the form has more than {max_fields} fields")
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and name not in fields:
            fields[name] = _text(part.get_payload(decode=True) or b"")
    return fields


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace").strip()
