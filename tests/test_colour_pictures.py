"""The evaluation's pictures of colour images (N, H, W, 3): explanation maps stay (H, W), images are drawn in colour."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fittingroom import create_model
from fittingroom.evaluation.explain import occlusion, saliency
from fittingroom.evaluation.test_set import EVALUATION_FIGURES, caption, evaluate_predictions
from fittingroom.figures.gallery import explanations_png, grey_tile, grid_layout, grid_png, heat_tile, image_tile
from fittingroom.inference.forward import predict_logits

CLASSES = ["a", "b", "c", "d"]
ARGS = {"input_shape": [16, 16], "num_classes": 4, "widths": [4, 8], "convs": [1, 1]}


def cnn(in_channels: int):
    torch.manual_seed(0)
    return create_model("cnn", in_channels=in_channels, **ARGS).eval()


def images(shape: tuple[int, ...], n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.uint8)


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def evaluate(model, x: np.ndarray, per_class: int = 2):
    labels = np.arange(len(x)) % len(CLASSES)
    logp = predict_logits(model, torch.from_numpy(x).float() / 255)
    return evaluate_predictions(model, x, labels, CLASSES, logp, explain_per_class=per_class)


def test_evaluate_predictions_draws_colour_images_in_colour():
    x = images((16, 16, 3))
    evaluation = evaluate(cnn(3), x)
    assert set(evaluation.figures) == set(EVALUATION_FIGURES.values())
    for name in ("highest_loss", "explanations"):  # the image grids; the charts are matplotlib's RGBA
        assert decode(evaluation.figures[EVALUATION_FIGURES[name]]).mode == "RGB"
    explained = evaluation.result["explained"]
    captions = [c for e in explained for c in
                (caption(e["index"], CLASSES, e["label"], e["predicted"], e["probability"]), "saliency", "occlusion")]
    layout = grid_layout(len(captions), 6, (16, 16), 3, captions)
    pixels = np.asarray(decode(evaluation.figures[EVALUATION_FIGURES["explanations"]]))
    assert pixels.shape == (*layout.size[::-1], 3)
    for k, e in enumerate(explained):
        left, top, right, bottom = layout.tile_box(3 * k)  # every channel of the image, not a grey copy
        np.testing.assert_array_equal(pixels[top:bottom:3, left:right:3], x[e["index"]])
        for tile in (3 * k + 1, 3 * k + 2):  # the saliency and occlusion maps fill a 16x16 tile, scaled 3 times
            left, top, right, bottom = layout.tile_box(tile)
            assert (right - left, bottom - top) == (48, 48)
    worst = evaluation.result["highest_loss"]
    gallery = np.asarray(decode(evaluation.figures[EVALUATION_FIGURES["highest_loss"]]))
    layout = grid_layout(len(worst), 8, (16, 16), 3,
                         [caption(w["index"], CLASSES, w["label"], w["predicted"], w["probability"]) for w in worst],
                         title="title")
    assert gallery.shape == (*layout.size[::-1], 3)
    left, top, right, bottom = layout.tile_box(0)
    np.testing.assert_array_equal(gallery[top:bottom:3, left:right:3], x[worst[0]["index"]])


def test_saliency_of_a_colour_image_is_the_largest_gradient_over_its_channels():
    model, x = cnn(3), images((16, 16, 3), n=3)
    targets = np.array([0, 1, 2])
    maps = saliency(model, x, targets)
    assert maps.shape == (3, 16, 16) and maps.dtype == np.float32
    xt = (torch.from_numpy(x).float() / 255).requires_grad_(True)
    F.log_softmax(model(xt), dim=1).gather(1, torch.as_tensor(targets)[:, None]).sum().backward()
    np.testing.assert_allclose(maps, xt.grad.abs().amax(dim=3).numpy(), rtol=1e-5, atol=1e-7)
    assert saliency(model, x[:0], targets[:0]).shape == (0, 16, 16)


def test_occlusion_of_a_colour_image_blacks_out_every_channel_of_the_patch():
    model, x = cnn(3), images((16, 16, 3), n=2)
    targets = np.array([1, 3])
    maps = occlusion(model, x, targets, patch=16, stride=16)  # one patch: the whole image
    assert maps.shape == (2, 16, 16) and maps.dtype == np.float32
    with torch.no_grad():
        p0 = model(torch.from_numpy(x).float() / 255).softmax(1)[[0, 1], targets]
        black = model(torch.zeros(2, 16, 16, 3)).softmax(1)[[0, 1], targets]
    np.testing.assert_allclose(maps, np.broadcast_to((p0 - black).numpy()[:, None, None], maps.shape), atol=1e-6)
    smooth = occlusion(model, x, targets, patch=4, stride=2)
    assert smooth.shape == (2, 16, 16) and np.ptp(smooth) > 0
    assert occlusion(model, x[:0], targets[:0]).shape == (0, 16, 16)


def test_occlusion_of_a_grey_image_is_unchanged():
    model, x = cnn(1), images((16, 16), n=2)
    targets = np.array([0, 2])
    maps = occlusion(model, x, targets, patch=16, stride=16)
    with torch.no_grad():
        p0 = model(torch.from_numpy(x).float() / 255).softmax(1)[[0, 1], targets]
        black = model(torch.zeros(2, 16, 16)).softmax(1)[[0, 1], targets]
    np.testing.assert_allclose(maps, np.broadcast_to((p0 - black).numpy()[:, None, None], maps.shape), atol=1e-6)
    assert saliency(model, x, targets).shape == (2, 16, 16)


def test_grey_pictures_are_drawn_as_before():
    """The grey path is the old one: a grey tile is ``grey_tile``, and the figures are byte for byte the same."""
    model, x = cnn(1), images((16, 16), n=3)
    targets = np.array([0, 1, 2])
    sal, occ = saliency(model, x, targets), occlusion(model, x, targets)
    for image in (x[0], x[0] / 255.0, x[0][..., None]):
        np.testing.assert_array_equal(image_tile(image), grey_tile(x[0]))
    captions = ["one", "two", "three"]
    old_tiles = [t for image, s, o in zip(x, sal, occ)
                 for t in (grey_tile(image), heat_tile(s, "inferno"), heat_tile(o, "RdBu_r", symmetric=True))]
    old_captions = [c for caption_ in captions for c in (caption_, "saliency", "occlusion")]
    assert explanations_png(x, sal, occ, captions) == grid_png(old_tiles, old_captions, ncols=9)
    assert grid_png(list(x), captions) == grid_png([grey_tile(image) for image in x], captions)
    assert decode(evaluate(model, images((16, 16)), per_class=1).figures[EVALUATION_FIGURES["explanations"]]).mode \
        == "RGB"


def test_colour_float_tiles_are_scaled_and_odd_shapes_refused():
    colour = images((4, 4, 3), n=1)[0]
    np.testing.assert_array_equal(image_tile(colour / 255.0), colour)
    with pytest.raises(ValueError, match=r"\(H, W\) grey or \(H, W, 3\) RGB; received shape \(4, 4, 2\)"):
        image_tile(np.zeros((4, 4, 2), np.uint8))
