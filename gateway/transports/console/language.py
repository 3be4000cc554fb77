"""Which language a console page speaks: the one the operator picked (a cookie the language switch
sets), else the first of Vietnamese and English the browser's Accept-Language asks for, else
Vietnamese. The words are in one catalogue module per language, with the same keys."""
from __future__ import annotations

from twisted.web.server import Request

from gateway.transports.console import text_en, text_vi
from gateway.transports.web import header

CATALOGUES = {"vi": text_vi.TEXT, "en": text_en.TEXT}
DEFAULT = "vi"
COOKIE = b"hssk_console_lang"


def chosen(request: Request) -> str:
    picked = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
    if picked in CATALOGUES:
        return picked
    return accepted(header(request, "accept-language"))


def accepted(accept_language: str) -> str:
    """The catalogue's language the header prefers (``en-US,en;q=0.9,vi;q=0.8`` → ``en``)."""
    best, best_q = DEFAULT, 0.0
    for item in accept_language.split(","):
        tag, _, params = item.strip().partition(";")
        language = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Equal weights: the earlier one wins (the header's order is the browser's preference).
        if language in CATALOGUES and q > best_q:
            best, best_q = language, q
    return best
