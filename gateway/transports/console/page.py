"""What a console page handler works with: the request, the admin API's :meth:`perform` (the one
way the console reads or changes anything), the session, and the words of the chosen language."""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import quote

from twisted.web.server import Request

from gateway.transports.admin import AdminResource
from gateway.transports.console.markup import Markup, tag
from gateway.transports.console.sessions import Session

#: Where the console is mounted; every link is absolute under it.
BASE = "/admin/ui/"


@dataclass(frozen=True)
class Shown:
    """A page to answer with: its title, its body and the HTTP status."""

    title: str
    body: Markup
    code: int = 200


@dataclass(frozen=True)
class Redirect:
    """A 303 to another console page (POST, then GET: a reload does not repeat the action)."""

    to: str


@dataclass
class Page:
    request: Request
    admin: AdminResource
    session: Session | None
    language: str
    words: dict[str, str]

    def t(self, key: str, **values: object) -> str:
        """The catalogue's text for ``key`` in the page's language, ``values`` filled in."""
        text = self.words[key]
        return text.format(**values) if values else text

    async def ask(self, method: str, path: str, **params: object) -> dict:
        """The admin operation ``method path``, as ``/admin/path?params`` would run it: the same
        checks, the same writes, the same log lines. Empty parameters are left out."""
        query = {name: [str(value)] for name, value in params.items() if value not in (None, "")}
        return await self.admin.perform(self.request, method, path, query)

    def flash(self, kind: str, text: str) -> None:
        """A note for the next page this session sees (``ok`` or ``error``)."""
        if self.session is not None:
            self.session.flash.append((kind, text))

    def button(self, action: str, label: str, back: str, *fields: Markup, danger: bool = False) -> Markup:
        """A POST form of one button (plus ``fields``) carrying the session's CSRF token and the
        page to come back to."""
        return tag("form", hidden("csrf", self.session.csrf if self.session else ""), hidden("back", back),
                   *fields, tag("button", label, type="submit", class_="danger" if danger else None),
                   method="post", action=BASE + action, class_="inline")


def hidden(name: str, value: str) -> Markup:
    return tag("input", type="hidden", name=name, value=value)


def segment(value: object) -> str:
    """``value`` as one path segment of a console or admin URL."""
    return quote(str(value), safe="")


def link(path: str, text: object) -> Markup:
    return tag("a", text, href=BASE + path)


def when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def age(seconds: float | None) -> str:
    if not seconds:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    return "".join(parts) + f"{minutes}m{secs:02d}s"
