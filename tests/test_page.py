"""The page end to end in headless Chromium (Debian's, driven by Playwright): upload, draw, no JavaScript errors."""

import io
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import Image

from fittingroom.inference.predictor import Predictor
from fittingroom.runfolder.data import run_test_set
from fittingroom.serve import create_app
from helpers import CHROMIUM, CHROMIUM_ARGS, wait_for_model_line

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    """The app on a free loopback port, in a background thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(tiny_run), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the app that records JavaScript errors and any request leaving the server."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.errors, pg.foreign = [], []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: pg.errors.append(msg.text) if msg.type == "error" else None)
    pg.on("request", lambda req: None if req.url.startswith((server, "data:", "blob:")) else pg.foreign.append(req.url))
    pg.goto(server + "/")
    yield pg
    context.close()


def test_uploading_a_photo_shows_its_class(page, tiny_run, tmp_path):
    predictor = Predictor(tiny_run)
    x_test, _ = run_test_set(tiny_run)
    photo = tmp_path / "garment.jpg"
    Image.fromarray(x_test[5]).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB").save(photo, quality=92)
    expected = predictor.predict_files([photo], top_k=4)[0]

    wait_for_model_line(page)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#result-class") == expected["class"]
    bars = page.locator("#bars li")
    assert bars.count() == 4  # top_k = all 4 classes of the tiny model
    assert bars.first.locator(".name").text_content() == expected["class"]
    assert page.get_attribute("#model-input", "src").startswith("data:image/png;base64,")
    assert page.is_visible("#preview")
    assert page.errors == [] and page.foreign == []


def test_dropping_a_photo_shows_its_class(page, tiny_run):
    x_test, _ = run_test_set(tiny_run)
    expected = Predictor(tiny_run).predict_arrays(x_test[7:8])[0]["class"]
    png = Image.fromarray(x_test[7]).resize((112, 112), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    png.save(buf, format="PNG")
    page.evaluate("""async (bytes) => {  // what a browser does when a file is dragged onto the drop zone
        const file = new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" });
        const data = new DataTransfer();
        data.items.add(file);
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
    }""", list(buf.getvalue()))
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#result-class") == expected
    assert page.errors == [] and page.foreign == []


def test_drawing_on_the_canvas_gives_a_prediction(page):
    page.click("#tab-draw")
    box = page.locator("#canvas").bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x0 + 0.3 * w, y0 + 0.2 * h)
    page.mouse.down()
    for t in np.linspace(0, 1, 12):  # a thick zig-zag
        page.mouse.move(x0 + (0.3 + 0.4 * t) * w, y0 + (0.2 + 0.6 * (t % 0.5) * 2) * h)
    page.mouse.up()
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#result-class") in ("zero", "one", "two", "three")
    assert float(page.text_content("#result-prob").rstrip("%")) > 0
    assert page.errors == [] and page.foreign == []


def test_a_file_that_is_not_an_image_shows_the_servers_message(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"just text")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.png: not a readable image" in page.text_content("#error")
    assert page.is_hidden("#result")
    assert [e for e in page.errors if "422" not in e] == []  # the browser logs the failed request itself


def test_a_finger_draws_on_a_phone(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(server + "/")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    pg.tap("#tab-draw")
    box = pg.locator("#canvas").bounding_box()
    cdp = context.new_cdp_session(pg)  # real touch events, as a finger makes them
    points = [(box["x"] + box["width"] * (0.2 + 0.6 * t), box["y"] + box["height"] * (0.3 + 0.4 * t))
              for t in np.linspace(0, 1, 10)]
    for i, (x, y) in enumerate(points):
        kind = "touchStart" if i == 0 else "touchMove"
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y, "radiusX": 5, "radiusY": 5}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    pg.wait_for_selector("#result:not([hidden])")
    assert pg.text_content("#result-class") in ("zero", "one", "two", "three")
    assert errors == []
    context.close()
