import pytest
import torch

from fittingroom import count_params, create_model, list_models
from fittingroom.core.errors import ConfigError
from fittingroom.models import model_defaults


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_images_to_logits(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    x = torch.rand(5, 28, 28)
    out = model(x)
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_other_input_sizes(name):
    model = create_model(name, input_shape=(32, 32), num_classes=3).eval()
    assert model(torch.rand(2, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("name", list_models())
def test_every_model_is_rebuilt_identically_from_its_name_and_args(name):
    torch.manual_seed(1)
    a = create_model(name)
    b = create_model(name)
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 28, 28)
    assert torch.equal(a.eval()(x), b.eval()(x))
    assert {"input_shape", "num_classes"} <= set(model_defaults(name))


def test_tutorial_mlp_has_266610_parameters():
    assert count_params(create_model("mlp")) == 266_610


def test_mlp_is_initialised_like_keras():
    torch.manual_seed(0)
    first = create_model("mlp")[1]
    limit = (6 / (784 + 300)) ** 0.5  # Glorot uniform
    assert first.weight.abs().max() <= limit
    assert first.weight.abs().max() > 0.9 * limit
    assert torch.count_nonzero(first.bias) == 0


def test_mlp_arguments_change_the_network():
    deep = create_model("mlp", hidden=[64, 64, 64], dropout=0.2, batch_norm=True)
    kinds = [type(m).__name__ for m in deep]
    assert kinds.count("Linear") == 4 and kinds.count("Dropout") == 3 and kinds.count("BatchNorm1d") == 3


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ConfigError, match="unknown model 'vit'; valid names: cnn, mlp, resnet"):
        create_model("vit")


def test_unknown_argument_is_named():
    with pytest.raises(ConfigError, match="takes no argument widht"):
        create_model("mlp", widht=3)


@pytest.mark.parametrize("kwargs, message", [
    ({"dropout": 1.5}, "dropout=1.5"),
    ({"hidden": [300, -3]}, "hidden=-3"),
    ({"num_classes": 0}, "num_classes=0"),
])
def test_invalid_argument_values_are_echoed(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_model("mlp", **kwargs)


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ConfigError, match="depth=21"):
        create_model("resnet", depth=21)


def test_cnn_pools_before_batch_norm_unless_told_otherwise():
    from torch import nn

    first = [type(m) for m in create_model("cnn")][1:5]
    assert first == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU]
    after = [type(m) for m in create_model("cnn", pool_first=False)][1:5]
    assert after == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    x = torch.rand(4, 28, 28)
    assert create_model("cnn", pool_first=False)(x).shape == create_model("cnn")(x).shape == (4, 10)
    assert count_params(create_model("cnn", pool_first=False)) == count_params(create_model("cnn"))
