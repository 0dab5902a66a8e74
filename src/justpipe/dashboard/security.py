"""The dashboard's guards: Host check, access token, security headers, CSRF.

Implemented as one plain ASGI middleware so it also covers streamed responses
(server-sent events). Nothing here sends CORS headers: browsers therefore refuse
cross-origin reads, and cleanup additionally needs a same-origin check plus a CSRF
token, so a cross-site form post can never delete runs.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "LOOPBACK_NAMES",
    "SecurityMiddleware",
    "is_loopback",
    "same_origin",
]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_COOKIE = "justpipe_dashboard_token"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def tokens_match(presented: str, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one.

    Compares UTF-8 bytes: ``hmac.compare_digest`` refuses ``str`` with non-ASCII
    characters (a TypeError), and a header or query value can hold any.
    """
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, brackets allowed) is this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The host part of a Host header value (``[::1]:8741`` -> ``::1``)."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def same_origin(headers: dict[str, str], scheme: str) -> bool:
    """Whether the request comes from a page of this server (Origin, else Referer)."""
    host = headers.get("host", "")
    expected = f"{scheme}://{host}".lower()
    origin = headers.get("origin")
    if origin:
        return origin.lower() == expected
    referer = headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == expected
    return headers.get("sec-fetch-site") == "same-origin"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


class SecurityMiddleware:
    """Rejects foreign Host headers and (when a token is set) unauthenticated requests.

    `allowed_hosts`: host names the server answers to (the Host header's host part);
    requests naming any other host get 421, which is what stops DNS rebinding. ``*``
    accepts any name (only sensible together with a token).
    `token`: when set, every request needs it, as ``Authorization: Bearer <token>``,
    the cookie a first ``?token=`` visit sets, or the ``token`` query parameter.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], token: str | None) -> None:
        self.app = app
        self.allowed_hosts = {_host_name(host) for host in allowed_hosts}
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = _host_name(headers.get("host", ""))
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            await _reject(send, 421, "This dashboard does not answer for that host name")
            return
        set_cookie = False
        if self.token is not None:
            presented = self._presented_token(scope, headers)
            if presented is None or not tokens_match(presented, self.token):
                await _reject(send, 401, "An access token is required (open the URL printed)")
                return
            set_cookie = _query_token(scope) is not None

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = list(SECURITY_HEADERS)
                if set_cookie and self.token is not None:
                    cookie = (
                        f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    ).encode()
                    extra.append((b"set-cookie", cookie))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # An unexpected error: answer 500 ourselves, with the security headers
            # (Starlette's own error response, outside this middleware, has none), then
            # let it propagate so the server logs it.
            if not started:
                await _reject(send, 500, "Internal server error")
            raise

    def _presented_token(self, scope: Scope, headers: dict[str, str]) -> str | None:
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            cookie = SimpleCookie()
        if TOKEN_COOKIE in cookie:
            return cookie[TOKEN_COOKIE].value
        return _query_token(scope)


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


async def _reject(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
