import json

import numpy as np
import pytest

from fittingroom import load_model
from fittingroom.core.errors import RunError
from fittingroom.inference.saved import read_model_info
from fittingroom.runfolder.paths import RunPaths


def test_run_folder_holds_every_file(tiny_run):
    p = RunPaths(tiny_run)
    for path in (p.config, p.history, p.metrics, p.summary, p.curves, p.weights, p.model_json, p.checkpoint):
        assert path.is_file(), path
    assert p.history.read_text().splitlines()[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy")
    metrics = json.loads(p.metrics.read_text())
    for key in ("test_accuracy", "test_loss", "val_accuracy", "epochs", "params", "train_seconds"):
        assert key in metrics
    assert metrics["epochs"] == 2 and metrics["params"] == 266_610 - 6 * 101  # 4 classes, not 10
    assert p.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tiny_run.glob("*.tmp")) and not list(tiny_run.glob(".*"))
    assert not any(path.suffix in (".pkl", ".pt", ".pth") for path in tiny_run.iterdir())


def test_model_round_trip_predicts_like_the_run(tiny_run):
    model = load_model(tiny_run)
    assert model.classes == ["zero", "one", "two", "three"] and model.input_shape == (28, 28)
    x = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    probs = model.predict_proba(x)
    assert probs.shape == (5, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x), probs.argmax(1))
    pixels = np.round(x * 255).astype(np.uint8)
    np.testing.assert_allclose(model.predict_proba(pixels), model.predict_proba(pixels / 255.0), atol=1e-6)


def test_predict_proba_rejects_wrong_shapes(tiny_run):
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28\)"):
        load_model(tiny_run).predict_proba(np.zeros((2, 32, 32)))


@pytest.fixture
def copied_run(tiny_run, tmp_path):
    import shutil

    return shutil.copytree(tiny_run, tmp_path / "copy")


def test_tampered_weights_are_refused(copied_run):
    weights = copied_run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RunError, match="do not match model.json"):
        load_model(copied_run)


def test_weights_of_another_model_are_refused(copied_run):
    info = json.loads((copied_run / "model.json").read_text())
    info["model_args"]["hidden"] = [30, 10]
    (copied_run / "model.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="do not fit model 'mlp'"):
        load_model(copied_run)


def test_unknown_model_name_in_model_json(copied_run):
    info = json.loads((copied_run / "model.json").read_text())
    info["model"] = "os.system"
    (copied_run / "model.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="unknown model 'os.system'"):
        load_model(copied_run)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunError, match="not a run or model folder"):
        read_model_info(tmp_path)
    with pytest.raises(RunError, match="no such run folder"):
        read_model_info(tmp_path / "missing")


def test_unfinished_run_suggests_resume(copied_run):
    (copied_run / "model.json").unlink()
    with pytest.raises(RunError, match="--resume"):
        load_model(copied_run)


def test_garbage_model_json(copied_run):
    (copied_run / "model.json").write_text("{")
    with pytest.raises(RunError, match="damaged model description"):
        load_model(copied_run)


def test_model_json_records_every_model_argument_defaults_included(tiny_run):
    from fittingroom.models import model_defaults

    args = json.loads((tiny_run / "model.json").read_text())["model_args"]
    assert set(args) == set(model_defaults("mlp"))
    assert args["dropout"] == 0.0 and args["batch_norm"] is False and args["num_classes"] == 4
