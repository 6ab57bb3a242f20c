"""The resize and resize-pad preprocessing: colour kept, the conversion rule, crop and pad, recorded settings."""

import numpy as np
import pytest
from PIL import Image

from fittingroom.core.errors import ConfigError, RunError
from fittingroom.data.preprocess import (
    PREPROCESSING_METHODS,
    Preprocessing,
    describe,
    draft_for,
    image_mode_is_colour,
    load_image,
    open_image,
    prepare,
)

RED, GREEN = (200, 0, 0), (0, 102, 0)  # equal ITU-R 601-2 luma: 60 both


def colour_prep(h: int = 8, w: int = 8, method: str = "resize") -> Preprocessing:
    return Preprocessing(size=(h, w), method=method, channels=3)


def grey_prep(h: int = 8, w: int = 8, method: str = "resize") -> Preprocessing:
    return Preprocessing(size=(h, w), method=method, channels=1)


def save(tmp_path, img: Image.Image, name: str, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def halves(h: int, w: int, left, right, mode: str = "RGB") -> Image.Image:
    """An image whose left half is one colour and right half another."""
    img = Image.new(mode, (w, h), left)
    img.paste(Image.new(mode, (w - w // 2, h), right), (w // 2, 0))
    return img


def test_colour_is_kept_where_grey_loses_it(tmp_path):
    red = load_image(save(tmp_path, Image.new("RGB", (30, 20), RED), "red.png"), colour_prep())
    green = load_image(save(tmp_path, Image.new("RGB", (30, 20), GREEN), "green.png"), colour_prep())
    assert red.shape == green.shape == (8, 8, 3) and red.dtype == np.uint8
    assert (red == RED).all() and (green == GREEN).all()
    red_grey = load_image(tmp_path / "red.png", grey_prep())
    green_grey = load_image(tmp_path / "green.png", grey_prep())
    assert red_grey.shape == (8, 8) and np.array_equal(red_grey, green_grey) and (red_grey == 60).all()


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, :8] = (0, 0, 255, 255)  # opaque blue
    rgba[:, 8:] = (255, 0, 0, 0)  # transparent red: its colour must not show
    rgba[12:, :8, 3] = 0  # transparent black
    path = save(tmp_path, Image.fromarray(rgba, "RGBA"), "rgba.png")
    out = load_image(path, colour_prep(16, 16))
    assert (out[:8, 2:6] == (0, 0, 255)).all()
    assert (out[:, 11:] == 255).all() and (out[13:, 2:6] == 255).all()


def test_grey_with_alpha(tmp_path):
    la = np.zeros((16, 16, 2), dtype=np.uint8)
    la[:, :8] = (50, 255)  # opaque dark grey
    la[:, 8:] = (0, 0)  # transparent black
    path = save(tmp_path, Image.fromarray(la, "LA"), "la.png")
    grey = load_image(path, grey_prep(16, 16))
    assert grey.shape == (16, 16) and (grey[:, :6] == 50).all() and (grey[:, 11:] == 255).all()
    colour = load_image(path, colour_prep(16, 16))
    assert colour.shape == (16, 16, 3) and all(np.array_equal(colour[..., c], grey) for c in range(3))


def test_palette_with_and_without_transparency(tmp_path):
    img = halves(16, 16, RED, GREEN).quantize(2)
    out = load_image(save(tmp_path, img, "p.png"), colour_prep(16, 16))
    assert (out[:, :6] == RED).all() and (out[:, 11:] == GREEN).all()
    green_index = img.getpixel((15, 0))
    out = load_image(save(tmp_path, img, "p_clear.png", transparency=green_index), colour_prep(16, 16))
    assert (out[:, :6] == RED).all() and (out[:, 11:] == 255).all()  # the transparent index is white
    gif = load_image(save(tmp_path, img, "p_clear.gif", transparency=green_index), colour_prep(16, 16))
    assert np.array_equal(gif, out)


def test_cmyk_becomes_rgb(tmp_path):
    img = halves(16, 16, (255, 0, 0, 0), (0, 0, 0, 0), mode="CMYK")  # cyan ink, no ink
    out = load_image(save(tmp_path, img, "cmyk.tif"), colour_prep(16, 16))
    assert (out[:, :6] == (0, 255, 255)).all() and (out[:, 11:] == 255).all()


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    a = np.full((16, 16), 100 * 257, dtype=np.uint16)
    a[:, 8:] = 65535
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    out = load_image(save(tmp_path, img, "deep.png"), grey_prep(16, 16))
    assert (out[:, :6] == 100).all() and (out[:, 11:] == 255).all()
    colour = load_image(tmp_path / "deep.png", colour_prep(16, 16))
    assert (colour[:, :6] == 100).all()


def test_a_grey_image_for_a_colour_model_gives_three_equal_channels(tmp_path):
    grey = Image.fromarray((np.arange(24 * 24).reshape(24, 24) * 7 % 256).astype(np.uint8))
    path = save(tmp_path, grey, "grey.png")
    out = load_image(path, colour_prep())
    assert out.shape == (8, 8, 3)
    assert all(np.array_equal(out[..., c], load_image(path, grey_prep())) for c in range(3))


def test_a_jpeg_keeps_its_colour(tmp_path):
    # large enough that the JPEG is decoded scaled down (a draft), which once decoded it grey
    path = save(tmp_path, halves(400, 600, RED, (0, 0, 200)), "photo.jpg", quality=95)
    out = load_image(path, colour_prep())
    assert out.shape == (8, 8, 3)
    assert np.abs(out[:, 1].astype(int) - RED).max() < 12 and np.abs(out[:, 6].astype(int) - (0, 0, 200)).max() < 12
    grey = load_image(path, grey_prep())
    assert grey.shape == (8, 8) and abs(int(grey[4, 1]) - 60) < 6


def test_open_image_drafts_as_asked(tmp_path):
    path = save(tmp_path, halves(400, 600, RED, GREEN), "photo.jpg")
    old = open_image(path, decode=False)  # the default, as before: grey, scaled down towards 512
    assert old.mode == "L" and old.size == (600, 400)
    whole = open_image(path, decode=False, draft=None)
    assert whole.mode == "RGB" and whole.size == (600, 400)
    small = open_image(path, draft=draft_for(colour_prep()))  # 24x24 asked: 1/8 still covers it
    assert small.mode == "RGB" and small.size == (75, 50)
    assert draft_for(Preprocessing()) == ("L", (512, 512))
    assert image_mode_is_colour(old) and image_mode_is_colour(whole)  # the file's colour, whatever the draft


@pytest.mark.parametrize("h, w", [(20, 40), (40, 20)])
def test_resize_covers_and_crops_the_centre(tmp_path, h, w):
    # three bands across the long side: the outer quarters are cropped away, the middle fills the output
    img = Image.new("RGB", (w, h), RED)
    middle = (0, w // 4, w, h - h // 4) if h > w else (w // 4, 0, w - w // 4, h)
    img.paste(GREEN, middle)
    out = load_image(save(tmp_path, img, "bands.png"), colour_prep(8, 8))
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(int) - GREEN).max() <= 12  # the red bands are gone (Lanczos tints the edges)


def test_resize_gives_any_output_shape(tmp_path):
    path = save(tmp_path, Image.new("RGB", (30, 30), GREEN), "square.png")
    assert load_image(path, colour_prep(6, 10)).shape == (6, 10, 3)
    assert load_image(path, grey_prep(10, 6, "resize-pad")).shape == (10, 6)


@pytest.mark.parametrize("image_hw, out_hw, rows, cols", [
    ((20, 40), (8, 8), (2, 6), (0, 8)),  # wide: black above and below
    ((15, 40), (8, 8), (2, 5), (0, 8)),  # an odd margin: its extra row at the bottom
    ((40, 20), (8, 8), (0, 8), (2, 6)),  # tall: black left and right
    ((30, 30), (6, 10), (0, 6), (2, 8)),  # a square in a wide frame
])
def test_resize_pad_fits_and_centres_on_black(tmp_path, image_hw, out_hw, rows, cols):
    h, w = image_hw
    out = load_image(save(tmp_path, Image.new("RGB", (w, h), "white"), "white.png"), colour_prep(*out_hw, "resize-pad"))
    assert out.shape == (*out_hw, 3)
    inside = np.zeros(out_hw, dtype=bool)
    inside[rows[0]:rows[1], cols[0]:cols[1]] = True
    assert (out[inside] == 255).all() and (out[~inside] == 0).all()


@pytest.mark.parametrize("method", ["resize", "resize-pad"])
def test_a_large_photo_is_reduced_first_with_the_same_result(tmp_path, method):
    yy, xx = np.mgrid[0:900, 0:1200]
    smooth = np.stack([xx * 255 // 1199, yy * 255 // 899, (xx + yy) * 255 // 2098], axis=-1).astype(np.uint8)
    img = Image.fromarray(smooth)
    out = load_image(save(tmp_path, img, "big.png"), colour_prep(30, 40, method))  # the same 4:3: no crop, no pad
    direct = np.asarray(img.resize((40, 30), Image.Resampling.LANCZOS), dtype=int)
    assert out.shape == (30, 40, 3) and np.abs(out - direct).max() <= 2


def test_exif_orientation_is_applied(tmp_path):
    upright = halves(20, 40, RED, GREEN)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    path = save(tmp_path, upright.rotate(90, expand=True), "sideways.png", exif=exif.tobytes())
    out = load_image(path, colour_prep(10, 20, "resize-pad"))
    assert np.abs(out[:, :7].astype(int) - RED).max() <= 4 and np.abs(out[:, 13:].astype(int) - GREEN).max() <= 4


@pytest.mark.parametrize("mode, colour", [
    ("L", False), ("1", False), ("LA", False), ("I;16", False), ("RGB", True), ("RGBA", True), ("CMYK", True),
])
def test_image_mode_is_colour_from_the_mode(tmp_path, mode, colour):
    img = Image.fromarray(np.zeros((4, 4), dtype=np.uint16)) if mode == "I;16" else Image.new(mode, (4, 4))
    path = save(tmp_path, img, "x.tif" if mode == "CMYK" else "x.png")
    assert image_mode_is_colour(open_image(path, decode=False, draft=None)) is colour


@pytest.mark.parametrize("suffix", [".png", ".gif", ".bmp", ".tif"])
def test_image_mode_is_colour_reads_the_palette(tmp_path, suffix):
    grey_palette = Image.new("L", (4, 4), 90).convert("P")
    colour_palette = halves(4, 4, RED, GREEN).quantize(2)
    assert grey_palette.mode == colour_palette.mode == "P"
    grey = open_image(save(tmp_path, grey_palette, "grey" + suffix), decode=False, draft=None)
    colour = open_image(save(tmp_path, colour_palette, "colour" + suffix), decode=False, draft=None)
    assert not image_mode_is_colour(grey) and image_mode_is_colour(colour)


def test_old_model_json_is_object_on_grey():
    old = {"input_shape": [28, 28], "model_args": {"hidden": [64]},
           "preprocessing": {"size": [28, 28], "crop": True, "fill": 0.714, "centre": "box", "background": 0,
                             "threshold": 13}}
    prep = Preprocessing.from_info(old)
    assert prep == Preprocessing(size=(28, 28), fill=0.714)
    assert prep.method == "object" and prep.channels == 1
    assert Preprocessing.from_info({"input_shape": [32, 32]}) == Preprocessing(size=(32, 32))


def test_new_settings_round_trip_through_model_json():
    prep = colour_prep(32, 48, "resize-pad")
    info = {"input_shape": [32, 48], "model_args": {"in_channels": 3}, "preprocessing": prep.to_dict()}
    assert prep.to_dict()["method"] == "resize-pad" and prep.to_dict()["channels"] == 3
    assert Preprocessing.from_info(info) == prep


@pytest.mark.parametrize("change, message", [
    ({"method": "stretch"}, "preprocessing.method must be one of 'resize', 'resize-pad', 'object'; received 'stretch'"),
    ({"method": ["resize"]}, "preprocessing.method must be one of"),
    ({"channels": 2}, "preprocessing.channels must be 1 (grey) or 3 (colour); received 2"),
    ({"channels": True}, "preprocessing.channels must be 1 (grey) or 3 (colour); received True"),
    ({"method": "object", "channels": 3}, "'object' makes grey images, it needs channels 1"),
    ({"channels": 1}, "preprocessing.channels 1 does not match the model's model_args.in_channels 3"),
])
def test_invalid_recorded_settings_are_a_one_line_run_error(change, message):
    saved = {**colour_prep(8, 8).to_dict(), **change}
    info = {"input_shape": [8, 8], "model_args": {"in_channels": 3}, "preprocessing": saved}
    with pytest.raises(RunError, match="^run/model.json: ") as raised:
        Preprocessing.from_info(info, source="run/model.json")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_object_is_the_default_and_unchanged(tmp_path):
    assert Preprocessing().method == "object" and Preprocessing().channels == 1
    assert PREPROCESSING_METHODS == ("resize", "resize-pad", "object")
    rng = np.random.default_rng(0)
    page = np.clip(rng.normal(235, 4, (300, 400, 3)), 0, 255).astype(np.uint8)
    page[60:240, 220:340] = (40, 50, 90)  # a dark garment, off-centre on light paper
    path = save(tmp_path, Image.fromarray(page), "photo.jpg", quality=90)
    explicit = load_image(path, Preprocessing(method="object"))
    assert explicit.shape == (28, 28) and explicit[14, 14] > 150 and explicit[0, 0] < 10
    assert np.array_equal(load_image(path), explicit)
    img = Image.fromarray(page)
    assert np.array_equal(prepare(img), prepare(img, Preprocessing(method="object", channels=1)))


def test_unknown_method_in_code_is_a_config_error():
    with pytest.raises(ConfigError, match="received 'stretch'"):
        prepare(Image.new("RGB", (4, 4)), Preprocessing(method="stretch"))


def test_describe():
    assert describe(colour_prep(32, 32)) == "resize to 32x32, colour"
    assert describe(grey_prep(24, 32, "resize-pad")) == "resize-pad to 24x32 (HxW), grey"
    assert describe(Preprocessing()).startswith("object to 28x28, grey")
