import io

import numpy as np
import pytest
from PIL import Image

from fittingroom.core.errors import ImageError
from fittingroom.data.preprocess import ImageTooLarge, Preprocessing, load_image, open_image, prepare
from helpers import bomb_png


def garment(h: int = 28, w: int = 28) -> np.ndarray:
    """A light T-shirt-like shape on black that fills the frame's height, as Fashion-MNIST's do."""
    x = np.zeros((h, w), dtype=np.uint8)
    x[0:8, 2:26] = 200  # shoulders and sleeves
    x[8:28, 7:21] = 170  # body
    x[12:20, 10:18] = 230  # a print
    return x


def photo(image: np.ndarray, scale: int = 12, canvas=(600, 800), at=(40, 420), paper: int = 240) -> Image.Image:
    """``image`` as a product photo: dark on a light background, large and off-centre, with some noise."""
    h, w = image.shape
    big = np.asarray(Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.BICUBIC), dtype=np.float32)
    ink = np.zeros(canvas, dtype=np.float32)
    ink[at[0]:at[0] + h * scale, at[1]:at[1] + w * scale] = np.clip(big, 0, 255) / 255.0
    rng = np.random.default_rng(0)
    rgb = paper * (1 - ink[..., None]) * np.array([1.0, 0.97, 0.93]) + rng.normal(0, 3, canvas + (3,))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_a_product_photo_becomes_the_training_image():
    x = garment()
    out = load_image(png_bytes(photo(x)), Preprocessing())
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - x).mean() < 12  # edges are softer after the round trip, nothing else moves
    assert np.corrcoef(out.ravel(), x.ravel())[0, 1] > 0.95


def test_training_like_images_pass_unchanged():
    x = garment()
    assert np.array_equal(prepare(Image.fromarray(x), Preprocessing()), x)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_grey_colour_alpha_palette_and_16_bit_give_the_same_input(mode):
    dark = Image.fromarray(255 - garment())  # dark on white
    if mode == "I;16":
        img = Image.fromarray((np.asarray(dark, dtype=np.uint16) * 257).astype(np.uint16))
        assert img.mode == "I;16"
    else:
        img = dark.convert(mode)
    assert np.array_equal(load_image(png_bytes(img)), prepare(dark))


def test_transparent_background_is_composited_behind_the_object():
    x = garment()
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 20  # a dark garment ...
    rgba[..., 3] = x  # ... visible where the garment is, transparent elsewhere
    dark_on_clear = load_image(png_bytes(Image.fromarray(rgba, "RGBA")))
    rgba[..., :3] = 250  # a light garment on a transparent background
    light_on_clear = load_image(png_bytes(Image.fromarray(rgba, "RGBA")))
    for out in (dark_on_clear, light_on_clear):
        assert out[0, 0] == 0 and out[14, 14] > 100  # object light, background black either way


def test_exif_orientation_is_applied():
    x = garment()
    upright = prepare(Image.fromarray(255 - x))
    stored = Image.fromarray(255 - x).rotate(90, expand=True)  # a camera stored it sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and says "rotate 90 clockwise to view"
    out = load_image(png_bytes(stored, format="JPEG", exif=exif.tobytes(), quality=95))
    assert np.abs(out.astype(int) - upright).mean() < 8
    assert np.abs(load_image(png_bytes(stored, format="JPEG", quality=95)).astype(int) - upright).mean() > 30


def test_gif_uses_the_first_frame():
    first, second = Image.fromarray(255 - garment()), Image.new("L", (28, 28), 255)
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=[second])
    assert np.array_equal(load_image(buf.getvalue()), prepare(first))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP"])
def test_other_formats_read(fmt):
    out = load_image(png_bytes(photo(garment(), scale=6, canvas=(300, 400), at=(20, 100)), format=fmt))
    assert np.corrcoef(out.ravel(), garment().ravel())[0, 1] > 0.9


def test_a_blank_image_gives_an_empty_input():
    assert not load_image(png_bytes(Image.new("RGB", (50, 40), "white"))).any()


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"hello, not an image", "not a readable image"),
    (None, "truncated"),  # filled in below: a real PNG cut short
    (bomb_png(100_000, 100_000), "over the limit"),  # Pillow's own bomb check
    (bomb_png(8_000, 6_000), "8000x6000 pixels is over the limit"),  # ours, stricter
])
def test_bad_images_raise_image_error(data, message):
    if data is None:
        data = png_bytes(photo(garment(), scale=4, canvas=(200, 200), at=(10, 10)))[:2000]
    with pytest.raises(ImageError, match=message) as info:
        load_image(data, name="upload.png")
    assert str(info.value).startswith("upload.png: ")


def test_pixel_limit_is_checked_before_decoding():
    data = png_bytes(Image.new("L", (400, 300)))
    assert open_image(data, max_pixels=120_000).size == (400, 300)
    with pytest.raises(ImageTooLarge, match="400x300 pixels"):
        open_image(data, max_pixels=119_999)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_fit_finds_fashion_mnist_framing():
    rng = np.random.default_rng(0)
    images = np.zeros((50, 28, 28), dtype=np.uint8)
    for img in images:
        w = int(rng.integers(10, 28))  # full height, varying width, centred as Fashion-MNIST centres
        left = (28 - w + 1) // 2
        img[:, left:left + w] = rng.integers(50, 255)
    prep = Preprocessing.fit(images)
    assert prep.crop and prep.fill == 1.0 and prep.centre == "box" and prep.background == 0


def test_fit_finds_mnist_framing_by_centre_of_mass():
    triangle = np.tril(np.full((20, 20), 255, dtype=np.uint8))  # its centre of mass is 3 pixels off its box's centre
    ys, xs = np.nonzero(triangle)
    top, left = int(round(13.5 - ys.mean())), int(round(13.5 - xs.mean()))
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    images[:, top:top + 20, left:left + 20] = triangle  # MNIST: a 20x20 box, centred by its centre of mass
    prep = Preprocessing.fit(images)
    assert prep.crop and prep.centre == "mass" and prep.fill == pytest.approx(20 / 28, abs=0.01)
    # a drawing of the same triangle, small and in a corner, is moved and scaled to where training put it
    drawing = np.zeros((100, 100), dtype=np.uint8)
    drawing[5:45, 5:45] = np.asarray(Image.fromarray(triangle).resize((40, 40)))
    out = prepare(Image.fromarray(drawing), prep)
    assert np.abs(out.astype(int) - images[0]).mean() < 10


def test_fit_leaves_position_alone_when_it_carries_the_class():
    from helpers import make_images

    images, _ = make_images(200)  # the class is which quadrant the square is in
    prep = Preprocessing.fit(images)
    assert not prep.crop
    x = images[0]
    assert np.abs(prepare(Image.fromarray(x), prep).astype(int) - x).max() <= prep.background + 1


def test_preprocessing_round_trips_through_model_json_and_has_defaults_for_old_files():
    prep = Preprocessing(size=(28, 28), crop=True, fill=0.714, centre="mass", background=3, threshold=13)
    assert Preprocessing.from_info({"preprocessing": prep.to_dict()}) == prep
    old = {"input_shape": [32, 32], "preprocessing": {"scale": 255.0, "background": "dark", "colour": "grey"}}
    assert Preprocessing.from_info(old) == Preprocessing(size=(32, 32))
