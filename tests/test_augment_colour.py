"""Augmentation of grey (B, H, W) and channels-last colour (B, H, W, C) batches, and colour jitter."""

import math

import pytest
import torch
import torch.nn.functional as F

from fittingroom import TrainConfig
from fittingroom.core.errors import ConfigError
from fittingroom.data.augment import augment_batch, color_jitter, erase, flip, translate

SHAPES = [(8, 28, 28), (8, 28, 28, 3), (8, 20, 33), (8, 20, 33, 3), (8, 17, 12, 1)]
GEOMETRIC = {
    "translate": lambda x, g: translate(x, 3, g),
    "flip": flip,
    "erase": lambda x, g: erase(x, 1.0, g),
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def channel_equal(b: int = 64, h: int = 20, w: int = 33, c: int = 3) -> torch.Tensor:
    """Colour images whose channels are all the same random grey image: (B, H, W, C)."""
    return torch.rand(b, h, w, generator=gen(1))[..., None].repeat(1, 1, 1, c)


# ---------------------------------------------------------------- the grey path as it was, to check reproducibility

def old_translate(x, max_shift, g):
    b, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    dy = torch.randint(0, 2 * max_shift + 1, (b, 1), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (b, 1), generator=g)
    rows = (torch.arange(h) + dy)[:, :, None]
    cols = (torch.arange(w) + dx)[:, None, :]
    return padded[torch.arange(b)[:, None, None], rows, cols]


def old_flip(x, g):
    mask = torch.rand(x.shape[0], generator=g) < 0.5
    return torch.where(mask[:, None, None], x.flip(-1), x)


def old_erase(x, p, g, area=(0.02, 0.25), aspect=(0.3, 3.3)):
    b, h, w = x.shape
    u = lambda: torch.rand(b, generator=g)  # noqa: E731
    frac = area[0] + (area[1] - area[0]) * u()
    ratio = torch.exp(math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * u())
    eh = torch.sqrt(frac * h * w * ratio).round().clamp(1, h)
    ew = torch.sqrt(frac * h * w / ratio).round().clamp(1, w)
    top = ((h - eh + 1) * u()).floor()
    left = ((w - ew + 1) * u()).floor()
    apply = u() < p
    r = torch.arange(h)[None, :, None]
    c = torch.arange(w)[None, None, :]
    inside = ((r >= top[:, None, None]) & (r < (top + eh)[:, None, None]) & (c >= left[:, None, None])
              & (c < (left + ew)[:, None, None]) & apply[:, None, None])
    return x.masked_fill(inside, 0.0)


@pytest.mark.parametrize("hw", [(28, 28), (20, 33)])
def test_grey_batches_are_augmented_exactly_as_before_for_the_same_seed(hw):
    x = torch.rand(32, *hw, generator=gen(3))
    new, old = gen(7), gen(7)
    out = augment_batch(x, new, translate_px=2, flip_lr=True, erase_p=0.5)
    expected = old_erase(old_flip(old_translate(x, 2, old), old), 0.5, old)
    assert torch.equal(out, expected)
    assert torch.equal(new.get_state(), old.get_state())  # the same numbers drawn, so later batches match too


def test_colour_batches_draw_what_grey_batches_of_the_same_size_draw():
    grey, colour = gen(5), gen(5)
    augment_batch(torch.rand(16, 28, 28), grey, 2, True, 0.5, 0.3)
    augment_batch(torch.rand(16, 20, 33, 3), colour, 2, True, 0.5, 0.3)
    assert torch.equal(grey.get_state(), colour.get_state())


# ---------------------------------------------------------------- shapes, dtypes, channels

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [*GEOMETRIC, "jitter"])
def test_every_augmentation_keeps_shape_and_dtype(shape, dtype, name):
    x = torch.rand(shape, dtype=dtype, generator=gen(2))
    fn = GEOMETRIC.get(name, lambda x, g: color_jitter(x, 0.5, g))
    out = fn(x, gen())
    assert out.shape == x.shape and out.dtype == dtype
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_augmentations_work_on_uint8_batches_too(name):
    x = torch.randint(0, 256, (8, 20, 33, 3), dtype=torch.uint8, generator=gen())
    out = GEOMETRIC[name](x, gen())
    assert out.shape == x.shape and out.dtype == torch.uint8


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_augmentations_move_every_channel_alike(name):
    x = channel_equal()
    out = GEOMETRIC[name](x, gen())
    assert not torch.equal(out, x)  # it did something
    for c in (1, 2):
        assert torch.equal(out[..., c], out[..., 0])


@pytest.mark.parametrize("name", GEOMETRIC)
def test_a_colour_image_moves_as_its_grey_version_does(name):
    x = channel_equal()
    out_colour = GEOMETRIC[name](x, gen(4))
    out_grey = GEOMETRIC[name](x[..., 0], gen(4))
    assert torch.equal(out_colour[..., 0], out_grey)


def test_translate_shifts_a_non_square_colour_image_without_changing_content():
    x = torch.zeros(64, 20, 33, 3)
    x[:, 8:12, 10:20] = torch.tensor([0.2, 0.5, 0.9])
    out = translate(x, 3, gen())
    assert torch.allclose(out.sum((1, 2)), x.sum((1, 2)))  # a 4x10 patch moved by <= 3 px stays inside
    assert not torch.equal(out, x)


def test_flip_mirrors_colour_images_along_the_width_not_the_channels():
    x = torch.rand(200, 20, 33, 3, generator=gen())
    out = flip(x, gen())
    mirrored = (out == x.flip(2)).flatten(1).all(1)
    assert 50 < int(mirrored.sum()) < 150
    assert torch.equal(out[~mirrored], x[~mirrored])


def test_erase_zeroes_one_rectangle_through_all_channels():
    x = torch.ones(200, 20, 33, 3)
    out = erase(x, 1.0, gen())
    zero = out == 0  # (B, H, W, C)
    assert torch.equal(zero.all(-1), zero.any(-1))  # a pixel is erased in every channel or in none
    assert bool(zero.any(-1).flatten(1).any(1).all())  # probability 1: every image has its rectangle


def test_batches_of_another_rank_are_refused():
    with pytest.raises(ValueError, match=r"\(B, H, W\) or \(B, H, W, C\)"):
        flip(torch.rand(4, 3, 28, 28, 1), gen())


# ---------------------------------------------------------------- colour jitter

def test_colour_jitter_at_zero_is_the_identity_and_draws_nothing():
    x = torch.rand(8, 20, 33, 3)
    g = gen()
    before = g.get_state()
    assert color_jitter(x, 0.0, g) is x
    assert augment_batch(x, g, jitter=0.0) is x
    assert torch.equal(g.get_state(), before)


def test_colour_jitter_changes_colour_images():
    x = torch.rand(16, 20, 33, 3, generator=gen()) * 0.8 + 0.1
    out = color_jitter(x, 0.4, gen())
    changed = (out - x).abs().flatten(1).amax(1) > 1e-3
    assert bool(changed.all())


def test_colour_jitter_changes_saturation_of_colour_images():
    x = torch.rand(16, 20, 33, 3, generator=gen()) * 0.8 + 0.1
    spread = lambda t: (t.amax(-1) - t.amin(-1)).mean((1, 2))  # noqa: E731  how colourful each image is
    ratio = spread(color_jitter(x, 0.5, gen())) / spread(x)
    assert ratio.max() / ratio.min() > 1.1  # not one common factor: images got different saturations


def test_colour_jitter_keeps_grey_images_grey_and_in_place():
    x = channel_equal()
    out = color_jitter(x, 0.5, gen())
    for c in (1, 2):
        torch.testing.assert_close(out[..., c], out[..., 0])


def test_colour_jitter_leaves_geometry_alone():
    # A bright patch on a dark background stays exactly where it was, still brighter than the background.
    x = torch.full((32, 20, 33, 3), 0.2)
    x[:, 5:9, 10:20] = torch.tensor([0.8, 0.6, 0.4])
    out = color_jitter(x, 0.5, gen())
    patch = torch.zeros(20, 33, dtype=torch.bool)
    patch[5:9, 10:20] = True
    inside, outside = out[:, patch], out[:, ~patch]  # (B, pixels, C)
    assert torch.allclose(inside, inside[:, :1]) and torch.allclose(outside, outside[:, :1])
    assert bool((inside[:, 0].sum(-1) > outside[:, 0].sum(-1)).all())


def test_colour_jitter_on_grey_batches_changes_brightness_and_contrast_only():
    x = torch.rand(16, 20, 33, generator=gen()) * 0.8 + 0.1
    out = color_jitter(x, 0.4, gen())
    assert out.shape == x.shape and not torch.equal(out, x)
    # Each image goes through one increasing map: in order of the input's brightness, output pixels never get darker.
    order = x.flatten(1).argsort(1)
    assert bool((out.flatten(1).gather(1, order).diff(dim=1) >= 0).all())


def test_augment_batch_jitters_before_erasing_so_erased_pixels_stay_zero():
    x = torch.rand(64, 20, 33, 3, generator=gen()) * 0.8 + 0.1
    out = augment_batch(x, gen(), erase_p=1.0, jitter=0.5)
    erased = (out == 0).all(-1)
    assert bool(erased.flatten(1).any(1).all())


# ---------------------------------------------------------------- the setting

def test_colour_jitter_is_off_by_default_and_in_no_preset():
    from fittingroom.config.train_config import PRESETS

    assert TrainConfig().color_jitter == 0.0
    assert all(TrainConfig.from_preset(name).color_jitter == 0.0 for name in PRESETS)


def test_colour_jitter_counts_as_augmentation():
    assert not TrainConfig().augmenting
    assert TrainConfig(color_jitter=0.2).augmenting


@pytest.mark.parametrize("value", [-0.1, 1.0, 2.5])
def test_colour_jitter_out_of_range_is_refused(value):
    with pytest.raises(ConfigError, match=rf"`color_jitter` must be in \[0, 1\); received color_jitter={value}"):
        TrainConfig(color_jitter=value).validate()


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_colour_jitter_must_be_finite(value):
    with pytest.raises(ConfigError, match="`color_jitter` must be a finite number"):
        TrainConfig.from_dict({"color_jitter": value})


def test_colour_jitter_round_trips_through_a_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"preset": "seed", "color_jitter": 0.25}')
    assert TrainConfig.load(path).validate().color_jitter == 0.25


def test_training_with_colour_jitter_takes_the_general_loop_and_jitters(tiny_data):
    from helpers import make_trainer

    trainer = make_trainer(tiny_data, color_jitter=0.3, epochs=1)
    assert "augmentation" in trainer.unfused_reason and trainer._fused_step is None
    before = trainer.augment_gen.get_state()
    trainer.fit()
    assert not torch.equal(trainer.augment_gen.get_state(), before)  # the loop drew jitter factors
