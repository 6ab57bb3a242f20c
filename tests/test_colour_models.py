"""A colour model folder (in_channels=3, images (N, H, W, 3) channels-last) saves, loads, predicts and exports."""

import json

import numpy as np
import onnx
import pytest
import torch

from fittingroom import create_model
from fittingroom.core.errors import RunError
from fittingroom.evaluation.explain import _log_proba
from fittingroom.inference.export import ExportError, export_onnx, to_onnx
from fittingroom.inference.forward import mirror, predict_logits
from fittingroom.inference.saved import load_model, load_module, save_model

ARGS = {"in_channels": 3, "input_shape": [16, 16], "num_classes": 4, "widths": [4, 8], "convs": [1, 1]}


def colour_images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3)).astype(np.uint8)


def save_colour_cnn(folder, tta: bool = False):
    torch.manual_seed(0)
    model = create_model("cnn", **ARGS)
    save_model(folder, model, {"model": "cnn", "model_args": ARGS, "classes": ["a", "b", "c", "d"],
                               "input_shape": [16, 16], "tta": tta})
    return model.eval()


def mirror_average(model, x: torch.Tensor) -> torch.Tensor:
    """Log of the mean probability of each image and its left-right mirror (W is dim 2 in both layouts)."""
    with torch.no_grad():
        probs = (model(x).softmax(1) + model(x.flip(2)).softmax(1)) / 2
    return probs.log()


def test_mirror_flips_the_width_axis_of_grey_and_colour_images():
    grey = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    colour = torch.arange(2 * 3 * 4 * 3.0).reshape(2, 3, 4, 3)
    assert torch.equal(mirror(grey), grey.flip(-1))
    assert torch.equal(mirror(colour), colour.flip(2))  # not flip(-1): that swaps red and blue
    assert torch.equal(mirror(colour)[:, :, 0], colour[:, :, -1])


def test_a_colour_model_folder_saves_loads_and_predicts(tmp_path):
    model = save_colour_cnn(tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["model_args"]["in_channels"] == 3 and info["input_shape"] == [16, 16]
    module, _ = load_module(tmp_path)  # the load-time probe feeds (1, 16, 16, 3)
    classifier = load_model(tmp_path)
    assert classifier.image_shape == (16, 16, 3)
    pixels = colour_images()
    with torch.no_grad():
        expected = model(torch.from_numpy(pixels).float() / 255).softmax(1).numpy()
    np.testing.assert_allclose(classifier.predict_proba(pixels), expected, atol=1e-6)
    np.testing.assert_allclose(classifier.predict_proba(pixels / 255.0), expected, atol=1e-6)
    np.testing.assert_array_equal(classifier.predict(pixels), expected.argmax(1))
    assert classifier.predict_proba(pixels[0]).shape == (1, 4)  # one image (H, W, C)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 16, 16), (2, 16, 16, 1)])
def test_a_colour_model_refuses_the_wrong_layout(tmp_path, shape):
    save_colour_cnn(tmp_path)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 16, 16, 3\) \(colour, channels last\); "
                                         r"received") as caught:
        load_model(tmp_path).predict(np.zeros(shape, np.uint8))
    assert "\n" not in str(caught.value)


def test_a_colour_model_json_with_a_bad_in_channels_is_refused(tmp_path):
    save_colour_cnn(tmp_path)
    path = tmp_path / "model.json"
    info = json.loads(path.read_text())
    info["model_args"]["in_channels"] = "3"
    path.write_text(json.dumps(info))
    with pytest.raises(RunError, match="model_args.in_channels must be a positive integer; received '3'"):
        load_model(tmp_path)


@pytest.mark.slow
def test_tta_of_a_colour_model_averages_the_left_right_mirror(tmp_path):
    model = save_colour_cnn(tmp_path, tta=True)
    x = torch.from_numpy(colour_images()).float() / 255
    expected = mirror_average(model, x)
    with torch.no_grad():
        channel_swap = ((model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2).log()
    assert (expected - channel_swap).abs().max() > 1e-4  # the test tells the two mirrors apart
    torch.testing.assert_close(predict_logits(model, x, tta=True), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(_log_proba(model, x, tta=True), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(load_model(tmp_path).predict_proba(x.numpy()), expected.exp().numpy(), atol=1e-5)


@pytest.mark.slow  # two ONNX exports
@pytest.mark.parametrize("tta", [False, True])
def test_a_colour_model_exports_to_onnx_within_tolerance(tmp_path, tta):
    save_colour_cnn(tmp_path, tta=tta)
    result = export_onnx(tmp_path, tmp_path / "colour.onnx", images=colour_images(20))
    assert result.max_abs_diff <= 1e-4 and result.checked == 20
    graph = onnx.load(result.path).graph
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == "images" and dims[1:] == [16, 16, 3] and isinstance(dims[0], str)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_a_colour_export_refuses_grey_check_images_and_writes_nothing(tmp_path):
    save_colour_cnn(tmp_path)
    with pytest.raises(ExportError, match=r"uint8 of shape \(N, 16, 16, 3\).*received shape \(4, 16, 16\)"):
        export_onnx(tmp_path, tmp_path / "colour.onnx", images=np.zeros((4, 16, 16), np.uint8))
    assert not (tmp_path / "colour.onnx").exists()


@pytest.mark.slow
def test_a_grey_export_still_takes_n_h_w():
    model = create_model("mlp", input_shape=(8, 8), num_classes=3)
    info = {"model": "mlp", "model_args": {}, "classes": ["a", "b", "c"], "input_shape": [8, 8]}
    graph = onnx.load_from_string(to_onnx(model, info)).graph
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [8, 8] and len(dims) == 3
