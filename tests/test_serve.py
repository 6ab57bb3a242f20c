import asyncio
import io
import json
import re
import socket
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fittingroom.core.errors import ImageError
from fittingroom.inference.predictor import Predictor
from fittingroom.runfolder.data import run_test_set
from fittingroom.serve import Limits, create_app
from fittingroom.serve.batching import MicroBatcher
from helpers import bomb_png

LIMITS = Limits(max_file_bytes=200_000, max_request_bytes=600_000, max_files=4, max_pixels=2_000_000)


@pytest.fixture(scope="module")
def tiny_test(tiny_run):
    return run_test_set(tiny_run)


@pytest.fixture(scope="module")
def client(tiny_run):
    with TestClient(create_app(tiny_run, limits=LIMITS)) as c:
        yield c


def png(image: np.ndarray, scale: int = 4) -> bytes:
    buf = io.BytesIO()
    h, w = image.shape
    Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def test_one_file_gives_the_same_object_as_predict_json(client, tiny_run, tiny_test, tmp_path, capsys):
    from fittingroom.cli import main

    x_test, _ = tiny_test
    (tmp_path / "shirt.png").write_bytes(png(x_test[0]))
    assert main(["predict", str(tiny_run), str(tmp_path / "shirt.png"), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]
    r = client.post("/v1/predict", files={"file": ("shirt.png", png(x_test[0]), "image/png")})
    assert r.status_code == 200
    assert r.json() == {**expected, "input": "shirt.png"}


def test_several_files_answer_an_array_and_a_bad_one_fails_alone(client, tiny_run, tiny_test):
    x_test, _ = tiny_test
    files = [("files", (f"{i}.png", png(x_test[i]), "image/png")) for i in range(3)]
    files.insert(1, ("files", ("notes.png", b"not an image", "image/png")))
    r = client.post("/v1/predict", files=files, params={"top_k": 2, "image": "true"})
    assert r.status_code == 200
    body = r.json()
    assert [b["input"] for b in body] == ["0.png", "notes.png", "1.png", "2.png"]
    assert "notes.png: not a readable image" in body[1]["error"]
    expected = [r["label"] for r in Predictor(tiny_run).predict_arrays(x_test[:3])]
    assert [body[i]["label"] for i in (0, 2, 3)] == expected
    assert len(body[0]["top"]) == 2 and body[0]["image"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("name, request_kw, status, detail", [
    ("empty body", dict(content=b"", headers={"content-type": "multipart/form-data; boundary=x"}), 400,
     "expected field `file`"),
    ("no content type", dict(content=b""), 415, "expected a multipart/form-data upload"),
    ("json body", dict(json={"file": "x"}), 415, "multipart/form-data"),
    ("malformed multipart", dict(content=b"abc", headers={"content-type": "multipart/form-data"}), 400, "boundary"),
    ("wrong field name", dict(files={"image": ("a.png", b"x", "image/png")}), 400, "received image"),
    ("text instead of a file", dict(data={"file": "hello"}, files={"x": ("a", b"1")}), 400, "expected field"),
    ("file and files", dict(files=[("file", ("a.png", b"1", "image/png")), ("files", ("b.png", b"1", "image/png"))]),
     400, "not both"),
    ("empty file", dict(files={"file": ("a.png", b"", "image/png")}), 422, "a.png: empty file"),
    ("not an image", dict(files={"file": ("a.png", b"hello world", "image/png")}), 422, "a.png: not a readable image"),
    ("truncated image", "truncated", 422, "a.png: truncated"),
    ("file over the size limit", dict(files={"file": ("big.png", bytes(300_000), "image/png")}), 413,
     "over the limit of 200,000 bytes"),
    ("body over the size limit", dict(files=[("files", (f"{i}", bytes(190_000), "image/png")) for i in range(4)]), 413,
     "request body over the limit"),
    ("decompression bomb", dict(files={"file": ("bomb.png", bomb_png(50_000, 50_000), "image/png")}), 413,
     "over the limit"),
    ("too many pixels", dict(files={"file": ("big.png", bomb_png(2_000, 1_500), "image/png")}), 413,
     "2000x1500 pixels is over the limit of 2,000,000"),
    ("too many files", dict(files=[("files", (f"{i}.png", b"1", "image/png")) for i in range(5)]), 400,
     "Too many files"),
    ("top_k out of range", dict(files={"file": ("a.png", b"1", "image/png")}, params={"top_k": 0}), 422,
     "top_k must be a positive integer (1 to 4 lists that many classes, more lists all 4); received top_k='0'"),
    ("image not a boolean", dict(files={"file": ("a.png", b"1", "image/png")}, params={"image": "maybe"}), 422,
     "image must be true or false"),
])
def test_bad_requests_get_a_4xx_with_a_json_detail(client, tiny_test, name, request_kw, status, detail):
    if request_kw == "truncated":
        request_kw = dict(files={"file": ("a.png", png(tiny_test[0][0], scale=8)[:400], "image/png")})
    r = client.post("/v1/predict", **request_kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert "detail" in body
    if detail:
        assert detail in body["detail"]
    assert client.get("/healthz").json() == {"status": "ok"}  # and the server carries on


def test_a_chunked_body_is_cut_off_at_the_limit(client):
    def chunks():
        for _ in range(20):
            yield b"x" * 50_000

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "request body over the limit" in r.json()["detail"]


def test_model_health_metrics_docs_and_page(client, tiny_run):
    model = client.get("/v1/model").json()
    assert model["classes"] == ["zero", "one", "two", "three"] and model["model"] == "mlp"
    assert model["params"] > 0 and 0 <= model["metrics"]["test_accuracy"] <= 1
    assert model["limits"]["max_files"] == 4 and model["preprocessing"]["size"] == [28, 28]
    client.post("/v1/predict", files={"file": ("a.png", b"nope", "image/png")})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert re.search(r'fittingroom_http_requests_total\{method="GET",route="/v1/model",status="200"\} [1-9]', metrics.text)
    assert re.search(r'fittingroom_http_requests_total\{method="POST",route="/v1/predict",status="422"\} [1-9]', metrics.text)
    assert "fittingroom_http_request_duration_seconds_bucket" in metrics.text
    assert "fittingroom_image_errors_total" in metrics.text
    client.get("/no/such/path")
    assert 'route="other"' in client.get("/metrics").text and "/no/such/path" not in client.get("/metrics").text
    docs = client.get("/docs").text
    assert "/openapi.json" in docs and "cdn" not in docs.lower()
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', docs):
        assert client.get(asset).status_code == 200  # Swagger UI's files come from this server
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/page.js", "/static/page.css"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text  # no external assets


def test_onnx_engine_serves_the_same_answers(tiny_onnx_run, tiny_test):
    x_test, _ = tiny_test
    files = [("files", (f"{i}.png", png(x_test[i]), "image/png")) for i in range(4)]
    answers = []
    for engine in ("torch", "onnx"):
        with TestClient(create_app(tiny_onnx_run, engine=engine)) as c:
            answers.append(c.post("/v1/predict", files=files).json())
            assert c.get("/v1/model").json()["engine"] == engine
    assert [a["label"] for a in answers[0]] == [a["label"] for a in answers[1]]
    assert all(abs(a["probability"] - b["probability"]) < 1e-4 for a, b in zip(*answers))


def test_concurrent_requests_share_forward_passes():
    calls = []
    release = threading.Event()

    def double(items):
        calls.append(list(items))
        release.wait(5)  # the first batch runs while the others queue up
        return [ImageError("odd") if x == 7 else 2 * x for x in items]

    async def scenario():
        batcher = MicroBatcher(double, max_batch=4)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert [len(c) for c in calls] == [4, 4, 2]  # max_batch items per call, in order
    assert [r for i, r in enumerate(results) if i != 7] == [2 * i for i in range(10) if i != 7]
    assert isinstance(results[7], ImageError)  # one item's error reaches only its caller


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    async def scenario():
        state = {"fail": True}

        def flaky(items):
            if state.pop("fail", False):
                raise RuntimeError("boom")
            return items

        batcher = MicroBatcher(flaky, max_batch=8, max_wait_ms=1)
        await batcher.start()
        first = await asyncio.gather(batcher.submit(1), return_exceptions=True)
        second = await batcher.submit(2)
        await batcher.stop()
        return first, second

    (first,), second = asyncio.run(scenario())
    assert isinstance(first, RuntimeError) and second == 2


def test_serve_cli_rejects_bad_settings(tiny_run, capsys):
    from fittingroom.cli import main

    assert main(["serve", str(tiny_run), "--port", "0"]) == 1
    assert "--port must be" in capsys.readouterr().err
    assert main(["serve", str(tiny_run), "--engine", "onnx", "--onnx", "/nonexistent.onnx"]) == 1
    assert "no such ONNX file" in capsys.readouterr().err
    assert main(["serve", str(tiny_run), "--max-batch", "0"]) == 1
    assert "--max-batch must be" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_run), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
