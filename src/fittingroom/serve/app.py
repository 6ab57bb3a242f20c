"""The HTTP API and its page: ``create_app(run)`` returns a FastAPI app.

- ``POST /v1/predict``: multipart upload, field ``file`` (one image -> one JSON object) or ``files``
  (several -> a JSON array, where an unreadable file gets ``{"input", "error"}``); the objects are those
  of ``fittingroom predict --json``. ``?top_k=N`` lists N classes; ``?image=true`` adds the 28x28
  input the model saw as a PNG data URL.
- ``GET /v1/model``, ``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /docs`` (OpenAPI, offline).
- ``GET /``: the page (``page/``), no external assets.

Bad requests get a 4xx with a JSON ``detail``: 400 malformed or wrong fields, 413 too large (bytes,
pixels, files), 415 not multipart, 422 not a readable image.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile

from .. import __version__
from ..errors import ImageError
from ..predict import Predictor, prediction_record
from ..preprocess import ImageTooLarge
from .batching import MicroBatcher
from .limits import BodyLimitMiddleware, BodyTooLarge, Limits
from .metrics import Metrics, MetricsMiddleware

PAGE = Path(__file__).parent / "page"
ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
# the page may load only what this server serves: no CDN, no fonts, no trackers
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "one image (answer: one object)"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "several images (answer: an array)"},
    }}}}}}


def _png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _status(exc: ImageError) -> int:
    return 413 if isinstance(exc, ImageTooLarge) else 422


def _query(params, n_classes: int) -> tuple[int, bool]:
    """``top_k`` (1..n_classes, default 3) and ``image`` (a boolean, default false) from the query string."""
    top_k = params.get("top_k", "3")
    if not top_k.isdigit() or not 1 <= int(top_k) <= n_classes:
        raise HTTPException(422, f"top_k must be an integer from 1 to {n_classes}; received top_k={top_k!r}")
    image = params.get("image", "false").lower()
    if image not in ("true", "false", "1", "0", "yes", "no"):
        raise HTTPException(422, f"image must be true or false; received image={image!r}")
    return min(int(top_k), n_classes), image in ("true", "1", "yes")


def create_app(run: str | os.PathLike, engine: str = "torch", onnx_path: str | os.PathLike | None = None,
               limits: Limits = Limits(), max_batch: int = 64, max_wait_ms: float = 0.0,
               threads: int | None = None) -> FastAPIOffline:
    """The API and page serving the run (or model) folder ``run`` on ``engine`` ("torch" or "onnx")."""
    predictor = Predictor(run, engine=engine, onnx_path=onnx_path, threads=threads, max_pixels=limits.max_pixels)
    metrics_file = Path(run) / "metrics.json"
    run_metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    metrics = Metrics(["/v1/predict", "/v1/model", "/healthz", "/metrics", "/", "/docs", "/openapi.json",
                       *(f"/static/{name}" for name in ASSETS)])
    batcher = MicroBatcher(lambda items: predictor.run([data for _, data in items], [name for name, _ in items]),
                           max_batch, max_wait_ms, on_batch=metrics.batch_size.observe)
    assets = {name: (PAGE / name).read_bytes() for name in ASSETS}
    index = (PAGE / "index.html").read_bytes()

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(title="fittingroom", version=__version__, lifespan=lifespan, redoc_url=None,
                         description=f"Classify images with the {predictor.info['model']} model of `{run}`.")
    app.state.predictor, app.state.batcher, app.state.metrics, app.state.limits = predictor, batcher, metrics, limits
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    async def read_uploads(request: Request) -> tuple[list[tuple[str, bytes]], bool]:
        """The uploaded files as (name, bytes) and whether they came as ``files`` (several)."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, f"expected a multipart/form-data upload with field `file` or `files`; "
                                     f"received content type {ctype or 'none'!r}")
        try:  # a malformed body or too many files: Starlette answers 400 with what was wrong
            form = await request.form(max_files=limits.max_files, max_fields=limits.max_files)
        except BodyTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
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
        {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": n_classes, "default": 3},
         "description": "how many classes to list"},
        {"name": "image", "in": "query", "schema": {"type": "boolean", "default": False},
         "description": "include the model's input image as a PNG data URL"}]}

    @app.post("/v1/predict", openapi_extra={**UPLOAD_SCHEMA, **query_doc},
              summary="Classify one image (`file`) or several (`files`)")
    async def predict(request: Request) -> Any:
        # the query is read by hand: FastAPI's parameter machinery costs more than the rest of a small request
        top_k, image = _query(request.query_params, n_classes)
        uploads, several = await read_uploads(request)
        # all of a request's images go to the batcher at once, so they share a forward pass
        results = await asyncio.gather(*(_submit(batcher, name, data) for name, data in uploads))
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
        return {**predictor.describe(), "metrics": {k: run_metrics[k] for k in keep if k in run_metrics},
                "limits": limits.describe(), "version": __version__}

    @app.get("/healthz", summary="Liveness: 200 while the server answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

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


async def _submit(batcher: MicroBatcher, name: str, data: bytes):
    """The batch result for one upload, or the ImageError it raised (returned, so one bad file fails alone)."""
    try:
        return await batcher.submit((name, data))
    except ImageError as exc:
        return exc
