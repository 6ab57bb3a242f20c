"""What one request may send, and the middleware that stops a body that is too large before it is read.

A declared ``Content-Length`` over the limit is answered 413 at once; a body
without one (chunked) is counted as it arrives and reading it raises
:class:`BodyTooLarge` at the limit (the route answers 413), so no upload ever
fills the memory or the disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..preprocess import MAX_PIXELS


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 10 * 2**20  # one image file
    max_request_bytes: int = 32 * 2**20  # a whole request, all files together
    max_files: int = 32  # images in one request
    max_pixels: int = MAX_PIXELS  # width x height of one decoded image

    def describe(self) -> dict[str, int]:
        return {"max_file_bytes": self.max_file_bytes, "max_request_bytes": self.max_request_bytes,
                "max_files": self.max_files, "max_pixels": self.max_pixels}


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a body without Content-Length passes the limit."""


async def send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class BodyLimitMiddleware:
    """413 for any HTTP request body over ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = {"detail": f"request body over the limit of {self.max_bytes:,} bytes; send fewer or smaller images"}
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_json(send, 413, detail)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(detail["detail"])  # the route that reads the body answers 413
            return message

        await self.app(scope, counting_receive, send)
