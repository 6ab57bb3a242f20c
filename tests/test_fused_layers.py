"""The CNN's fused pooling, batch norm and ReLU (models/fused_layers.py) against PyTorch's modules."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fittingroom.core.device import cpu_has_fast_bf16
from fittingroom.models.fused_layers import (
    FUSED_LAYERS,
    SMALL_MAP_PIXELS,
    ConvNet,
    compiled_layers,
    conv_pool_norm_relu,
    pool_norm_relu,
    small_map_conv,
)
from fittingroom.models.zoo import cnn
from helpers import make_trainer

CHANNELS_LAST = torch.channels_last


@pytest.fixture(scope="module")
def ext():
    loaded = FUSED_LAYERS.load()
    assert not isinstance(loaded, str), loaded  # a reason string means it could not be built
    return loaded


def bf16_map(n, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) * 2 + 0.3
    return x.bfloat16().contiguous(memory_format=CHANNELS_LAST)


def norm_layer(c, momentum=0.1, seed=1):
    norm = nn.BatchNorm2d(c, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(c, generator=g) + 0.5)
        norm.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return norm


def close(a, b):
    """Equal to bfloat16 rounding: the same sums in another order can move a value by one unit in the last place."""
    scale = b.float().abs().max().clamp_min(1e-6)
    torch.testing.assert_close(a.float() / scale, b.float() / scale, rtol=0, atol=2**-7)


def through_modules(x, norm, pool, grad):
    x = x.clone().requires_grad_()
    y = F.relu(norm(F.max_pool2d(x, 2) if pool else x))
    y.backward(grad)
    return y, x.grad


def through_fused(x, norm, pool, grad):
    x = x.clone().requires_grad_()
    y = pool_norm_relu(x, norm, pool)
    y.backward(grad)
    return y, x.grad


def test_the_fused_layers_are_built_here(ext):
    assert compiled_layers() is ext


@pytest.mark.parametrize("pool", [False, True], ids=["norm-relu", "pool-norm-relu"])
@pytest.mark.parametrize("shape", [(16, 32, 14, 14), (4, 5, 7, 7), (3, 8, 9, 6)], ids=str)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_the_same_outputs_gradients_and_state_as_the_modules(ext, pool, shape, momentum):
    x = bf16_map(*shape)
    ref_norm, norm = norm_layer(shape[1], momentum), norm_layer(shape[1], momentum)
    out_shape = (shape[0], shape[1], shape[2] // 2, shape[3] // 2) if pool else shape
    grad = torch.randn(out_shape, generator=torch.Generator().manual_seed(2)).bfloat16()
    grad = grad.contiguous(memory_format=CHANNELS_LAST)
    for _ in range(2):  # the second step sees the running statistics the first one left
        y_ref, dx_ref = through_modules(x, ref_norm, pool, grad)
        y, dx = through_fused(x, norm, pool, grad)
        assert y.dtype == dx.dtype == torch.bfloat16 and y.shape == out_shape and dx.shape == shape
        assert y.is_contiguous(memory_format=CHANNELS_LAST) and dx.is_contiguous(memory_format=CHANNELS_LAST)
        close(y, y_ref)
        close(dx, dx_ref)
        torch.testing.assert_close(norm.weight.grad, ref_norm.weight.grad, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(norm.bias.grad, ref_norm.bias.grad, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(norm.running_mean, ref_norm.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(norm.running_var, ref_norm.running_var, rtol=1e-5, atol=1e-6)
        assert int(norm.num_batches_tracked) == int(ref_norm.num_batches_tracked)
        x = x * 0.5 + 0.25


def test_pooling_chooses_among_equals_and_nans_as_pytorch_does(ext):
    """Ties and NaN decide which pixel gets the gradient: the first of equals in scan order; NaN wins."""
    x = torch.tensor([[1.0, 1.0, 2.0, 3.0, 7.0], [1.0, 0.5, 3.0, 3.0, 8.0],
                      [0.0, float("nan"), 5.0, 4.0, 9.0], [float("nan"), 9.0, 4.0, 5.0, 6.0],
                      [-0.0, 0.0, 1.0, 1.0, 2.0]])
    x = x.expand(2, 16, 5, 5).bfloat16().contiguous(memory_format=CHANNELS_LAST)
    _, pooled, which, _ = ext.forward(x, torch.ones(16), torch.zeros(16), 1e-5, True)
    expected, indices = F.max_pool2d(x.float(), 2, return_indices=True)
    assert torch.equal(pooled.float().isnan(), expected.isnan())
    assert torch.equal(pooled.float().nan_to_num(), expected.nan_to_num())
    k = which.view(2, 2, 2, 16).permute(0, 3, 1, 2).long()  # (N, Ho, Wo, C) -> (N, C, Ho, Wo), 0-3 in the window
    i, j = torch.arange(2).view(2, 1), torch.arange(2).view(1, 2)
    assert torch.equal((2 * i + k // 2) * 5 + 2 * j + k % 2, indices)


def test_the_gradient_reaches_the_pixel_pytorch_chooses(ext):
    x = torch.zeros(1, 16, 4, 4)
    x[0, :, 0, 1] = 2.0  # window (0, 0): the second pixel
    x[0, :, 1, 2] = 2.0  # window (0, 1): the third
    x[0, :, 3, 3] = 2.0  # window (1, 1): the fourth
    x[0, 1::2] *= -1  # odd channels: every value <= 0, so ties of zeros pick the first pixel
    x = x.expand(4, 16, 4, 4).bfloat16().contiguous(memory_format=CHANNELS_LAST)
    grad = torch.rand(4, 16, 2, 2, generator=torch.Generator().manual_seed(0)).bfloat16()
    grad = grad.contiguous(memory_format=CHANNELS_LAST)
    _, dx_ref = through_modules(x, norm_layer(16), True, grad)
    _, dx = through_fused(x, norm_layer(16), True, grad)
    assert torch.equal(dx != 0, dx_ref != 0)


def test_odd_sides_leave_the_last_row_and_column_without_gradient(ext):
    x = bf16_map(2, 16, 7, 5)
    grad = torch.ones(2, 16, 3, 2).bfloat16().contiguous(memory_format=CHANNELS_LAST)
    _, dx = through_fused(x, norm_layer(16), True, grad)
    assert not dx[:, :, 6, :].any() and not dx[:, :, :, 4].any()


def test_the_result_does_not_depend_on_the_number_of_threads(ext):
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            x = bf16_map(8, 32, 14, 14)
            grad = torch.ones(8, 32, 7, 7).bfloat16().contiguous(memory_format=CHANNELS_LAST)
            norm = norm_layer(32)
            y, dx = through_fused(x, norm, True, grad)
            results.append((y, dx, norm.weight.grad, norm.running_var.clone()))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_a_nan_in_the_map_gives_nan_outputs(ext):
    x = bf16_map(2, 16, 4, 4)
    x[0, 3, 1, 1] = float("nan")
    y = pool_norm_relu(x, norm_layer(16), False)
    assert y[:, 3].isnan().all() and not y[:, 2].isnan().any()


@pytest.mark.parametrize("shape", [(8, 1, 28, 28, 32), (4, 3, 9, 7, 16), (2, 2, 5, 6, 8)], ids=str)
def test_the_first_convolution_takes_its_gradient_from_the_pooled_map(ext, shape):
    """A first convolution fused with its run: its weight's gradient from the chosen pixels' patches alone."""
    n, c_in, h, w, c = shape
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(c_in, c, 3, padding=1, bias=False), norm_layer(c)
    conv2, norm2 = copy.deepcopy(conv), copy.deepcopy(norm)
    x = torch.rand(n, c_in, h, w).contiguous(memory_format=CHANNELS_LAST)
    grad = torch.randn(n, c, h // 2, w // 2).bfloat16().contiguous(memory_format=CHANNELS_LAST)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref = F.relu(norm(F.max_pool2d(conv(x), 2)))
        y = conv_pool_norm_relu(x, conv2, norm2)
    y_ref.backward(grad)
    y.backward(grad)
    close(y, y_ref)
    # oneDNN rounds the weight's gradient to bf16 (autocast), the fused run keeps float32: 1% apart at most
    assert float((conv2.weight.grad - conv.weight.grad).norm() / conv.weight.grad.norm()) < 0.01
    assert conv2.weight.grad.dtype == torch.float32
    torch.testing.assert_close(norm2.weight.grad, norm.weight.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(norm2.bias.grad, norm.bias.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(norm2.running_var, norm.running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 64, 128, 7, 7), (8, 32, 48, 3, 3), (3, 8, 16, 5, 6), (1, 16, 16, 1, 1)], ids=str)
@pytest.mark.parametrize("input_grad", [True, False])
def test_a_small_map_convolution_has_autocasts_gradients(shape, input_grad):
    """The weight's gradient as a forward convolution over the batch: autocast's to bf16 rounding; the input's
    gradient and the output are oneDNN's own."""
    n, c_in, c_out, h, w = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False).to(memory_format=CHANNELS_LAST)
    conv2 = copy.deepcopy(conv)
    x = bf16_map(n, c_in, h, w)
    grad = bf16_map(n, c_out, h, w, seed=1)
    x1, x2 = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref = conv(x1)
        y = small_map_conv(x2, conv2)
    y_ref.backward(grad)
    y.backward(grad)
    assert torch.equal(y, y_ref)
    assert conv2.weight.grad.dtype == torch.float32 and conv2.weight.grad.shape == conv.weight.grad.shape
    close(conv2.weight.grad, conv.weight.grad)
    assert float((conv2.weight.grad - conv.weight.grad).norm() / conv.weight.grad.norm()) < 0.005
    if input_grad:
        torch.testing.assert_close(x2.grad, x1.grad, rtol=0, atol=0)
    else:
        assert x2.grad is None


@pytest.mark.parametrize("shape", [(128, 128, 7, 7), (5, 3, 3, 2), (2, 16, 1, 1), (9, 1, 4, 4)], ids=str)
def test_the_compiled_transpose_puts_the_batch_in_place_of_the_channels(ext, shape):
    x = bf16_map(*shape)
    assert torch.equal(ext.batch_channel_transpose(x), x.transpose(0, 1).contiguous())
    with pytest.raises(RuntimeError, match="channels-last"):
        ext.batch_channel_transpose(x.contiguous() if shape[1] > 1 and shape[2] * shape[3] > 1 else x.float())


def test_the_cnn_takes_the_small_map_convolution_from_7x7_down(ext, monkeypatch):
    from fittingroom.models import fused_layers

    sizes = []
    real = fused_layers.small_map_conv
    monkeypatch.setattr(fused_layers, "small_map_conv", lambda x, conv: sizes.append(tuple(x.shape[1:])) or real(x, conv))
    model = cnn(widths=(16, 32, 64, 64), convs=(1, 2, 2, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(4, 28, 28)).sum().backward()
    assert SMALL_MAP_PIXELS == 49
    assert sizes == [(32, 7, 7), (64, 7, 7), (64, 3, 3)]  # not the 14x14 ones
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in model if isinstance(m, nn.Conv2d))


def test_the_cnn_trains_its_first_convolution_in_the_fused_run(ext, monkeypatch):
    from fittingroom.models import fused_layers

    runs = []
    for name in ("pool_norm_relu", "conv_pool_norm_relu"):
        real = getattr(fused_layers, name)
        monkeypatch.setattr(fused_layers, name, lambda *a, real=real, name=name: runs.append(name) or real(*a))
    model = cnn(widths=(16, 32), convs=(1, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(4, 28, 28)).sum().backward()
    assert runs == ["conv_pool_norm_relu", "pool_norm_relu", "pool_norm_relu"]
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0


def test_the_cnn_is_a_convnet_with_a_fused_run_after_every_convolution():
    model = cnn()
    assert isinstance(model, ConvNet) and isinstance(model, nn.Sequential)
    convs = sum(isinstance(m, nn.Conv2d) for m in model)
    runs = model.runs()
    assert len(runs) == convs == 5
    assert [pool for _, _, pool in runs] == [True, False, True, False, True]
    assert len(cnn(pool_first=False).runs()) == 5  # conv, norm, relu, then pooling: the runs without it


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 autocast is slow here: the cnn trains in fp32, unfused")
def test_a_cnn_training_step_is_as_accurate_as_the_modules(ext, monkeypatch):
    """The gradients of a bf16 step through the fused layers are as close to the fp32 step's as the modules' are
    (bf16 alone moves them by 1-40%; the fused layers' other rounding order by about 1%)."""
    torch.manual_seed(0)
    base = cnn(widths=(16, 32), convs=(1, 2))
    x = torch.rand(32, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 10

    def step(loaded, bf16):
        model = copy.deepcopy(base)
        monkeypatch.setattr(FUSED_LAYERS, "loaded", loaded)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            F.cross_entropy(model(x).float(), y).backward()
        return model, {name: p.grad for name, p in model.named_parameters()}

    fused, g_fused = step(FUSED_LAYERS.loaded, True)
    plain, g_plain = step("switched off", True)
    _, g_fp32 = step("switched off", False)
    for name, exact in g_fp32.items():
        def error(g, exact=exact):
            return float((g - exact).norm() / exact.norm())
        assert error(g_fused[name]) <= 1.25 * error(g_plain[name]) + 0.005, name
        assert float((g_fused[name] - g_plain[name]).norm() / g_plain[name].norm()) < 0.05, name
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)  # the running statistics
    fused.eval(), plain.eval()
    with torch.no_grad():  # evaluation in fp32 takes PyTorch's modules: the same function of the same state
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-4, atol=1e-4)


class CountedLayers:
    """The compiled layers, counting the calls of ``infer``."""

    def __init__(self, ext):
        self.ext, self.infers = ext, 0

    def __getattr__(self, name):
        return getattr(self.ext, name)

    def infer(self, *args):
        self.infers += 1
        return self.ext.infer(*args)


def test_fp32_and_evaluation_with_gradients_take_the_modules(ext, monkeypatch):
    for name in ("pool_norm_relu", "conv_pool_norm_relu"):
        monkeypatch.setattr(f"fittingroom.models.fused_layers.{name}", lambda *a: pytest.fail("the fused layers ran"))
    counted = CountedLayers(ext)
    monkeypatch.setattr("fittingroom.models.fused_layers.compiled_layers", lambda: counted)
    model = cnn(widths=(16, 32), convs=(1, 1))
    x = torch.rand(4, 28, 28)
    model(x).sum().backward()  # fp32
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).sum().backward()  # a saliency map's gradient, through the modules
    with torch.no_grad():
        model(x)  # fp32 without gradients
    assert counted.infers == 0


def eval_norm_layer(c, seed=2):
    """A batch norm in evaluation with running statistics of its own."""
    norm = norm_layer(c, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
        norm.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.2)
    return norm.eval()


@pytest.mark.parametrize("pool", [False, True], ids=["norm-relu", "pool-norm-relu"])
@pytest.mark.parametrize("shape", [(16, 32, 14, 14), (3, 8, 9, 6), (2, 5, 3, 3)], ids=str)
def test_evaluation_normalises_with_the_running_statistics(ext, pool, shape):
    from fittingroom.models.fused_layers import _eval_affine

    x = bf16_map(*shape)
    x[0, 0, 0, :2] = float("nan")  # NaN chosen and kept as PyTorch keeps it
    norm = eval_norm_layer(shape[1])
    with torch.no_grad():
        expected = F.relu(norm(F.max_pool2d(x, 2) if pool else x))
        y = ext.infer(x, None, *_eval_affine(norm), pool)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=CHANNELS_LAST)
    assert torch.equal(y.isnan(), expected.isnan()) and y.isnan().any()
    close(y.nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("shape", [(8, 1, 28, 28, 32), (4, 3, 9, 7, 16), (2, 2, 5, 6, 8)], ids=str)
def test_evaluation_takes_the_first_convolution_with_its_run(ext, shape):
    from fittingroom.models.fused_layers import _eval_affine

    n, cin, h, w, c = shape
    x = bf16_map(n, cin, h, w)
    conv = nn.Conv2d(cin, c, 3, padding=1, bias=False)
    norm = eval_norm_layer(c)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.relu(norm(F.max_pool2d(conv(x), 2)))
        y = ext.infer(x, conv.weight, *_eval_affine(norm), True)
    assert y.shape == (n, c, h // 2, w // 2)
    close(y, expected)


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 autocast is slow here: the cnn evaluates in fp32")
def test_a_cnn_evaluates_without_gradients_through_the_fused_runs(ext, monkeypatch):
    """Each run, the first convolution's included, in one compiled call; the modules' function of the same state."""
    counted = CountedLayers(ext)
    monkeypatch.setattr("fittingroom.models.fused_layers.compiled_layers", lambda: counted)
    model = cnn(widths=(16, 32, 64), convs=(1, 2, 1))
    x = torch.rand(16, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):  # running statistics of its own
            model(x).sum().backward()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = model(x)
        assert counted.infers == len(model.runs())  # one call a run, the first with its convolution
        monkeypatch.setattr(FUSED_LAYERS, "loaded", "switched off")
        plain = model(x)
    close(fused, plain)


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 autocast is slow here: the cnn evaluates in fp32")
def test_training_mode_without_gradients_updates_the_statistics_as_the_modules_do(ext, monkeypatch):
    counted = CountedLayers(ext)
    monkeypatch.setattr("fittingroom.models.fused_layers.compiled_layers", lambda: counted)
    base = cnn(widths=(16, 32), convs=(1, 1))
    x = torch.rand(8, 28, 28, generator=torch.Generator().manual_seed(0))
    fused, plain = copy.deepcopy(base), copy.deepcopy(base)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused(x)
        monkeypatch.setattr(FUSED_LAYERS, "loaded", "switched off")
        plain(x)
    assert counted.infers == 0
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert fused[3].num_batches_tracked == 1


def test_a_hooked_run_takes_the_modules_so_that_its_hook_sees_the_call(ext, monkeypatch):
    from fittingroom.models import fused_layers

    fused_norms = []
    real = fused_layers.pool_norm_relu
    monkeypatch.setattr(fused_layers, "pool_norm_relu", lambda x, norm, pool: fused_norms.append(norm) or real(x, norm, pool))
    model = cnn(widths=(16, 32), convs=(1, 1))
    seen = []
    model[3].register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))  # the first run's norm
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(4, 28, 28))
    assert seen == [(4, 16, 14, 14)]
    assert fused_norms == [model[stop - 2] for _, stop, _ in model.runs()[1:]]  # the other runs: fused


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 autocast is slow here: the cnn trains in fp32, unfused")
def test_a_cnn_run_in_bf16_takes_the_fused_layers_unless_they_cannot_be_built(tiny_data, ext, monkeypatch):
    assert make_trainer(tiny_data, model="cnn", precision="bf16").fused_layers
    assert not make_trainer(tiny_data, model="cnn", precision="fp32").fused_layers
    assert not make_trainer(tiny_data, precision="bf16").fused_layers  # the MLP has none
    monkeypatch.setenv("FITTINGROOM_NO_COMPILE", "1")
    trainer = make_trainer(tiny_data, model="cnn", precision="bf16", epochs=1)
    assert not trainer.fused_layers
    monkeypatch.setattr(FUSED_LAYERS, "loaded", "switched off")  # what a failed build leaves
    trainer.fit()
    assert trainer.history["loss"][0] > 0
