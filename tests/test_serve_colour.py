"""The service on a colour model: a colour photo of another size is classified by its hue, the preview of what
the model saw is an RGB PNG of the model's size, and the page says what this model's preprocessing did."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fittingroom import TrainConfig, train_run
from fittingroom.data import SplitData
from fittingroom.data.preprocess import Preprocessing, describe
from fittingroom.inference.predictor import Predictor
from fittingroom.serve import create_app
from helpers import CHROMIUM, CHROMIUM_ARGS, HUE_CLASSES, hue_images, wait_for_model_line

SIZE = (12, 20)  # (H, W): not square, so a swapped height and width shows


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory):
    """A run folder of an mlp trained for 3 epochs on 12x20 colour images whose classes differ only by hue."""
    (xt, yt), (xv, yv), (xs, ys) = [hue_images(n, SIZE, seed) for n, seed in ((40, 1), (8, 2), (8, 3))]
    prep = Preprocessing(size=SIZE, method="resize", channels=3)
    data = SplitData("hues", HUE_CLASSES, xt, yt, xv, yv, xs, ys, preprocessing=prep)
    config = TrainConfig(model="mlp", model_args={"hidden": [32]}, epochs=3, batch_size=32, validation_size=20,
                         deterministic=True)
    return train_run(config, out=tmp_path_factory.mktemp("colour-run") / "run", data=data, verbose=False).path


@pytest.fixture(scope="module")
def client(colour_run):
    with TestClient(create_app(colour_run)) as c:
        yield c


def png(image, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(image)
    (img.convert(mode) if mode else img).save(buf, format="PNG")
    return buf.getvalue()


def preview(record: dict) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert record["image"].startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(record["image"][len(prefix):])))


def test_a_colour_photo_of_another_size_gets_its_hue_and_an_rgb_preview_of_the_models_size(client, colour_run):
    photos, labels = hue_images(1, (36, 60), seed=9)  # one per class, 3x the model's size, one of them RGBA
    files = [("files", (f"{i}.png", png(x, "RGBA" if i == 0 else None), "image/png")) for i, x in enumerate(photos)]
    r = client.post("/v1/predict", files=files, params={"image": "true"})
    assert r.status_code == 200
    body = r.json()
    assert [b["class"] for b in body] == [HUE_CLASSES[y] for y in labels]
    predictor = Predictor(colour_run)
    for record, (_, (_, data, _)) in zip(body, files):
        seen = preview(record)
        assert seen.mode == "RGB" and seen.size == (SIZE[1], SIZE[0])  # PIL sizes are (W, H)
        assert (seen.tobytes() == predictor.prepare(data).tobytes())  # exactly the array the model classified


def test_the_model_description_says_what_the_preprocessing_did(client):
    model = client.get("/v1/model").json()
    assert model["preprocessing"]["channels"] == 3 and model["input_shape"] == list(SIZE)
    assert model["preprocessing_description"] == describe(Preprocessing(size=SIZE, method="resize", channels=3))
    assert model["preprocessing_description"] == "resize to 12x20 (HxW), colour"


def test_a_grey_models_preview_stays_grey(tiny_run):
    with TestClient(create_app(tiny_run)) as c:
        photo = Image.new("RGB", (50, 40), "white")
        photo.paste((200, 30, 30), (10, 10, 30, 30))
        buf = io.BytesIO()
        photo.save(buf, format="PNG")
        record = c.post("/v1/predict", files={"file": ("a.png", buf.getvalue(), "image/png")},
                        params={"image": "true"}).json()
        assert preview(record).mode == "L" and preview(record).size == (28, 28)
        assert c.get("/v1/model").json()["preprocessing_description"].startswith("object to 28x28, grey")


def test_the_page_has_no_hard_coded_preprocessing(client):
    page = client.get("/").text
    assert "28&times;28" not in page and "background removed" not in page
    assert 'id="seen-how"' in page
    assert "preprocessing_description" in client.get("/static/page.js").text


@pytest.mark.browser
def test_the_page_shows_a_colour_models_preprocessing_and_preview(colour_run, tmp_path):
    import uvicorn
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(colour_run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    photos, labels = hue_images(1, (36, 60), seed=9)
    Image.fromarray(photos[1]).save(tmp_path / "photo.png")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{port}/")
            wait_for_model_line(page)
            page.set_input_files("#file", str(tmp_path / "photo.png"))
            page.wait_for_selector("#result:not([hidden])")
            assert page.text_content("#result-class") == HUE_CLASSES[labels[1]]
            caption = page.text_content(".seen figcaption")
            assert caption == "What the model saw, after preprocessing: resize to 12x20 (HxW), colour."
            box = page.locator("#model-input").bounding_box()
            assert round(box["width"]) == 112 and round(box["height"]) == round(112 * 12 / 20)  # its own aspect
            assert "12 by 20 colour" in page.get_attribute("#model-input", "alt")
            assert errors == []
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(10)
