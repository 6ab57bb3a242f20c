"""Models of any size and any number of channels: grey (N, H, W) as before, colour (N, H, W, C) channels-last."""

import hashlib
import json
import re

import pytest
import torch

from fittingroom import count_params, create_model, list_models, model_summary
from fittingroom.config.train_config import PRESETS
from fittingroom.core.errors import ConfigError
from fittingroom.models import model_defaults, zoo

# Small widths so that every case runs in milliseconds; the registry's other models take their defaults.
TINY = {"mlp": {"hidden": [8]}, "cnn": {"widths": [4, 8, 8], "convs": [1, 1, 1]}, "resnet": {"depth": 8, "width": 4}}
SIZES = [(28, 28), (32, 32), (20, 36), (64, 64)]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def images(n: int, shape: tuple[int, int], channels: int) -> torch.Tensor:
    """Float images in [0, 1] as a model takes them: (N, H, W) grey, (N, H, W, C) colour."""
    return torch.rand(n, *shape) if channels == 1 else torch.rand(n, *shape, channels)


def tiny(name: str, channels: int, shape=(28, 28), **kwargs) -> torch.nn.Module:
    return create_model(name, input_shape=shape, num_classes=5, in_channels=channels, **TINY.get(name, {}), **kwargs)


def layout(model: torch.nn.Module) -> str:
    """A fingerprint of the state dict's names and shapes: what a weights file must match."""
    text = "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_images_of_any_size_and_channels_to_logits(name, channels, shape):
    torch.manual_seed(0)
    model = tiny(name, channels, shape)
    out = model(images(4, shape, channels))
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_channel_arguments_are_model_arguments_with_grey_defaults(name):
    defaults = model_defaults(name)
    assert (defaults["in_channels"], defaults["mean"], defaults["std"]) == (1, None, None)


# Today's grey networks, pinned: parameter counts and the state dict's layout (computed before colour existed),
# so that every weights file written before loads into the same network.
@pytest.mark.parametrize("name, args, params, fingerprint", [
    ("mlp", {}, 266_610, "c04d07d59614ffb4"),
    ("cnn", {}, 278_890, "f76fe00182ec6452"),  # the cnn preset's network until it grew a fourth stage
    ("cnn", PRESETS["cnn"]["model_args"], 538_602, "36540e1ff4be5ed8"),
    ("resnet", {}, 272_186, "6d8368339c223bc4"),
    ("resnet", PRESETS["resnet"]["model_args"], 1_084_010, "bdd073b99fb0a4f2"),
])
def test_grey_models_keep_their_parameters_and_weights_layout(name, args, params, fingerprint):
    for model in (create_model(name, **args), create_model(name, **args, in_channels=1)):
        assert count_params(model) == params
        assert layout(model) == fingerprint
    assert list(create_model("mlp").state_dict()) == ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight",
                                                      "5.bias"]


@pytest.mark.parametrize("name, args, params", [
    ("mlp", {"input_shape": (32, 32)}, 3 * 32 * 32 * 300 + 300 + 30_100 + 1_010),  # 953,010
    ("cnn", {}, 278_890 + 2 * 3 * 3 * 32),  # the first convolution sees 3 channels, not 1: 279,466
    ("resnet", {}, 272_186 + 2 * 3 * 3 * 16),  # the stem's convolution likewise: 272,474
])
def test_colour_changes_only_the_first_layer(name, args, params):
    assert count_params(create_model(name, in_channels=3, **args)) == params


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_mean_and_std_normalise_inside_the_model_without_weights(name, channels):
    torch.manual_seed(0)
    plain = tiny(name, channels).eval()
    mean, std = MEAN[:channels], STD[:channels]
    normalised = tiny(name, channels, mean=mean, std=std).eval()
    # No buffers: the same tensors, in the same order (a Sequential's numbering moves by one).
    assert [v.shape for v in normalised.state_dict().values()] == [v.shape for v in plain.state_dict().values()]
    normalised.load_state_dict(dict(zip(normalised.state_dict(), plain.state_dict().values())))
    x = images(3, (28, 28), channels)
    by_hand = (x - torch.tensor(mean)) / torch.tensor(std)  # per channel: the last axis (or the grey value)
    torch.testing.assert_close(normalised(x), plain(by_hand))


def test_mean_alone_subtracts_and_std_alone_divides():
    torch.manual_seed(0)
    plain = tiny("mlp", 3).eval()
    x = images(2, (28, 28), 3)
    for kwargs, by_hand in (({"mean": MEAN}, x - torch.tensor(MEAN)), ({"std": STD}, x / torch.tensor(STD))):
        model = tiny("mlp", 3, **kwargs).eval()
        model.load_state_dict(dict(zip(model.state_dict(), plain.state_dict().values())))
        torch.testing.assert_close(model(x), plain(by_hand))


@pytest.mark.parametrize("name", list_models())
def test_a_colour_model_is_rebuilt_from_its_json_arguments(name):
    torch.manual_seed(0)
    args = {**TINY.get(name, {}), "input_shape": [20, 36], "in_channels": 3, "mean": MEAN, "std": STD}
    a = create_model(name, **args).eval()
    b = create_model(name, **json.loads(json.dumps({**model_defaults(name), **args}))).eval()
    b.load_state_dict(a.state_dict())
    x = images(2, (20, 36), 3)
    assert torch.equal(a(x), b(x))


def test_colour_input_becomes_channels_first_without_a_copy():
    x = torch.rand(2, 5, 7, 3)  # (N, H, W, C)
    out = zoo.ChannelsFirst(3)(x)
    assert out.shape == (2, 3, 5, 7)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.data_ptr() == x.data_ptr()
    assert torch.equal(out[:, 1], x[..., 1])


def test_a_colour_model_names_the_layout_it_takes():
    with pytest.raises(ValueError, match=r"takes images \(N, H, W, 3\), channels last; received a tensor of "
                                         r"shape \(2, 28, 28\)"):
        tiny("cnn", 3)(torch.rand(2, 28, 28))


@pytest.mark.parametrize("shape, widths, smallest", [
    ((7, 28), [4, 8, 8], 8), ((28, 4), [4, 8, 8], 8), ((3, 3), [4, 8], 4), ((1, 9), [4], 2),
])
def test_cnn_refuses_images_too_small_for_its_pooling_stages(shape, widths, smallest):
    message = re.escape(f"too small for {len(widths)} pooling stages: each side must be at least {smallest} "
                        f"pixels (2 ** stages); received input_shape={list(shape)}; use larger images or fewer")
    with pytest.raises(ValueError, match=message):
        zoo.cnn(input_shape=shape, widths=widths, convs=[1] * len(widths))
    with pytest.raises(ConfigError, match=message):
        create_model("cnn", input_shape=shape, widths=widths, convs=[1] * len(widths), in_channels=3)
    side = (smallest, smallest)  # the smallest size that fits: every pooled side is 1 pixel
    assert create_model("cnn", input_shape=side, widths=widths, convs=[1] * len(widths))(torch.rand(2, *side)).shape \
        == (2, 10)


@pytest.mark.parametrize("name", ["mlp", "resnet"])
def test_mlp_and_resnet_take_images_down_to_one_pixel(name):
    # The ResNet's stride-2 stages halve a side rounding up, so no side reaches 0.
    model = tiny(name, 3, (1, 3)).eval()
    assert model(images(2, (1, 3), 3)).shape == (2, 5)


@pytest.mark.parametrize("kwargs, message", [
    ({"in_channels": 0}, "in_channels=0"),
    ({"in_channels": True}, "in_channels=True"),
    ({"in_channels": 3, "mean": [0.5]}, r"`mean` must be a list of 3 finite numbers.*received mean=\[0.5\]"),
    ({"in_channels": 3, "std": [0.2, 0.0, 0.2]}, r"`std` must be a list of 3 finite positive numbers"),
    ({"mean": [float("nan")]}, "received mean=\\[nan\\]"),
    ({"std": "0.5"}, "received std='0.5'"),
])
@pytest.mark.parametrize("name", list_models())
def test_invalid_channel_arguments_are_echoed(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_model(name, **kwargs)


def test_colour_mlp_summary_counts_every_channel():
    text = model_summary(create_model("mlp", input_shape=(32, 32), in_channels=3), (32, 32, 3), name="mlp")
    assert "flatten (Flatten)            (None, 3072)              0" in text
    assert "dense (Dense)                (None, 300)               921900" in text
    assert "Total params: 953,010" in text


@pytest.mark.parametrize("name", list_models())
def test_colour_summary_shows_the_channels_last_input_and_counts_right(name):
    model = tiny(name, 3, (20, 36), mean=MEAN, std=STD)
    text = model_summary(model, (20, 36, 3), name=name)
    assert "normalization (Normalization)" in text and "(None, 20, 36, 3)" in text
    if name != "mlp":
        assert "permute (Permute)" in text and "(None, 3, 20, 36)" in text
    assert f"Total params: {count_params(model):,}" in text
    # (H, W) alone: the channels are the model's own.
    assert model_summary(model, (20, 36), name=name) == text


def test_grey_summary_is_unchanged_with_or_without_a_channel_axis():
    model = create_model("cnn", widths=[8], convs=[2])
    text = model_summary(model, (28, 28))
    assert model_summary(model, (28, 28, 1)) == text
    assert re.search(r"reshape \(Reshape\) +\(None, 1, 28, 28\) +0", text)


def test_resnet_shortcut_is_the_strided_projection_and_trains_on_large_maps():
    # The projection subsamples, then runs a 1x1 convolution at stride 1: the function of a strided 1x1
    # convolution, without oneDNN's crash in that one's weight gradient (narrow channels-last maps of 64+ pixels).
    torch.manual_seed(0)
    block = zoo.BasicBlock(4, 8, stride=2).to(memory_format=torch.channels_last)
    x = torch.rand(2, 4, 65, 64).contiguous(memory_format=torch.channels_last)
    conv, norm = block.shortcut
    strided = norm(torch.nn.functional.conv2d(x.contiguous(), conv.weight.contiguous(), stride=2))
    torch.testing.assert_close(block.shortcut(x[:, :, ::2, ::2]), strided)
    out = block(x)
    assert out.shape == (2, 8, 33, 32)
    out.sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
