import base64
import json
import re
import shutil
import subprocess

import pytest

from fittingroom import TrainConfig, train_run
from fittingroom.cli import main
from fittingroom.data import get_spec
from fittingroom.evaluation.manifest import dataset_checksums, source_commit
from fittingroom.evaluation.report import build_report, write_report
from helpers import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


def image_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def test_report_embeds_every_picture_as_a_data_uri(tiny_run):
    html = build_report(tiny_run)
    sources = image_sources(html)
    assert len(sources) == 5  # learning curves, confusion, highest loss, reliability, explanations
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    curves = (tiny_run / "learning_curves.png").read_bytes()
    assert "data:image/png;base64," + base64.b64encode(curves).decode() in sources
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)


def test_report_shows_summary_configuration_evaluation_and_manifest(tiny_run):
    html = build_report(tiny_run)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert "Total params: 266,004" in html and f"{metrics['params']:,}" in html
    assert "validation_size" in html and "<code>40</code>" in html  # the resolved configuration
    for name in ("zero", "one", "two", "three"):
        assert name in html
    assert f"{metrics['test_accuracy']:.4f}" in html and "Most confused" in html
    assert "2.13.0" in html and metrics["device"] in html  # package versions and device
    assert "train_seconds" in html
    commit = source_commit()
    assert (commit.get("commit") or commit["note"]) in html


def test_report_escapes_names_it_did_not_write(run_copy):
    evaluation = json.loads((run_copy / "evaluation" / "evaluation.json").read_text())
    evaluation["per_class"][0]["class"] = "<img src=x onerror=alert(1)>"
    (run_copy / "evaluation" / "evaluation.json").write_text(json.dumps(evaluation))
    html = build_report(run_copy)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html


def test_report_of_a_run_not_yet_evaluated_says_so_and_the_cli_evaluates_it(run_copy, capsys):
    shutil.rmtree(run_copy / "evaluation")
    (run_copy / "report.html").unlink()
    html = build_report(run_copy)
    assert "Not evaluated yet" in html and len(image_sources(html)) == 1
    assert main(["report", str(run_copy)]) == 0
    assert f"Wrote {run_copy / 'report.html'}" in capsys.readouterr().out
    assert len(image_sources((run_copy / "report.html").read_text())) == 5


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not a run or model folder" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_manifest_checksums():
    published = dataset_checksums("fashion-mnist")
    assert published["sha256"] == get_spec("fashion-mnist").sha256 and "published" in published["source"]


def test_manifest_checksums_of_a_dataset_folder(tiny_data):
    import hashlib

    from fittingroom.data.idx import read_bytes

    computed = dataset_checksums(str(tiny_data))
    expected = hashlib.sha256(read_bytes(tiny_data / "t10k-labels-idx1-ubyte.gz")).hexdigest()
    assert computed["sha256"]["test-labels"] == expected and "computed" in computed["source"]


def test_manifest_without_git_says_so(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert "not running from a git checkout" in source_commit()["note"]


def render_in_chromium(path, widths=(390, 1280)):
    """Open the page at each width; return what the browser saw."""
    from playwright.sync_api import sync_playwright

    seen = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width in widths:
                page = browser.new_page(viewport={"width": width, "height": 800})
                errors, requests = [], []
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on("request", lambda r, requests=requests: requests.append(r.url))
                page.goto(path.resolve().as_uri(), wait_until="load")
                seen.append({
                    "width": width,
                    "images": page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])"),
                    "overflow": page.evaluate("document.documentElement.scrollWidth") - width,
                    "errors": errors,
                    "requests": [u for u in requests if not u.startswith("data:")],
                })
                page.close()
        finally:
            browser.close()
    return seen


def check_rendered(path, images: int):
    for view in render_in_chromium(path):
        assert len(view["images"]) == images
        for complete, natural_width, src in view["images"]:
            assert complete and natural_width > 0 and src == "data:image/png;base64,"
        assert view["errors"] == []
        assert view["requests"] == [path.resolve().as_uri()]  # the page itself, nothing else
        assert view["overflow"] <= 0, f"the page scrolls sideways at {view['width']} px"


@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_all_its_images(tiny_run, tmp_path):
    path = write_report(tiny_run, tmp_path / "report.html")
    check_rendered(path, images=5)


@pytest.mark.browser
@pytest.mark.slow
def test_real_run_report_with_audit_renders_in_chromium(real_data_dir, tmp_path):
    # One quick epoch on 10,000 training images; evaluated on all 10,000 test images, audited on all 70,000.
    config = TrainConfig.from_preset("seed").replace(data_dir=real_data_dir, epochs=1, validation_size=50_000)
    run = train_run(config, out=tmp_path / "run", verbose=False).path
    evaluation = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert sum(map(sum, evaluation["confusion"])) == 10_000
    assert main(["data", "audit", "--run", str(run), "--json"]) == 0
    html = (run / "report.html").read_text()
    assert "Data audit" in html and "Possibly mislabelled training images" in html
    check_rendered(run / "report.html", images=8)  # curves, 4 evaluation pictures, 3 audit pictures
