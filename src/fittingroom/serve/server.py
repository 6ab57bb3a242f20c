"""The uvicorn server for an app: read timeouts and connection limits that uvicorn does not set by itself.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` but gives a request's headers
unlimited time and size: a client that opens hundreds of sockets and sends a byte now and then keeps them
all. :func:`guarded_protocol` adds a deadline and a size cap for the headers (408 / 431, then close); the
body's deadline is the app's (``limits.RequestLimitMiddleware``). ``limit_concurrency`` answers 503 to
requests beyond that many open connections or running requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .limits import Limits

MAX_HEADER_BYTES = 64 * 2**10  # the request line and headers of one request (h11's default is 16 KiB)
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
GRACEFUL_SHUTDOWN_S = 10  # on Ctrl-C or SIGTERM, requests still running get this long, then the server exits
MAX_CONNECTIONS = 256  # default limit_concurrency: open connections (idle ones too) or running requests


def guarded_protocol(header_timeout: float, max_header_bytes: int = MAX_HEADER_BYTES) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline (seconds) and a size cap (bytes) for each request's headers."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def _arm(self) -> None:
            if self._timer is None:
                self._header_bytes = 0
                self._timer = self.loop.call_later(header_timeout, self._headers_timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _refuse(self, status: bytes, text: bytes) -> None:
            if not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                     b"connection: close\r\ncontent-length: " + str(len(text)).encode() +
                                     b"\r\n\r\n" + text)
                self.transport.close()

        def _headers_timed_out(self) -> None:
            self._timer = None
            if self._header_bytes:  # a request began: say why it ends; a silent connection is just closed
                self._refuse(b"408 Request Timeout", b"request headers too slow")
            elif not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # the next request on a keep-alive connection

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            reading_headers = self._timer is not None
            super().data_received(data)
            if reading_headers and self._timer is not None:  # the headers are still not complete
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._disarm()
                    self._refuse(b"431 Request Header Fields Too Large",
                                 f"request headers over {max_header_bytes:,} bytes".encode())

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedProtocol


def make_server(app: Any, limits: Limits, max_connections: int = MAX_CONNECTIONS, log_level: str = "warning",
                access_log: bool = False, **config: Any):
    """A ``uvicorn.Server`` for ``app`` with header and keep-alive timeouts and a connection limit.

    Run it with ``server.run(sockets=[sock])`` (a socket bound by the caller) or ``server.run()`` with
    ``host`` and ``port`` in ``config``.
    """
    import uvicorn

    loop = "uvloop" if _has("uvloop") else "asyncio"
    cfg = uvicorn.Config(app, http=guarded_protocol(limits.header_timeout), loop=loop, log_level=log_level,
                         access_log=access_log, server_header=False, limit_concurrency=max_connections,
                         timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **config)
    return uvicorn.Server(cfg)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
