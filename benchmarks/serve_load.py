"""Load test of ``fittingroom serve``: requests/s, predictions/s and latency on loopback.

Starts the server on 127.0.0.1 (a free port) in a subprocess, then keeps
``--concurrency`` keep-alive connections busy with single-image multipart
``POST /v1/predict`` requests for ``--duration`` seconds (at most
``--max-requests``), and prints throughput, p50/p90/p99 latency, errors and the
server's mean batch size. The client is a minimal HTTP/1.1 loop over asyncio
streams (uvloop when installed): on a 2-core machine it shares the CPU with the
server, so it must cost as little as possible per request.

    .venv/bin/python benchmarks/serve_load.py RUN [--duration 30] [--concurrency 32] [--image-side 128]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_photo(run: str, side: int, data_dir: str | None = None) -> bytes:
    """A photo-like JPEG (dark garment on light grey, off-centre) ``side`` pixels wide, from the first test image."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent))
    from photo_accuracy import photo_like

    from fittingroom.runfolder.data import run_test_set

    x_test, _ = run_test_set(run, data_dir)
    photo = photo_like(x_test[0], np.random.default_rng(0))
    photo = photo.resize((side, round(side * photo.height / photo.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def multipart_request(port: int, image: bytes) -> bytes:
    boundary = "fittingroom-load-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def connection(port: int, request: bytes, stop_at: float, budget: list[int], latencies: list[float],
                     errors: list[str]) -> None:
    """One keep-alive connection sending ``request`` until the time or the request budget runs out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not status.startswith(b"HTTP/1.1 200") or b'"label"' not in body:
                errors.append(f"{status.decode().strip()} {body[:100]!r}")
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        errors.append(f"connection lost: {exc!r}")
    finally:
        writer.close()


async def load(port: int, request: bytes, duration: float, concurrency: int, max_requests: int):
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    start = time.perf_counter()
    await asyncio.gather(*(connection(port, request, start + duration, budget, latencies, errors)
                           for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, errors


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become healthy in time")


def batch_stats(port: int) -> tuple[float, float]:
    """(forward passes, mean images per pass) from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    count = float(re.search(r"^fittingroom_batch_size_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^fittingroom_batch_size_sum (\S+)$", text, re.M).group(1))
    return count, total / max(count, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a trained run folder")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections, one request in flight each")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    parser.add_argument("--image-side", type=int, default=128, help="width of the test photo in pixels (default 128)")
    parser.add_argument("--engine", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--server-args", default="", help="more `fittingroom serve` options, e.g. '--max-batch 32'")
    parser.add_argument("--data-dir", help="where the run's dataset is")
    args = parser.parse_args(argv)

    image = test_photo(args.run, args.image_side, args.data_dir)
    port = free_port()
    cmd = [sys.executable, "-m", "fittingroom", "serve", args.run, "--port", str(port), "--engine", args.engine,
           *args.server_args.split()]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        wait_healthy(port, server)
        request = multipart_request(port, image)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(load(port, request, 1.0, args.concurrency, 1000))  # warm-up, not counted
        warm_batches, warm_mean = batch_stats(port)
        load1 = os.getloadavg()[0]
        seconds, latencies, errors = asyncio.run(load(port, request, args.duration, args.concurrency, args.max_requests))
        batches, mean = batch_stats(port)
    finally:
        server.terminate()
        server.wait(30)
    ok = len(latencies) - len(errors)
    lat = np.array(latencies) * 1000
    new_batches = batches - warm_batches
    mean_batch = (batches * mean - warm_batches * warm_mean) / max(new_batches, 1)
    print(f"fittingroom serve {args.run} --engine {args.engine} {args.server_args}".strip())
    print(f"load: {args.concurrency} connections, {seconds:.1f} s, one {len(image):,}-byte {args.image_side}px JPEG "
          f"per request; {os.cpu_count()} CPUs, load average {load1:.2f} before")
    print(f"requests: {len(latencies):,} ({len(latencies) / seconds:,.0f}/s), predictions: {ok:,} ({ok / seconds:,.0f}/s), "
          f"errors: {len(errors)}")
    if len(lat):
        print(f"latency ms: p50 {np.percentile(lat, 50):.1f}, p90 {np.percentile(lat, 90):.1f}, "
              f"p99 {np.percentile(lat, 99):.1f}, max {lat.max():.1f}")
    print(f"server: {new_batches:,.0f} forward passes, {mean_batch:.1f} images per pass on average")
    for e in errors[:5]:
        print("error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
