"""The HTTP API and its page: ``create_app(run)`` returns a FastAPI app.

- ``POST /v1/predict``: multipart upload, field ``file`` (one image -> one JSON object) or ``files``
  (several -> a JSON array, where an unreadable file gets ``{"input", "error"}``); the objects are those
  of ``fittingroom predict --json``. ``?top_k=N`` lists N classes (default 3; more than the model has
  lists them all, as ``predict --top-k``); ``?image=true`` adds the input the model saw as a PNG data URL:
  the model's input size, grey (mode L) for a grey model, RGB for a colour one.
- ``GET /v1/model`` (with ``preprocessing_description``, what the model's preprocessing does in words, which the
  page shows under that image), ``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /docs`` (OpenAPI, offline).
- ``GET /``: the page (``page/``), no external assets.

Bad requests get a 4xx with a JSON ``detail``: 400 malformed or wrong fields (or a ``Host`` this
server does not answer to), 408 a body too slow, 413 too large (bytes, pixels, files), 415 not
multipart or not an accepted image format, 422 not a readable image or a bad query; 503 (with
``Retry-After``) when the server already holds its limit of requests or upload bytes
(:class:`~fittingroom.serve.Limits`). Every answer has ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import os
import re
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from ..core.errors import ImageError
from ..core.version import __version__
from ..data.preprocess import ImageTooLarge, UnsupportedFormat, describe
from ..inference.predictor import Predictor, prediction_record
from .batching import MicroBatcher
from .headers import HostCheckMiddleware, SecurityHeadersMiddleware
from .limits import Limits, Load, Refused, RequestLimitMiddleware
from .metrics import Metrics, MetricsMiddleware

log = logging.getLogger("fittingroom.serve")

PAGE = Path(__file__).parent / "page"
ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
# the page may load only what this server serves: no CDN, no fonts, no trackers
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
# Swagger UI (served by this process, fastapi-offline's copy): its own files, plus the one inline script
# that starts it (allowed by its hash, added per page); its styles set inline styles, its icons are data: URLs
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' {hashes}; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
DOCS_STATIC = "/static-offline-docs"  # where fastapi-offline serves Swagger UI's files
STALL_S = 30.0  # /healthz fails when the batch thread has finished no image for this long (one takes < 1 s)
TOP_K_DIGITS = 9  # a top_k longer than this is refused before int() reads it
UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "one image (answer: one object)"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "several images (answer: an array)"},
    }}}}}}


def _png_data_url(image: np.ndarray) -> str:
    """A model input, uint8 (H, W) or (H, W, 3), as a PNG data URL (grey or RGB, as the model takes it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _status(exc: ImageError) -> int:
    if isinstance(exc, ImageTooLarge):
        return 413
    return 415 if isinstance(exc, UnsupportedFormat) else 422


def _query(params, n_classes: int) -> tuple[int, bool]:
    """``top_k`` (a positive integer, default 3, at most the number of classes: more lists them all, as
    ``predict --top-k`` does) and ``image`` (a boolean, default false) from the query string."""
    top_k = params.get("top_k", "3")
    # ASCII digits only: str.isdigit() also takes '３' and '٣', and int() of thousands of digits raises
    if not (top_k.isascii() and top_k.isdigit() and len(top_k) <= TOP_K_DIGITS and int(top_k) >= 1):
        shown = top_k if len(top_k) <= 20 else f"{top_k[:20]}... ({len(top_k):,} characters)"
        raise HTTPException(422, f"top_k must be a positive integer (1 to {n_classes} lists that many classes, "
                                 f"more lists all {n_classes}); received top_k={shown!r}")
    image = params.get("image", "false").lower()
    if image not in ("true", "false", "1", "0", "yes", "no"):
        raise HTTPException(422, f"image must be true or false; received image={image[:20]!r}")
    return min(int(top_k), n_classes), image in ("true", "1", "yes")


def _run_metrics(run: str | os.PathLike) -> dict[str, Any]:
    """The run's ``metrics.json`` (its test scores, for ``/v1/model``), figures of the wrong type left out; {} with a
    warning when the file is damaged: the model itself is fine, so the server starts without them rather than refusing."""
    from ..core.errors import RunError
    from ..runfolder.files import clean_metrics, read_optional_json
    from ..runfolder.paths import RunPaths

    try:
        return clean_metrics(read_optional_json(RunPaths(run).metrics))
    except RunError as exc:
        log.warning("%s; serving without the run's test metrics", exc)
        return {}


def _docs_page(openapi_url: str, title: str, root: str) -> HTMLResponse:
    """Swagger UI from this server's own files, with a CSP that allows exactly its inline start-up script."""
    static = f"{root}{DOCS_STATIC}"
    page = get_swagger_ui_html(openapi_url=openapi_url, title=title, swagger_js_url=f"{static}/swagger-ui-bundle.js",
                               swagger_css_url=f"{static}/swagger-ui.css", swagger_favicon_url=f"{static}/favicon.png")
    scripts = re.findall(r"<script>(.*?)</script>", page.body.decode(), flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    page.headers["Content-Security-Policy"] = DOCS_CSP.format(hashes=hashes)
    return page


def create_app(run: str | os.PathLike, engine: str = "torch", onnx_path: str | os.PathLike | None = None,
               limits: Limits = Limits(), max_batch: int = 64, max_wait_ms: float = 0.0,
               threads: int | None = None, allowed_hosts: Sequence[str] | None = None,
               stall_s: float = STALL_S) -> FastAPIOffline:
    """The API and page serving the run (or model) folder ``run`` on ``engine`` ("torch" or "onnx").

    ``allowed_hosts``: the ``Host`` headers to answer (``headers.allowed_hosts`` makes the list for a bind
    address); None answers any. ``/healthz`` fails once the batch thread has finished no image for ``stall_s``.
    """
    predictor = Predictor(run, engine=engine, onnx_path=onnx_path, threads=threads, max_pixels=limits.max_pixels)
    run_metrics = _run_metrics(run)
    metrics = Metrics(["/v1/predict", "/v1/model", "/healthz", "/metrics", "/", "/docs", "/openapi.json",
                       *(f"/static/{name}" for name in ASSETS)])
    batcher = MicroBatcher(lambda items: predictor.run([data for _, data in items], [name for name, _ in items],
                                                       progress=batcher.beat),
                           max_batch, max_wait_ms, on_batch=metrics.batch_size.observe)
    load = Load()
    metrics.track_load(lambda: load.requests, lambda: load.bytes, lambda: batcher.queued)
    assets = {name: (PAGE / name).read_bytes() for name in ASSETS}
    index = (PAGE / "index.html").read_bytes()

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(title="fittingroom", version=__version__, lifespan=lifespan, redoc_url=None, docs_url=None,
                         description=f"Classify images with the {predictor.info['model']} model of `{run}`.")
    app.state.predictor, app.state.batcher, app.state.metrics, app.state.limits = predictor, batcher, metrics, limits
    app.state.load = load
    # outermost last: metrics see every answer, nosniff goes on every answer, a foreign Host is turned away
    # before its body is read
    app.add_middleware(RequestLimitMiddleware, limits=limits, load=load)
    if allowed_hosts is not None:
        app.add_middleware(HostCheckMiddleware, allowed=allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:  # raised while the body is read
        return JSONResponse({"detail": str(exc)}, exc.status, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> Response:
        # the client left mid-upload: nobody reads this answer; 499 (nginx's "client closed request") counts it
        return Response(status_code=499)

    async def read_uploads(request: Request) -> tuple[list[tuple[str, bytes]], bool]:
        """The uploaded files as (name, bytes) and whether they came as ``files`` (several)."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, f"expected a multipart/form-data upload with field `file` or `files`; "
                                     f"received content type {ctype or 'none'!r}")
        # a malformed body or too many files: Starlette answers 400 with what was wrong; a body too large or
        # too slow raises Refused from the limits middleware (413, 408, 503)
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files)
        names = set(form.keys())
        if not names & {"file", "files"} or names - {"file", "files"}:
            raise HTTPException(400, "expected field `file` (one image) or `files` (several images); received "
                                     f"{', '.join(sorted(names)) or 'no fields'}")
        if names == {"file", "files"} or len(form.getlist("file")) > 1:
            raise HTTPException(400, "send one field `file` (one image) or fields `files` (several), not both")
        several = "files" in names
        uploads = form.getlist("files" if several else "file")
        out = []
        for upload in uploads:
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, f"`{'files' if several else 'file'}` must be a file upload, not a text field")
            if upload.size is not None and upload.size > limits.max_file_bytes:
                raise HTTPException(413, f"{upload.filename}: {upload.size:,} bytes is over the limit of "
                                         f"{limits.max_file_bytes:,} bytes per image")
            out.append((upload.filename or "upload", await upload.read()))
        return out, several

    n_classes = len(predictor.classes)
    query_doc = {"parameters": [
        {"name": "top_k", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 10**TOP_K_DIGITS - 1, "default": min(3, n_classes)},
         "description": f"how many classes to list (more than {n_classes} lists all {n_classes})"},
        {"name": "image", "in": "query", "schema": {"type": "boolean", "default": False},
         "description": "include the model's input image (grey or RGB, the model's size) as a PNG data URL"}]}

    @app.post("/v1/predict", openapi_extra={**UPLOAD_SCHEMA, **query_doc},
              summary="Classify one image (`file`) or several (`files`)")
    async def predict(request: Request) -> Any:
        # the query is read by hand: FastAPI's parameter machinery costs more than the rest of a small request
        top_k, image = _query(request.query_params, n_classes)
        uploads, several = await read_uploads(request)
        # weigh the request from the image headers before any decoding (in a thread: the loop stays free)
        sizes = await asyncio.to_thread(_measure, predictor, uploads)
        if not several and isinstance(sizes[0], ImageError):
            metrics.image_errors.inc()
            raise HTTPException(_status(sizes[0]), str(sizes[0]))
        total = sum(n for n in sizes if not isinstance(n, ImageError))
        if total > limits.max_request_pixels:
            raise HTTPException(413, f"the images decode to {total:,} pixels, over the limit of "
                                     f"{limits.max_request_pixels:,} per request; send fewer or smaller images")
        # all of a request's images go to the batcher at once, so they share a forward pass
        results = await asyncio.gather(*(_submit(batcher, name, data) if not isinstance(size, ImageError) else
                                         _done(size) for (name, data), size in zip(uploads, sizes)))
        records = []
        for (name, _), result in zip(uploads, results):
            if isinstance(result, ImageError):
                metrics.image_errors.inc()
                if not several:
                    raise HTTPException(_status(result), str(result))
                records.append({"input": name, "error": str(result)})
                continue
            x, probs, reason = result
            record = prediction_record(name, probs, predictor.classes, top_k, reason)
            if image:
                record["image"] = _png_data_url(x)
            records.append(record)
            metrics.predictions.inc()
        return JSONResponse(records if several else records[0])

    @app.get("/v1/model", summary="The model: name, classes, parameters, test metrics, limits")
    async def model() -> dict[str, Any]:
        keep = ("test_accuracy", "test_loss", "val_accuracy", "epochs", "preset", "dataset", "finished")
        return {**predictor.describe(), "preprocessing_description": describe(predictor.preprocessing),
                "metrics": {k: run_metrics[k] for k in keep if k in run_metrics},
                "limits": limits.describe(), "version": __version__}

    @app.get("/healthz", summary="Liveness: 200 while the server answers and its batch thread makes progress")
    async def healthz() -> JSONResponse:
        if not batcher.alive:
            return JSONResponse({"status": "down", "detail": "the batch loop is not running"}, 503)
        stalled = batcher.stalled_seconds()
        if stalled > stall_s:
            return JSONResponse({"status": "stalled", "detail": f"the batch thread has finished no image for "
                                                                f"{stalled:.0f} s"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _docs_page(f"{root}{app.openapi_url}", f"{app.title} - Swagger UI", root)

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no such file: {name}")
        return Response(assets[name], media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    return app


def _measure(predictor: Predictor, uploads: list[tuple[str, bytes]]) -> list[int | ImageError]:
    """Each upload's decoded pixel count from its header, or the ImageError that reading the header raised."""
    out: list[int | ImageError] = []
    for name, data in uploads:
        try:
            out.append(predictor.measure(data, name))
        except ImageError as exc:
            out.append(exc)
    return out


async def _done(result: Any) -> Any:
    return result


async def _submit(batcher: MicroBatcher, name: str, data: bytes):
    """The batch result for one upload, or the ImageError it raised (returned, so one bad file fails alone)."""
    try:
        return await batcher.submit((name, data))
    except ImageError as exc:
        return exc
