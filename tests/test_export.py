import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from fittingroom import create_model, list_models
from fittingroom.cli import main
from fittingroom.inference.export import ExportError, check_onnx, export_onnx, to_onnx
from fittingroom.inference.predictor import Predictor
from fittingroom.runfolder.data import run_test_set


def test_export_writes_a_checked_model_with_a_dynamic_batch_and_metadata(tiny_run, tmp_path):
    result = export_onnx(tiny_run, tmp_path / "model.onnx")
    assert result.path == tmp_path / "model.onnx"
    assert result.checked == 80 and result.max_abs_diff <= 1e-4  # all 80 tiny test images
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:], out.name) == ("images", "tensor(float)", [28, 28], "probabilities")
    assert isinstance(inp.shape[0], str)  # a named dynamic dimension
    for n in (1, 7):
        probs = session.run(None, {"images": np.random.default_rng(n).random((n, 28, 28), dtype=np.float32)})[0]
        assert probs.shape == (n, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    info = json.loads((tiny_run / "model.json").read_text())
    assert json.loads(meta["classes"]) == info["classes"] == ["zero", "one", "two", "three"]
    assert json.loads(meta["preprocessing"]) == info["preprocessing"]
    assert meta["weights_sha256"] == info["weights_sha256"]


def test_onnx_engine_predicts_what_torch_predicts(tiny_onnx_run):
    run = tiny_onnx_run
    torch_p, onnx_p = Predictor(run), Predictor(run, engine="onnx")
    x_test, _ = run_test_set(run)
    a, b = torch_p.predict_arrays(x_test), onnx_p.predict_arrays(x_test)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert max(abs(r["probability"] - s["probability"]) for r, s in zip(a, b)) < 1e-4


def test_a_model_onnx_from_other_weights_is_refused(tiny_onnx_run, tmp_path):
    other = tmp_path / "run"
    shutil.copytree(tiny_onnx_run, other)
    info = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**info, "weights_sha256": "0" * 64}))
    with pytest.raises(Exception, match="exported from other weights"):
        Predictor(other, engine="onnx")


@pytest.mark.slow
def test_a_mismatching_export_fails_and_writes_nothing(tiny_run, tmp_path, monkeypatch):
    import fittingroom.inference.export as export

    def other_weights(module, info, opset=None):  # an exporter that got the weights wrong
        return to_onnx(create_model(info["model"], **info["model_args"]), info, opset)

    monkeypatch.setattr(export, "to_onnx", other_weights)
    with pytest.raises(ExportError, match="differ from PyTorch's by .* nothing was written"):
        export_onnx(tiny_run, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_export_and_its_mistakes(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--check", "20"]) == 0
    assert "onnxruntime matches PyTorch within" in capsys.readouterr().out and (tmp_path / "m.onnx").is_file()
    assert main(["export", str(tiny_run), "--format", "tflite", "--out", str(tmp_path / "x")]) == 1
    assert "unknown export format 'tflite'" in capsys.readouterr().err
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "missing" / "m.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # seconds per model; the fast tests export the mlp (tiny_run, TTA)
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_within_tolerance(name):
    model = create_model(name, input_shape=(28, 28), num_classes=10)
    info = {"model": name, "model_args": {}, "classes": [str(i) for i in range(10)], "input_shape": [28, 28]}
    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28)).astype(np.uint8)
    assert check_onnx(to_onnx(model, info), model, info, images) <= 1e-4


@pytest.mark.slow  # an ONNX export
def test_a_tta_run_exports_the_mirror_average():
    model = create_model("mlp", input_shape=(28, 28), num_classes=10)
    info = {"model": "mlp", "model_args": {}, "classes": [str(i) for i in range(10)], "input_shape": [28, 28],
            "tta": True}
    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28)).astype(np.uint8)
    data = to_onnx(model, info)
    assert check_onnx(data, model, info, images) <= 1e-4
    with pytest.raises(ExportError):  # the same graph is not what the model without TTA computes
        check_onnx(data, model, {**info, "tta": False}, images)
