"""The service's limits and defences: every client mistake or abuse gets a 4xx (or a 503 to retry), never a 5xx."""

import base64
import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fittingroom.core.errors import ConfigError, ImageError
from fittingroom.data.preprocess import DECODE_FORMATS, UnsupportedFormat, open_image
from fittingroom.inference.predictor import Predictor, printable
from fittingroom.serve import Limits, create_app
from fittingroom.serve.app import _query
from fittingroom.serve.batching import MicroBatcher
from fittingroom.serve.headers import allowed_hosts
from fittingroom.serve.server import make_server
from helpers import bomb_png, write_idx_dataset

OTHER_FORMATS = ["ICO", "PCX", "TGA", "SGI", "DDS", "XBM", "JPEG2000"]  # Pillow reads them; the service must not


def png(side: int = 56, pad: int = 0) -> bytes:
    """A PNG of a light square on black (``pad`` bytes of junk after it, which decoders ignore)."""
    a = np.zeros((side, side), np.uint8)
    a[side // 4:3 * side // 4, side // 4:3 * side // 4] = 220
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue() + bytes(pad)


def image_bytes(fmt: str) -> bytes:
    img = Image.new("RGB", (40, 30), "white")
    buf = io.BytesIO()
    (img.convert("1") if fmt == "XBM" else img).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tiny_run):
    with TestClient(create_app(tiny_run)) as c:
        yield c


@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory):
    from fittingroom import TrainConfig, train_run

    root = tmp_path_factory.mktemp("two-class")
    data = write_idx_dataset(root / "data", n_train=80, n_test=20, num_classes=2, classes=["no", "yes"])
    config = TrainConfig.from_preset("seed").replace(data=str(data), validation_size=20, epochs=1, batch_size=16)
    return train_run(config, out=root / "run", verbose=False).path


class Gate:
    """Holds the batch thread inside ``prepare`` for an upload named ``slow.png`` until :meth:`open`."""

    def __init__(self, predictor):
        self.inside, self.released = threading.Event(), threading.Event()
        prepare = predictor.prepare

        def held(source, name=None):
            if name == "slow.png":
                self.inside.set()
                self.released.wait(20)
            return prepare(source, name)

        predictor.prepare = held

    def open(self):
        self.released.set()


@contextlib.contextmanager
def held_request(client, gate, **kw):
    """A request for ``slow.png`` running in a thread, held in the batch until the block ends."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(r=client.post(
        "/v1/predict", files={"file": ("slow.png", png(**kw), "image/png")})))
    thread.start()
    assert gate.inside.wait(20), "the held request never reached the batch"
    try:
        yield answer
    finally:
        gate.open()
        thread.join(20)
    assert answer["r"].status_code == 200


@contextlib.contextmanager
def real_server(app, limits=Limits()):
    """The app on uvicorn (with its guarded protocol) on a free loopback port; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(app, limits, log_config=None)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):  # up to 30 s
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def exchange(port: int, data: bytes, then_close: bool = False) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or 20 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        if then_close:
            return b""
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def get(port: int, path: str) -> str:
    return exchange(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()).decode()


# --- top_k ---------------------------------------------------------------------------------------------------------

def test_default_top_k_works_for_a_two_class_model_and_a_larger_one_lists_all(two_class_run):
    with TestClient(create_app(two_class_run)) as c:
        for params in ({}, {"top_k": 3}, {"top_k": 50}):
            r = c.post("/v1/predict", files={"file": ("a.png", png(), "image/png")}, params=params)
            assert r.status_code == 200, r.text
            assert [t["class"] for t in r.json()["top"]] in (["no", "yes"], ["yes", "no"])
        assert c.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["parameters"][0]["schema"]["default"] == 2
    assert _query({}, 1) == (1, False)  # a one-class model: the default is its one class
    assert _query({"top_k": "7"}, 1) == (1, False)


@pytest.mark.parametrize("top_k", ["３", "٣", "²", "1" * 5000, "0" * 4999 + "1", "-1", "0", "1.5", " 3", "", "9" * 10])
def test_top_k_that_is_not_a_small_ascii_integer_gets_422(client, top_k):
    r = client.post("/v1/predict", files={"file": ("a.png", png(), "image/png")}, params={"top_k": top_k})
    assert r.status_code == 422, r.text
    assert "top_k must be a positive integer" in r.json()["detail"] and len(r.json()["detail"]) < 300


# --- class names ---------------------------------------------------------------------------------------------------

def test_class_names_from_non_utf8_folder_names_are_served_escaped(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    info = json.loads((run / "model.json").read_text())
    info["classes"] = ["caf\udce9", "\udcff\udcfe", "two", "lone \ud800"]  # os.fsdecode of b"caf\xe9" etc.
    (run / "model.json").write_text(json.dumps(info))  # ensure_ascii writes them as \udce9 escapes
    with TestClient(create_app(run)) as c:
        r = c.post("/v1/predict", files={"file": ("a.png", png(), "image/png")}, params={"top_k": 4})
        assert r.status_code == 200, r.text
        assert {t["class"] for t in r.json()["top"]} == {"caf\\xe9", "\\xff\\xfe", "two", "lone \\xed\\xa0\\x80"}
        assert c.get("/v1/model").json()["classes"][0] == "caf\\xe9"
    assert printable("café") == "café"


# --- aborted uploads, slow and large requests (a real server) ------------------------------------------------------

def test_an_aborted_upload_is_counted_499_without_a_traceback(tiny_run, caplog):
    app = create_app(tiny_run)
    with caplog.at_level(logging.INFO), real_server(app) as port:
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode()
        exchange(port, head + b"--x\r\n" + b"y" * 1000, then_close=True)  # the client leaves mid-body
        for _ in range(200):  # until the request is counted (up to 10 s)
            text = get(port, "/metrics")
            if 'route="/v1/predict"' in text:
                break
            time.sleep(0.05)
    assert re.search(r'fittingroom_http_requests_total\{method="POST",route="/v1/predict",status="499"\} 1', text)
    assert 'status="500"' not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


@pytest.mark.slow
def test_a_trickling_body_gets_408_and_slow_or_huge_headers_end_the_connection(tiny_run):
    limits = Limits(body_timeout=0.5, header_timeout=0.5)
    with real_server(create_app(tiny_run, limits=limits), limits) as port:
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 5000\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode()
        answer = exchange(port, head + b"--x\r\n")  # then nothing more: the body never completes
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        assert b"x-content-type-options: nosniff" in answer.lower()
        answer = exchange(port, b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1")  # headers that never end
        assert answer.startswith(b"HTTP/1.1 408") and b"headers too slow" in answer
        assert exchange(port, b"") == b""  # a connection that sends nothing is closed, silently
        # headers just over 64 KiB (so that the server has read them all when it closes: no reset)
        answer = exchange(port, b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 66_000 + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431")
        assert get(port, "/healthz").endswith('{"status":"ok"}')  # and the server carries on


def test_the_pixels_of_one_request_are_bounded_before_any_decoding(tiny_run):
    limits = Limits(max_pixels=2_000_000, max_request_pixels=3_000_000)
    app = create_app(tiny_run, limits=limits)
    decoded = []
    prepare = app.state.predictor.prepare
    app.state.predictor.prepare = lambda source, name=None: decoded.append(name) or prepare(source, name)
    with TestClient(app) as c:
        files = [("files", (f"{i}.png", bomb_png(1000, 1000), "image/png")) for i in range(4)]  # 4,000,000 pixels
        r = c.post("/v1/predict", files=files)
        assert r.status_code == 413 and "decode to 4,000,000 pixels, over the limit of 3,000,000" in r.json()["detail"]
        assert decoded == []  # refused from the headers alone
        r = c.post("/v1/predict", files=[("files", (f"{i}.png", png(), "image/png")) for i in range(3)])
        assert r.status_code == 200 and len(r.json()) == 3
    jpeg = io.BytesIO()
    Image.new("L", (2048, 2048)).save(jpeg, format="JPEG")
    assert open_image(jpeg.getvalue(), decode=False).size == (512, 512)  # a JPEG weighs what it decodes to


def test_healthz_fails_while_the_batch_thread_is_stuck(tiny_run):
    app = create_app(tiny_run, stall_s=0.2)
    with TestClient(app) as c:
        gate = Gate(app.state.predictor)
        with held_request(c, gate):
            for _ in range(200):  # the event loop still answers while the batch thread is held
                r = c.get("/healthz")
                if r.status_code == 503:
                    break
                time.sleep(0.05)
            assert r.status_code == 503 and r.json()["status"] == "stalled"
        assert c.get("/healthz").json() == {"status": "ok"}


def test_requests_in_flight_and_queued_bytes_are_capped_with_503(tiny_run):
    limits = Limits(max_file_bytes=100_000, max_request_bytes=110_000, max_queued_bytes=150_000, max_requests=2)
    app = create_app(tiny_run, limits=limits)
    small = {"file": ("s.png", png(), "image/png")}
    big = {"file": ("b.png", png(pad=80_000), "image/png")}
    with TestClient(app) as c:
        gate = Gate(app.state.predictor)
        with held_request(c, gate, pad=80_000):  # holds one request slot and ~80 kB
            r = c.post("/v1/predict", files=big)  # 80 kB more would pass 150 kB
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
            assert "fittingroom_requests_in_flight 1.0" in c.get("/metrics").text
            queued = {}
            behind = threading.Thread(target=lambda: queued.update(r=c.post("/v1/predict", files=small)))
            behind.start()  # a small one fits: it waits for the batch thread, in flight
            for _ in range(400):  # up to 20 s
                if app.state.load.requests == 2:
                    break
                time.sleep(0.05)
            r = c.post("/v1/predict", files=small)  # a third: over the 2 requests in flight
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert c.get("/healthz").status_code == 200  # GETs are not capped
        behind.join(20)
        assert queued["r"].status_code == 200
        assert c.post("/v1/predict", files=big).status_code == 200  # all answered: room again
        assert app.state.load.requests == 0 and app.state.load.bytes == 0
        assert 'status="500"' not in c.get("/metrics").text


# --- flags ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--max-wait-ms", "inf", "--max-wait-ms must be a number from 0 to 1000; received inf"),
    ("--max-wait-ms", "-1", "--max-wait-ms must be a number from 0 to 1000"),
    ("--max-mb", "nan", "--max-mb must be a number from 0.001 to 1024; received nan"),
    ("--max-batch", "0", "--max-batch must be an integer from 1 to 4096; received 0"),
    ("--max-files", "100000", "--max-files must be an integer from 1 to 1000"),
    ("--threads", "100000", "--threads must be an integer from 1 to"),
    ("--port", "70000", "--port must be an integer from 1 to 65535; received 70000"),
    ("--max-requests", "0", "--max-requests must be an integer"),
    ("--max-connections", "0", "--max-connections must be an integer"),
    ("--body-timeout", "inf", "--body-timeout must be a number from 0.1 to 3600"),
    ("--header-timeout", "nan", "--header-timeout must be a number"),
    ("--max-request-mpx", "1", "--max-request-mpx must be at least 40, one largest image; received 1"),
    ("--max-queued-mb", "5", "--max-queued-mb must be at least 32, the size of one largest request; received 5"),
    ("--allowed-host", "evil/path", "--allowed-host must be a host name"),
])
def test_serve_flags_are_checked_before_anything_starts(flag, value, message, tmp_path, capsys):
    from fittingroom.cli import main

    # a run folder that does not exist: the flag's error comes first, before any model is loaded
    assert main(["serve", str(tmp_path / "no-run"), flag, value]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_limits_batcher_and_predictor_refuse_bad_values_from_python(tiny_run):
    with pytest.raises(ConfigError, match="threads must be an integer from 1 to"):
        Predictor(tiny_run, threads=100_000)
    with pytest.raises(ConfigError, match="Limits.body_timeout must be a positive finite number; received inf"):
        Limits(body_timeout=float("inf"))
    with pytest.raises(ConfigError, match="max_queued_bytes"):
        Limits(max_queued_bytes=1)
    with pytest.raises(ValueError, match="max_wait_ms must be a finite number"):
        MicroBatcher(lambda xs: xs, max_wait_ms=float("inf"))


def test_serve_cli_passes_its_limits_and_host_check_to_the_server(tiny_run, monkeypatch, capsys):
    import fittingroom.serve.server as server_module
    from fittingroom.cli import main

    started = {}

    class FakeServer:
        def __init__(self, app, limits, max_connections, **kw):
            started.update(app=app, limits=limits, max_connections=max_connections)

        def run(self, sockets):
            started["port"] = sockets[0].getsockname()[1]
            sockets[0].close()

    monkeypatch.setattr(server_module, "make_server", FakeServer)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", str(tiny_run), "--port", str(port), "--max-requests", "5", "--max-queued-mb", "300",
                 "--body-timeout", "7", "--max-connections", "9", "--allowed-host", "box.lan"]) == 0
    limits = started["limits"]
    assert (limits.max_requests, limits.max_queued_bytes, limits.body_timeout) == (5, 300 * 2**20, 7.0)
    assert started["max_connections"] == 9 and started["port"] == port
    with TestClient(started["app"], base_url=f"http://127.0.0.1:{port}") as c:
        assert c.get("/healthz").status_code == 200
        for host, status in ((f"localhost:{port}", 200), (f"[::1]:{port}", 200), ("box.lan", 200),
                             ("box.lan:8443", 200), ("evil.example", 400), (f"evil.example:{port}", 400),
                             ("127.0.0.1:1", 400), ("", 400)):
            r = c.get("/healthz", headers={"host": host})
            assert r.status_code == status, (host, r.text)
            if status == 400:
                assert "is not one this server answers to" in r.json()["detail"]


def test_the_server_has_timeouts_and_a_connection_limit(tiny_run):
    server = make_server(create_app(tiny_run), Limits(header_timeout=3.0), max_connections=7)
    config = server.config
    assert (config.limit_concurrency, config.timeout_keep_alive, config.timeout_graceful_shutdown) == (7, 5, 10)
    assert config.http.__name__ == "GuardedProtocol"


def test_allowed_hosts_for_each_bind_address():
    assert allowed_hosts("127.0.0.1", 8000) == ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"]
    assert allowed_hosts("::1", 80)[-1] == "[::1]:80"
    assert allowed_hosts("0.0.0.0", 8000) is None  # reachable under names it cannot know: no check
    assert allowed_hosts("0.0.0.0", 8000, ["Box.lan"])[-1] == "box.lan"


def test_a_corrupt_metrics_json_serves_without_test_metrics(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for damaged in (b'{"test_accuracy": 0.9', b"\xff\xfe not text", b"[1, 2]"):
        (run / "metrics.json").write_bytes(damaged)
        with caplog.at_level(logging.WARNING), TestClient(create_app(run)) as c:
            assert c.get("/v1/model").json()["metrics"] == {}
        assert "serving without the run's test metrics" in caplog.text
        caplog.clear()


# --- image formats -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_formats_outside_the_allow_list_get_415_and_a_one_line_cli_error(client, tiny_run, fmt, tmp_path, capsys):
    from fittingroom.cli import main

    data = image_bytes(fmt)
    r = client.post("/v1/predict", files={"file": ("x.img", data, "application/octet-stream")})
    assert r.status_code == 415, r.text
    assert "images are not accepted; send a PNG, JPEG, GIF, BMP, WebP or TIFF image" in r.json()["detail"]
    r = client.post("/v1/predict", files=[("files", ("x.img", data, "image/x")), ("files", ("ok.png", png(), "image/png"))])
    assert r.status_code == 200 and "not accepted" in r.json()[0]["error"] and "label" in r.json()[1]
    (tmp_path / "x.png").write_bytes(data)
    assert main(["predict", str(tiny_run), str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "not accepted; send a PNG, JPEG, GIF, BMP, WebP or TIFF image" in err and err.count("\n") == 1
    with pytest.raises(UnsupportedFormat):
        Predictor(tiny_run).prepare(data)


@pytest.mark.parametrize("fmt", DECODE_FORMATS)
def test_the_accepted_formats_still_decode(client, fmt):
    r = client.post("/v1/predict", files={"file": ("x", image_bytes(fmt), "image/x")})
    assert r.status_code == 200, r.text


def test_garbage_is_still_422_not_a_readable_image(client):
    r = client.post("/v1/predict", files={"file": ("x.png", b"hello world", "image/png")})
    assert r.status_code == 422 and "not a readable image" in r.json()["detail"]
    with pytest.raises(ImageError, match="not a readable image"):
        open_image(b"hello world")


# --- headers -------------------------------------------------------------------------------------------------------

def test_every_answer_has_nosniff_and_docs_has_a_csp_for_its_inline_script(client):
    for r in (client.get("/healthz"), client.get("/no/such"), client.get("/docs"),
              client.post("/v1/predict", content=b"x"),
              client.post("/v1/predict", content=b"x", headers={"content-length": "9" * 30})):
        assert r.headers["x-content-type-options"] == "nosniff", r.url
    docs = client.get("/docs")
    csp = docs.headers["content-security-policy"]
    script = re.search(r"<script>(.*?)</script>", docs.text, flags=re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp and "'unsafe-eval'" not in csp and "frame-ancestors 'none'" in csp


@pytest.mark.browser
def test_docs_page_runs_under_its_csp_in_a_browser(tiny_run):
    from playwright.sync_api import sync_playwright

    from helpers import CHROMIUM, CHROMIUM_ARGS

    with real_server(create_app(tiny_run)) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"http://127.0.0.1:{port}/docs")
        # Swagger UI ran: it fetched the schema and rendered the operations
        page.wait_for_selector('.opblock-summary-path[data-path="/v1/predict"]', timeout=20_000)
        browser.close()
    assert errors == []  # a CSP violation is logged as a console error
