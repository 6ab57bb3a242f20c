"""The compiled loop of plain-SGD steps takes the steps the Python loop takes: with ATen's products on one thread
bit for bit; on several threads (which share the first layer's products) or with the first layer's own kernels,
to float32 rounding."""

import pytest
import torch

from fittingroom import create_model
from fittingroom.training import native
from fittingroom.training.fused import FusedMLPStep
from helpers import make_trainer, weights


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    """PyTorch's thread count for the test (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def assert_same(a: torch.Tensor, b: torch.Tensor, bit_for_bit: bool) -> None:
    if bit_for_bit:
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)



def test_the_compiled_loop_is_built_here(compiled_sgd_loop):
    assert callable(compiled_sgd_loop), compiled_sgd_loop  # a reason string means it could not be built
    assert native.is_built()


@pytest.mark.parametrize("hidden, batch, first_row, steps", [
    ((300, 100), 8, 0, 5),  # the last step takes the one row left of 33
    ((16,), 7, 3, 5),  # from a row in the middle, the last step shorter (3 + 4 * 7 = 31 < 33 rows)
    ((24, 12, 6), 11, 0, 3),
])
@pytest.mark.parametrize("own_kernels", [False, True], ids=["ATen products", "own kernels"])
def test_compiled_steps_equal_the_python_steps(hidden, batch, first_row, steps, threads, own_kernels):
    torch.manual_seed(0)
    python_model = create_model("mlp", input_shape=(6, 6), num_classes=5, hidden=hidden)
    compiled_model = create_model("mlp", input_shape=(6, 6), num_classes=5, hidden=hidden)
    compiled_model.load_state_dict(python_model.state_dict())
    python_step, compiled_step = FusedMLPStep(python_model), FusedMLPStep(compiled_model)
    assert compiled_step.load_compiled() is None and compiled_step.compiled is not None
    compiled_step.own_kernels = own_kernels
    images, labels = torch.randint(0, 256, (33, 6, 6), dtype=torch.uint8), torch.randint(0, 5, (33,))
    x, target = python_step.inputs(images), python_step.targets(labels, 5)
    lrs = [0.3 / (k + 1) for k in range(steps)]
    logits_python, logits_compiled = torch.zeros(33, 5), torch.zeros(33, 5)
    python_step.sgd_steps(x, target, logits_python, lrs, batch, first_row)
    compiled_step.sgd_steps(x, target, logits_compiled, lrs, batch, first_row)
    bit_for_bit = threads == 1 and not own_kernels
    assert_same(logits_compiled, logits_python, bit_for_bit)
    assert logits_compiled[first_row:].abs().sum() > 0 and not logits_compiled[:first_row].any()
    for p, q in zip(python_model.parameters(), compiled_model.parameters()):
        assert_same(p, q, bit_for_bit)
    if own_kernels and native.first_layer_kernels() and len(hidden) > 1:  # they ran: their sums round in another order
        assert not torch.equal(python_model[1].weight, compiled_model[1].weight)
    assert not torch.equal(python_model[1].weight, create_model("mlp", input_shape=(6, 6), num_classes=5,
                                                                hidden=hidden)[1].weight)  # it did learn


def test_a_run_in_compiled_code_equals_one_in_python(tiny_data, monkeypatch, threads):
    compiled = make_trainer(tiny_data, epochs=2, lr=0.05, schedule="cosine", deterministic=True)
    assert compiled.uncompiled_reason is None
    compiled.fit()
    monkeypatch.setenv("FITTINGROOM_NO_COMPILE", "1")
    python = make_trainer(tiny_data, epochs=2, lr=0.05, schedule="cosine", deterministic=True)
    assert "FITTINGROOM_NO_COMPILE" in python.uncompiled_reason and python._fused_step.compiled is None
    python.fit()
    wc, wp = weights(compiled), weights(python)
    for k in wc:
        assert_same(wc[k], wp[k], bit_for_bit=False)
    assert compiled.history["loss"] == pytest.approx(python.history["loss"], rel=1e-5)


def test_where_it_cannot_be_built_the_python_loop_takes_the_steps(tiny_data, monkeypatch):
    monkeypatch.setattr(native.SGD_LOOP, "loaded", "the compiled loop could not be built (no compiler)")
    trainer = make_trainer(tiny_data, epochs=1, lr=0.05)
    assert trainer.uncompiled_reason == "the compiled loop could not be built (no compiler)"
    trainer.fit()
    assert trainer.history["accuracy"][0] > 0


def test_only_plain_sgd_in_fp32_is_compiled(tiny_data):
    assert make_trainer(tiny_data, momentum=0.9).uncompiled_reason == "the optimizer takes the step"
    assert make_trainer(tiny_data, precision="bf16").uncompiled_reason == "the optimizer takes the step"
    assert "augmentation" in make_trainer(tiny_data, flip=True).uncompiled_reason


@pytest.mark.parametrize("compiled", [True, False])
def test_steps_past_the_last_row_are_refused(compiled):
    model = create_model("mlp", input_shape=(6, 6), num_classes=5, hidden=(8,))
    step = FusedMLPStep(model)
    if compiled:
        assert step.load_compiled() is None
    x, target, logits = torch.rand(10, 36), torch.rand(10, 5), torch.zeros(10, 5)
    with pytest.raises((ValueError, RuntimeError), match="past the last row"):
        step.sgd_steps(x, target, logits, [0.1, 0.1, 0.1], 4, 2)  # rows 2-6, 6-10, then 10-: none left


@pytest.mark.subprocess
def test_a_build_killed_halfway_does_not_make_later_runs_wait(compiled_sgd_loop):
    """PyTorch's lock file, as a build killed with SIGKILL leaves it: the next process still gets the loop."""
    import subprocess
    import sys
    from pathlib import Path

    from torch.utils.cpp_extension import _get_build_directory

    stale = Path(_get_build_directory(native.module_name(), verbose=False)) / "lock"
    stale.touch()
    code = ("from fittingroom.training.native import compiled_sgd_steps; "
            "print(callable(compiled_sgd_steps()))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        stale.unlink(missing_ok=True)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize("own_kernels", [False, True], ids=["ATen products", "own kernels"])
def test_nan_weights_give_nan_logits_as_in_pytorch(own_kernels):
    """The first layer's ReLU keeps a NaN (torch.relu does), so a diverged run is seen as diverged."""
    model = create_model("mlp", input_shape=(6, 6), num_classes=5, hidden=(40, 8))
    with torch.no_grad():
        model[1].weight[3, 0] = float("nan")
    step = FusedMLPStep(model)
    assert step.load_compiled() is None
    step.own_kernels = own_kernels
    x, target, logits = torch.rand(4, 36) + 0.1, torch.full((4, 5), 0.2), torch.zeros(4, 5)
    step.sgd_steps(x, target, logits, [0.1], 4, 0)
    assert logits.isnan().all()


@pytest.mark.parametrize("own_kernels", [False, True], ids=["ATen products", "own kernels"])
def test_steps_through_an_order_are_the_steps_on_the_rows_gathered_in_it(own_kernels, threads):
    """The epoch's shuffle read through `order` (no gathered copy of the inputs) changes nothing."""
    torch.manual_seed(0)
    through, gathered = (create_model("mlp", input_shape=(6, 6), num_classes=5, hidden=(40, 8)) for _ in range(2))
    gathered.load_state_dict(through.state_dict())
    x, target = torch.rand(30, 36), torch.softmax(torch.randn(30, 5), 1)
    order = torch.randperm(30)
    logits_through, logits_gathered = torch.zeros(30, 5), torch.zeros(30, 5)
    for model, xs, o, logits in ((through, x, order, logits_through), (gathered, x[order], None, logits_gathered)):
        step = FusedMLPStep(model)
        assert step.load_compiled() is None
        step.own_kernels = own_kernels
        step.sgd_steps(xs, target, logits, [0.2, 0.1, 0.05], 9, 2, o)
    assert torch.equal(logits_through, logits_gathered)
    assert all(torch.equal(p, q) for p, q in zip(through.parameters(), gathered.parameters()))


def test_an_order_that_points_past_the_inputs_is_refused():
    step = FusedMLPStep(create_model("mlp", input_shape=(6, 6), num_classes=5, hidden=(8,)))
    assert step.load_compiled() is None
    x, target, logits = torch.rand(10, 36), torch.rand(10, 5), torch.zeros(10, 5)
    with pytest.raises(RuntimeError, match="out of x's rows"):
        step.sgd_steps(x, target, logits, [0.1], 4, 0, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]))
