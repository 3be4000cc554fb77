"""The frame around every console page: navigation, the language switch, sign-out, the notes the
last action left, and a little CSS. No script at all: the Content-Security-Policy says so."""
from __future__ import annotations

from urllib.parse import urlencode

from gateway.transports.console.markup import Markup, join, tag
from gateway.transports.console.page import BASE, Page, Shown, hidden

#: Navigation: (path, catalogue key).
NAVIGATION = (("destinations", "destinations"), ("messages", "messages"), ("dead-letters", "dead_letters"),
              ("reviews", "reviews"))
LANGUAGES = (("vi", "Tiếng Việt"), ("en", "English"))

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#0b4f6c;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;font-weight:600}header a.current{text-decoration:underline}
header .brand{font-size:1.1rem;margin-right:1rem}header .right{margin-left:auto;display:flex;gap:.8rem}
main{padding:1rem 1.4rem}h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin-top:1.4rem}
table{border-collapse:collapse;background:#fff;margin:.4rem 0;font-size:.92rem}
th,td{border:1px solid #cfd6dd;padding:.3rem .55rem;text-align:left;vertical-align:top}th{background:#e6ebef}
form.inline{display:inline;margin:0}button{background:#0b6e4f;color:#fff;border:0;border-radius:3px;
padding:.3rem .7rem;cursor:pointer}button.danger{background:#a4262c}
.fields{display:flex;flex-wrap:wrap;gap:.6rem;margin-bottom:.6rem}label{display:flex;flex-direction:column;
font-size:.85rem;gap:.15rem}.flash{padding:.5rem .8rem;margin-bottom:.8rem;border-radius:3px}
.flash.ok{background:#d8f0e3}.flash.error,.error{background:#f8d7d9;padding:.5rem .8rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;background:#fff;padding:.6rem;
border:1px solid #cfd6dd}dt{font-weight:600}dd{margin:0}pre{background:#fff;border:1px solid #cfd6dd;
padding:.6rem;overflow:auto}.state.paused{color:#a4262c;font-weight:600}.state.running{color:#0b6e4f}
.review{background:#fff;border:1px solid #cfd6dd;padding:.4rem .8rem;margin-bottom:1rem}.actions{margin:1rem 0}
.note{color:#555;font-size:.85rem}label.choice{flex-direction:row;align-items:center;gap:.4rem;margin:.3rem 0}
"""


def document(page: Page, shown: Shown, current: str) -> bytes:
    """The page as UTF-8 HTML; ``current`` is the console path shown (for the language switch)."""
    head = tag("head", tag("meta", charset="utf-8"), tag("meta", name="viewport", content="width=device-width"),
               tag("title", f"{shown.title} · HSSK Gateway"), tag("style", Markup(STYLE)))
    body = tag("body", _header(page, current), tag("main", tag("h1", shown.title), _flash(page), shown.body))
    return ("<!DOCTYPE html>\n" + tag("html", head, body, lang=page.language)).encode("utf-8")


def _header(page: Page, current: str) -> Markup:
    signed_in = page.session is not None
    nav = [tag("a", page.t(key), href=BASE + path, class_="current" if current.startswith(path) else None)
           for path, key in NAVIGATION] if signed_in else []
    switch = [tag("a", name, href=BASE + "language?" + urlencode({"to": code, "back": current}), lang=code,
                  class_="current" if code == page.language else None) for code, name in LANGUAGES]
    logout = tag("form", hidden("csrf", page.session.csrf), tag("button", page.t("sign_out"), type="submit"),
                 method="post", action=BASE + "logout", class_="inline") if signed_in else ""
    return tag("header", tag("span", "HSSK Gateway", class_="brand"), nav,
               tag("span", join(*switch), logout, class_="right"))


def _flash(page: Page) -> Markup:
    if page.session is None or not page.session.flash:
        return Markup("")
    notes, page.session.flash = page.session.flash, []
    return join(*[tag("div", text, class_=f"flash {kind}", role="status") for kind, text in notes])
