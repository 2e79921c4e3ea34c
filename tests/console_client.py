"""A minimal browser for the console's HTTP-level tests: a cookie jar,
redirects followed across the service and the stand-in LMS, forms posted
with the XSRF token the page carries."""

from __future__ import annotations

import http.cookies
import re
import urllib.parse
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

CONSOLE = {"client_id": "edx-hooks-console", "client_secret": "console-client-secret"}


class Browser:
    def __init__(self) -> None:
        self.http = AsyncHTTPClient(force_instance=True)
        #: cookies by host:port, then name
        self.jar: dict[str, dict[str, str]] = {}
        self.visited: list[str] = []
        self.last: HTTPResponse | None = None

    def close(self) -> None:
        self.http.close()

    def cookies(self, url: str) -> dict[str, str]:
        return self.jar.setdefault(urllib.parse.urlsplit(url).netloc, {})

    async def fetch(self, url: str, method: str = "GET", form: dict[str, Any] | None = None,
                    follow: bool = True) -> HTTPResponse:
        for _ in range(10):
            self.visited.append(url)
            jar = self.cookies(url)
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
            body = None
            if method == "POST":
                body = urllib.parse.urlencode(form or {}, doseq=True)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            response = await self.http.fetch(HTTPRequest(url, method=method, body=body,
                                                         headers=headers,
                                                         follow_redirects=False),
                                             raise_error=False)
            for line in response.headers.get_list("Set-Cookie"):
                cookie = http.cookies.SimpleCookie(line)
                for name, morsel in cookie.items():
                    if morsel["max-age"] == "0" or "1970" in morsel["expires"] \
                            or not morsel.value or morsel.value == '""':
                        jar.pop(name, None)
                    else:
                        jar[name] = morsel.value
            self.last = response
            if follow and response.code in (301, 302, 303):
                url = urllib.parse.urljoin(url, response.headers["Location"])
                method, form = "GET", None
                continue
            return response
        raise AssertionError(f"too many redirects: {self.visited[-10:]}")

    def text(self, response: HTTPResponse | None = None) -> str:
        return ((response or self.last).body or b"").decode()

    def moved(self, old: str, new: str) -> None:
        """The service came back on another port: the browser's cookies go along."""
        self.jar[urllib.parse.urlsplit(new).netloc] = dict(self.cookies(old))

    async def submit(self, url: str, extra: dict[str, Any] | None = None,
                     xsrf: bool = True, form: str = r"<main>.*?") -> HTTPResponse:
        """Open the page at ``url`` and send its form (by default the one in
        the page's body: the confirmation)."""
        page = await self.fetch(url)
        assert page.code == 200, self.text(page)
        html = self.text(page)
        action = re.search(form + r'<form[^>]* method="post" action="([^"]+)"', html, re.S)
        assert action, html
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                                 html[action.start():]))
        if not xsrf:
            fields.pop("_xsrf", None)
        fields.update(extra or {})
        return await self.fetch(urllib.parse.urljoin(url, action.group(1)), "POST", fields)
