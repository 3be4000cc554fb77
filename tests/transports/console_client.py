"""A browser without a browser for the console's plain HTTP tests: urllib with a cookie jar, each
request on a worker thread so the gateway keeps running on the reactor meanwhile."""
from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from html import unescape
from urllib.parse import urlencode

from twisted.internet import reactor, threads


@dataclass
class Answer:
    code: int
    url: str
    headers: object
    text: str

    def field(self, name: str) -> str:
        """The value of the first input named ``name`` in the page."""
        found = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', self.text)
        assert found, f"no field {name} in {self.url}"
        return unescape(found.group(1))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class ConsoleClient:
    def __init__(self, base: str, follow_redirects: bool = True) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        handlers = [urllib.request.HTTPCookieProcessor(self.cookies)]
        if not follow_redirects:
            handlers.append(_NoRedirect())
        self._opener = urllib.request.build_opener(*handlers)

    def _open(self, request: urllib.request.Request) -> Answer:
        try:
            with self._opener.open(request, timeout=30) as response:
                return Answer(response.status, response.url, response.headers, response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.url, e.headers, e.read().decode("utf-8"))

    def get(self, path: str, headers: dict[str, str] | None = None):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), self._open,
                                         urllib.request.Request(self.base + path, headers=headers or {}))

    def post(self, path: str, fields: dict[str, str]):
        request = urllib.request.Request(self.base + path, data=urlencode(fields).encode("utf-8"), method="POST",
                                         headers={"content-type": "application/x-www-form-urlencoded"})
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), self._open, request)

    async def sign_in(self, token: str = "") -> Answer:
        form = await self.get("login")
        return await self.post("login", {"login_csrf": form.field("login_csrf"), "token": token})
