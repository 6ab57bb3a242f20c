"""Headers that protect the browser side: ``nosniff`` on every answer, and a ``Host`` check against DNS rebinding.

A page on another site can make a browser send requests to ``127.0.0.1:8000`` under its own name (DNS
rebinding: ``evil.example`` resolved to 127.0.0.1), and then read the answers. Such a request carries
``Host: evil.example``; a server that accepts only the names it is reached by answers it 400.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .limits import send_json

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether the bind address ``host`` reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> list[str] | None:
    """The ``Host`` headers to accept for a server bound to ``host:port``; None accepts any.

    Bound to loopback, or given ``extra`` names: the loopback names with the port, the bound address
    with the port, and ``extra`` (``name`` for any port, ``name:port`` for that port only). Bound to
    another address with no ``extra``: any (the server is reachable under names it cannot know).
    """
    extra = [e.lower() for e in extra]
    if not is_loopback(host) and not extra:
        return None
    names = list(LOOPBACK_NAMES)
    if host not in ("0.0.0.0", "::", ""):
        names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    return [f"{name.lower()}:{port}" for name in dict.fromkeys(names)] + extra


def split_host(value: str) -> tuple[str, str | None]:
    """``"name:port"`` -> (name, port); ``"[::1]:80"`` -> ("[::1]", "80"); no port -> (name, None)."""
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:] if end >= 0 else ""
        return value[:end + 1] if end >= 0 else value, rest[1:] if rest.startswith(":") else None
    name, sep, port = value.rpartition(":")
    return (name, port) if sep else (value, None)


class HostCheckMiddleware:
    """400 for an HTTP request whose ``Host`` header is not one of ``allowed`` (see :func:`allowed_hosts`)."""

    def __init__(self, app, allowed: Iterable[str]):
        self.app = app
        self.exact = set()  # "name:port"
        self.any_port = set()  # "name"
        for entry in allowed:
            name, port = split_host(entry.lower())
            (self.exact if port else self.any_port).add(f"{name}:{port}" if port else name)
        # an HTTP client leaves out the port when it is 80
        self.exact |= {split_host(e)[0] for e in self.exact if split_host(e)[1] == "80"}

    def accepts(self, value: str) -> bool:
        value = value.lower()
        return value in self.exact or split_host(value)[0] in self.any_port

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            value = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not self.accepts(value):
                shown = ", ".join(sorted(self.exact | self.any_port))
                return await send_json(send, 400, {"detail": f"Host header {value!r} is not one this server answers "
                                                             f"to ({shown}); start it with --allowed-host NAME "
                                                             "to add a name"})
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """``X-Content-Type-Options: nosniff`` on every HTTP answer (an upload echoed back is never run as script)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
                message = {**message, "headers": [*headers, (b"x-content-type-options", b"nosniff")]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
