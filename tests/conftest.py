"""Shared fixtures: tiny generated datasets and an isolated cache, so unit tests need no real data."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

from helpers import write_idx_dataset

# The compiled extensions (core/extensions.py) live in PyTorch's extension cache, found from XDG_CACHE_HOME, which
# every test empties (isolated_env): pin the cache where it is now, so that it is built once (make setup builds it).
if "TORCH_EXTENSIONS_DIR" not in os.environ:
    from torch.utils.cpp_extension import _get_build_directory

    from fittingroom.training.native import module_name

    os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(_get_build_directory(module_name(), verbose=False)).parent)


@pytest.fixture(scope="session", autouse=True)
def compiled_sgd_loop():
    """Build the compiled SGD loop before any test runs (a minute on a fresh machine), not inside a timed one."""
    from fittingroom.training.native import compiled_sgd_steps

    return compiled_sgd_steps()


@pytest.fixture(scope="session", autouse=True)
def compiled_fused_layers():
    """Build the CNN's fused layers before any test runs, as make setup does."""
    from fittingroom.models.fused_layers import FUSED_LAYERS

    return FUSED_LAYERS.load()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets an empty user cache and no FITTINGROOM_* settings from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    for var in ("FITTINGROOM_DATA", "FITTINGROOM_MIRROR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A folder holding a tiny 4-class IDX dataset (240 train, 80 test images)."""
    return write_idx_dataset(tmp_path / "tiny")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder trained for 2 epochs on the tiny dataset (shared by tests that only read it)."""
    from fittingroom import TrainConfig, train_run

    root = tmp_path_factory.mktemp("tiny-run")
    data = write_idx_dataset(root / "data")
    config = TrainConfig.from_preset("seed").replace(data=str(data), validation_size=40, epochs=2, batch_size=16)
    return train_run(config, out=root / "run", verbose=False).path


def _real_data_dir() -> str | None:
    """Where Fashion-MNIST is on this machine (looked up before any test isolates the cache)."""
    from fittingroom.data import get_spec, locate

    paths = locate(get_spec("fashion-mnist"))
    return str(next(iter(paths.values())).parent) if paths else None


REAL_DATA_DIR = _real_data_dir()


@pytest.fixture
def real_data_dir() -> str:
    """The folder of the real Fashion-MNIST files; `make setup` puts them there."""
    if REAL_DATA_DIR is None:
        pytest.fail("Fashion-MNIST not found: run `make setup` (it installs or downloads the dataset)")
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def tiny_onnx_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of ``tiny_run`` with its exported ``model.onnx`` (for the onnx engine)."""
    import shutil

    from fittingroom.inference.export import export_onnx

    run = tmp_path_factory.mktemp("tiny-onnx") / "run"
    shutil.copytree(tiny_run, run)
    export_onnx(run)
    return run


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/www; yields (root, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    # a short poll: shutdown() waits for the loop to look (0.5 s by default)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
