"""What one request may send and how much the server holds at once, and the middleware that enforces it.

Every limit answers a 4xx or a 503, never a 5xx:

- a declared ``Content-Length`` over ``max_request_bytes``: 413 at once; a body without one (chunked) is
  counted as it arrives and reading it raises :class:`BodyTooLarge` at the limit (413);
- a body that has not fully arrived ``body_timeout`` seconds after the request began: :class:`BodyTimeout`
  (408), so a client that trickles its upload cannot hold a request slot;
- more than ``max_requests`` requests with a body in flight, or more than ``max_queued_bytes`` of their
  bodies held in memory: 503 with ``Retry-After`` (:class:`Busy`), so a burst of large uploads waits
  outside the process instead of filling its memory;
- the pixels one request's images decode to (``max_request_pixels``, checked in the route from the image
  headers): 413, so one request cannot hold the preprocessing thread for long.

The read timeout for request headers lives in the HTTP protocol (``server.py``).
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, fields

from ..core.errors import ConfigError
from ..core.files import MB
from ..data.preprocess import MAX_PIXELS

RETRY_AFTER_S = 1  # what a 503 tells the client to wait: requests here take milliseconds to a few seconds


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 10 * MB  # one image file
    max_request_bytes: int = 32 * MB  # a whole request, all files together
    max_files: int = 32  # images in one request
    max_pixels: int = MAX_PIXELS  # width x height of one decoded image
    max_request_pixels: int = 100_000_000  # decoded pixels of all of a request's images (~2 s of preprocessing)
    max_requests: int = 64  # requests with a body in flight at once (reading, queued or being answered)
    max_queued_bytes: int = 256 * MB  # their bodies, all together
    body_timeout: float = 60.0  # seconds from the request's start until its whole body has arrived
    header_timeout: float = 10.0  # seconds for a request's headers to arrive (enforced by the server's protocol)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"Limits.{f.name} must be a positive finite number; received {value!r}")
        if self.max_request_bytes < self.max_file_bytes:
            raise ConfigError(f"Limits.max_request_bytes ({self.max_request_bytes:,}) must be at least "
                              f"max_file_bytes ({self.max_file_bytes:,}): a request must be able to hold one image")
        if self.max_queued_bytes < self.max_request_bytes:
            raise ConfigError(f"Limits.max_queued_bytes ({self.max_queued_bytes:,}) must be at least "
                              f"max_request_bytes ({self.max_request_bytes:,}): one largest request must fit")
        if self.max_request_pixels < self.max_pixels:
            raise ConfigError(f"Limits.max_request_pixels ({self.max_request_pixels:,}) must be at least "
                              f"max_pixels ({self.max_pixels:,}): a request must be able to hold one largest image")

    def describe(self) -> dict[str, int | float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Refused(Exception):
    """A request the limits turn away while its body is read; the app answers ``status`` with ``detail``."""

    status = 400
    headers: dict[str, str] = {"Connection": "close"}  # the rest of the body is not read: do not reuse the socket


class BodyTooLarge(Refused):
    status = 413


class BodyTimeout(Refused):
    status = 408


class Busy(Refused):
    status = 503
    headers = {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"}


class Load:
    """Requests with a body in flight and the body bytes they hold (read by ``/healthz``)."""

    def __init__(self):
        self.requests = 0
        self.bytes = 0


async def send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": data})


def _declared_length(scope) -> int | None:
    value = dict(scope["headers"]).get(b"content-length")
    if value is None or not value.isdigit():  # bytes.isdigit: ASCII digits only
        return None
    return int(value) if len(value) <= 18 else 10**18  # never int() thousands of digits


class RequestLimitMiddleware:
    """Enforces a :class:`Limits`' body size, body timeout, requests in flight and bytes held (ASGI)."""

    def __init__(self, app, limits: Limits, load: Load):
        self.app, self.limits, self.load = app, limits, load

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limits, load = self.limits, self.load
        too_large = f"request body over the limit of {limits.max_request_bytes:,} bytes; send fewer or smaller images"
        busy = (f"the server is busy ({limits.max_requests} requests or {limits.max_queued_bytes:,} bytes of uploads "
                f"in progress); retry in {RETRY_AFTER_S} s")
        declared = _declared_length(scope)
        if declared is not None and declared > limits.max_request_bytes:
            return await send_json(send, 413, {"detail": too_large}, BodyTooLarge.headers)
        reserve = declared or 0
        if load.requests >= limits.max_requests or load.bytes + reserve > limits.max_queued_bytes:
            return await send_json(send, 503, {"detail": busy}, Busy.headers)
        load.requests += 1
        load.bytes += reserve
        held, received, done = reserve, 0, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.body_timeout

        async def guarded_receive():
            nonlocal held, received, done
            if done:  # after the body: waiting for a disconnect, with no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {limits.body_timeout:g} s; "
                                  "send it again on a faster connection") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > limits.max_request_bytes:
                    raise BodyTooLarge(too_large)
                if received > held:  # a body longer than declared, or chunked: count it as it comes
                    load.bytes += received - held
                    held = received
                    if load.bytes > limits.max_queued_bytes:
                        raise Busy(busy)
            return message

        try:
            await self.app(scope, guarded_receive, send)
        finally:
            load.requests -= 1
            load.bytes -= held
