"""HTML built in Python with every value escaped unless it is :class:`Markup` already, so a field
a sender wrote (``<script>`` in a control id) reaches the browser as text. Small on purpose: the
console's pages are tables and forms, and a template engine would be one more thing to learn."""
from __future__ import annotations

import html
from collections.abc import Iterable

#: Elements without content or end tag.
_VOID = frozenset({"input", "meta", "br", "hr", "link"})


class Markup(str):
    """Text that is HTML already (made by :func:`tag` or :func:`join`); never data."""


def escape(value: object) -> Markup:
    """``value`` as HTML text: markup as it is, anything else escaped (quotes included)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def tag(element: str, /, *children: object, **attributes: object) -> Markup:
    """``<element attributes>children</element>``. An attribute named with a trailing ``_`` (``class_``,
    ``for_``) loses it and ``_`` inside becomes ``-``; True is a bare attribute, None and False
    leave it out."""
    parts = [element]
    for key, value in attributes.items():
        if value is None or value is False:
            continue
        attribute = key.rstrip("_").replace("_", "-")
        parts.append(attribute if value is True else f'{attribute}="{escape(value)}"')
    opening = f"<{' '.join(parts)}>"
    if element in _VOID:
        return Markup(opening)
    return Markup(f"{opening}{join(*children)}</{element}>")


def join(*children: object) -> Markup:
    """The children one after another, each escaped unless markup; a list or tuple is flattened."""
    return Markup("".join(escape(c) if not isinstance(c, list | tuple) else join(*c) for c in children))


def table(headings: Iterable[str], rows: Iterable[Iterable[object]], **attributes: object) -> Markup:
    head = tag("thead", tag("tr", [tag("th", h) for h in headings]))
    return tag("table", head, tag("tbody", [tag("tr", [tag("td", cell) for cell in row]) for row in rows]),
               **attributes)
