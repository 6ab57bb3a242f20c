import numpy as np
import pytest
import torch
from torch import nn

from fittingroom.evaluation.explain import examples_per_class, occlusion, patch_masks, saliency
from fittingroom.inference.saved import load_module
from fittingroom.models import create_model, list_models
from helpers import make_images


def corner_model(size: int = 12, corner: int = 4) -> nn.Module:
    """A linear 2-class model that only looks at the top-left ``corner`` x ``corner`` pixels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 2))
    mask = torch.zeros(size, size)
    mask[:corner, :corner] = 1
    with torch.no_grad():
        model[1].weight.mul_(mask.flatten())  # zero weight outside the corner
    return model


def test_saliency_is_the_analytic_gradient_of_a_linear_model():
    model = corner_model()
    x = torch.rand(5, 12, 12)
    targets = np.array([0, 1, 0, 1, 1])
    maps = saliency(model, x, targets)
    W = model[1].weight.detach()  # (2, 144)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)  # d log p_y / dx = W_y - sum_c p_c W_c
    expected = (W[targets] - p @ W).abs().reshape(5, 12, 12)
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-6)
    assert maps[:, 4:, :].max() == 0 and maps[:, :4, :4].min() > 0  # only the corner matters


def test_occlusion_is_zero_where_no_patch_touches_what_the_model_sees():
    model = corner_model()
    images = np.full((3, 12, 12), 200, np.uint8)
    maps = occlusion(model, images, np.array([0, 1, 1]), patch=2, stride=2)
    assert maps.shape == (3, 12, 12) and maps.dtype == np.float32
    assert np.abs(maps[:, 4:, :]).max() == 0 and np.abs(maps[:, :, 4:]).max() == 0
    assert np.abs(maps[:, :4, :4]).min() > 0


def test_occlusion_measures_the_drop_in_probability():
    model = corner_model()
    images = np.full((1, 12, 12), 255, np.uint8)
    target = 1
    # One patch covering the whole image blacks it out: the drop is p(target | image) - p(target | black image).
    drop = occlusion(model, images, [target], patch=12, stride=12)
    with torch.no_grad():
        p_full = torch.softmax(model(torch.ones(1, 12, 12)), 1)[0, target]
        p_black = torch.softmax(model(torch.zeros(1, 12, 12)), 1)[0, target]
    np.testing.assert_allclose(drop, np.full((1, 12, 12), (p_full - p_black).item()), atol=1e-6)


def test_occlusion_does_not_depend_on_the_batch_size():
    model = corner_model()
    images = np.random.default_rng(0).integers(0, 256, (7, 12, 12), dtype=np.uint8)
    targets = np.arange(7) % 2
    np.testing.assert_allclose(occlusion(model, images, targets, batch_size=40),
                               occlusion(model, images, targets, batch_size=10_000), atol=1e-6)


def test_patch_masks_cover_every_pixel_up_to_the_edges():
    masks = patch_masks(28, 28, patch=4, stride=3)  # 0, 3, ..., 24 reaches the edge at 28
    assert masks.shape[1:] == (28, 28) and masks.sum(0).min() >= 1
    assert all(int(m.sum()) == 16 for m in masks)
    odd = patch_masks(10, 10, patch=4, stride=4)  # 0, 4 then an extra patch at 6 to reach the edge
    assert odd.shape[0] == 9 and odd.sum(0).min() >= 1


@pytest.mark.parametrize("name", list_models())
def test_explanations_work_for_every_registered_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4)
    images, labels = make_images(2)
    sal = saliency(model, images, labels)
    occ = occlusion(model, images, labels, patch=7, stride=7)
    for maps in (sal, occ):
        assert maps.shape == images.shape
        assert np.isfinite(maps).all() and np.ptp(maps[0]) > 0  # not constant
    assert model.training  # the model's mode is put back


def test_explanations_of_a_trained_run_highlight_the_bright_square(tiny_run):
    model, info = load_module(tiny_run)
    images, labels = make_images(8, seed=3)
    sal = saliency(model, images, labels, tta=info.get("tta", False))
    occ = occlusion(model, images, labels)
    assert sal.shape == occ.shape == (8, 28, 28)
    # The class is the quadrant of the bright square: hiding the square costs more than hiding dark background.
    square = images > 150
    assert np.mean([occ[i][square[i]].mean() > occ[i][~square[i]].mean() for i in range(8)]) >= 0.75


def test_tta_explains_the_mirror_averaged_prediction():
    model = corner_model()
    x = torch.rand(2, 12, 12)
    plain, tta = saliency(model, x, [0, 1]), saliency(model, x, [0, 1], tta=True)
    assert tta[:, :4, 8:].max() > 0 and plain[:, :4, 8:].max() == 0  # the mirror image looks at the top-right corner


def test_examples_per_class_takes_the_first_images_of_each_class():
    labels = np.array([2, 0, 1, 0, 2, 0, 1])
    assert examples_per_class(labels, 2, 3).tolist() == [1, 3, 2, 6, 0, 4]
    assert examples_per_class(labels, 5, 4).tolist() == [1, 3, 5, 2, 6, 0, 4]  # class 3 has none
