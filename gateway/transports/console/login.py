"""The sign-in page, and the paragraph every refusal or error page shows."""
from __future__ import annotations

from gateway.transports.console.markup import Markup, join, tag
from gateway.transports.console.page import BASE, Page, Shown, hidden

#: The login form's own CSRF token, repeated in its ``login_csrf`` field.
COOKIE = b"hssk_console_login"


def form(page: Page, login_token: str, error: str = "", code: int = 200) -> Shown:
    token_required = page.admin.token_required
    fields = [hidden("login_csrf", login_token)]
    if token_required:
        fields.append(tag("label", page.t("admin_token"),
                          tag("input", type="password", name="token", autocomplete="current-password",
                              required=True, autofocus=True)))
    intro = page.t("login_token_intro" if token_required else "login_loopback_intro")
    body = join(problem(error) if error else "", tag("p", intro),
                tag("form", tag("div", fields, class_="fields"), tag("button", page.t("sign_in"), type="submit"),
                    method="post", action=BASE + "login", id="login"))
    return Shown(page.t("sign_in"), body, code)


def problem(message: str) -> Markup:
    return tag("p", message, class_="error", role="alert")
