"""The fused MLP step computes what autograd + the optimizer compute, and is used exactly where it applies."""

import pytest
import torch
import torch.nn.functional as F

from fittingroom import create_model
from fittingroom.core.device import autocast
from fittingroom.training.fused import FusedMLPStep, plain_mlp_layers, why_not_fused
from helpers import make_trainer, tiny_config, weights


def _autograd_steps(model, batches, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    logits = []
    for x, y in batches:
        out = model(x)
        logits.append(out.detach())
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return logits


@pytest.mark.parametrize("hidden", [(300, 100), (64,), (32, 16, 8)])
def test_fused_steps_match_autograd_and_sgd(hidden):
    torch.manual_seed(0)
    reference = create_model("mlp", input_shape=(8, 8), num_classes=5, hidden=hidden)
    fused_model = create_model("mlp", input_shape=(8, 8), num_classes=5, hidden=hidden)
    fused_model.load_state_dict(reference.state_dict())
    batches = [(torch.rand(n, 8, 8), torch.randint(0, 5, (n,))) for n in (32, 32, 7)]
    expected_logits = _autograd_steps(reference, batches, lr=0.5)

    step = FusedMLPStep(fused_model)
    for (x, y), expected in zip(batches, expected_logits):
        logits = torch.empty(len(y), 5)
        step(x.reshape(len(x), -1), F.one_hot(y, 5).float(), 0.5, logits)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(reference.named_parameters(), fused_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(reference[1].weight, create_model("mlp", input_shape=(8, 8), num_classes=5,
                                                             hidden=hidden)[1].weight)  # it did learn


@pytest.mark.parametrize("args", [{"dropout": 0.2}, {"batch_norm": True}])
def test_models_with_more_than_dense_and_relu_are_not_plain(args):
    assert plain_mlp_layers(create_model("mlp", **args)) is None
    assert plain_mlp_layers(create_model("cnn")) is None
    assert len(plain_mlp_layers(create_model("mlp"))) == 3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("optimizer", ["sgd-nesterov", "adamw"])
def test_fused_steps_match_autograd_with_the_optimizer_label_smoothing_and_normalisation(precision, optimizer):
    """The general case: normalised uint8 input, label smoothing, the optimizer's own step (momentum or AdamW
    with weight decay), fp32 or bf16 as autocast computes it."""
    def make_optimizer(model):
        if optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01, fused=True)
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)

    torch.manual_seed(0)
    reference = create_model("mlp", input_shape=(8, 8), num_classes=5, hidden=(32, 16), mean=[0.3], std=[0.4])
    fused_model = create_model("mlp", input_shape=(8, 8), num_classes=5, hidden=(32, 16), mean=[0.3], std=[0.4])
    fused_model.load_state_dict(reference.state_dict())
    ref_opt = make_optimizer(reference)
    step = FusedMLPStep(fused_model, make_optimizer(fused_model), precision, label_smoothing=0.1)
    assert step.optimizer is not None
    for n in (32, 32, 7, 32):
        x, y = torch.randint(0, 256, (n, 8, 8), dtype=torch.uint8), torch.randint(0, 5, (n,))
        with autocast(torch.device("cpu"), precision):
            expected = reference(x.float() / 255)
        loss = F.cross_entropy(expected.float(), y, label_smoothing=0.1)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        logits = torch.empty(n, 5)
        step(step.inputs(x), step.targets(y, 5), 0.0, logits)
        torch.testing.assert_close(logits, expected.float(), rtol=1e-5, atol=1e-6)
        if precision == "bf16":  # the same bf16 operations as autocast's, in the same order: bit for bit
            assert torch.equal(logits, expected.float())
    for (name, p), q in zip(reference.named_parameters(), fused_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
        if precision == "bf16":
            assert torch.equal(q, p), name
    assert not torch.equal(fused_model[2].weight, create_model("mlp", input_shape=(8, 8), num_classes=5,
                                                                hidden=(32, 16))[1].weight)  # it did learn


def test_the_smoothed_targets_are_those_of_cross_entropy():
    step = FusedMLPStep(create_model("mlp", input_shape=(8, 8), num_classes=4), label_smoothing=0.2)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 3, 1, 1, 2, 0])
    expected = F.cross_entropy(logits, labels, label_smoothing=0.2, reduction="none")
    torch.testing.assert_close(-(step.targets(labels, 4) * logits.log_softmax(1)).sum(1), expected)


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"momentum": 0.9}, None),
    ({"optimizer": "adamw", "weight_decay": 1e-4}, None),
    ({"label_smoothing": 0.1}, None),
    ({"precision": "bf16"}, None),
    ({"model_args": {"mean": [0.3], "std": [0.4]}}, None),
    ({"fused": False}, "fused=False"),
    ({"flip": True}, "augmentation"),
    ({"grad_clip": 1.0}, "gradient clipping"),
    ({"model_args": {"dropout": 0.1}}, "not [Normalize] -> Flatten"),
])
def test_the_fused_step_is_taken_only_where_it_computes_the_same(tiny_data, changes, reason):
    trainer = make_trainer(tiny_data, **changes)
    if reason is None:
        assert trainer.unfused_reason is None and trainer._fused_step is not None
    else:
        assert reason in trainer.unfused_reason and trainer._fused_step is None


def test_only_plain_sgd_in_fp32_fuses_the_update_into_the_gradient(tiny_data):
    assert make_trainer(tiny_data)._fused_step.optimizer is None
    assert make_trainer(tiny_data, precision="bf16")._fused_step.optimizer is not None
    assert make_trainer(tiny_data, momentum=0.9)._fused_step.optimizer is not None


def test_distributed_and_streamed_runs_take_the_general_loop(tiny_data):
    config = tiny_config(tiny_data).validate()
    model = create_model("mlp")
    assert why_not_fused(config, model, "fp32", distributed=True, streaming=False) == "several processes"
    assert why_not_fused(config, model, "fp32", distributed=False, streaming=True) == "streamed data"


@pytest.mark.parametrize("changes", [
    {"lr": 0.05, "schedule": "cosine"},
    {"optimizer": "adamw", "lr": 0.01, "weight_decay": 1e-3, "schedule": "onecycle", "label_smoothing": 0.1,
     "model_args": {"mean": [0.3], "std": [0.4]}},
    {"momentum": 0.9, "nesterov": True, "lr": 0.05, "precision": "bf16", "label_smoothing": 0.1},
])
def test_a_fused_run_matches_the_general_loop(tiny_data, changes):
    fused = make_trainer(tiny_data, epochs=2, **changes)
    general = make_trainer(tiny_data, epochs=2, fused=False, **changes)
    assert fused._fused_step is not None and general._fused_step is None
    fused.fit()
    general.fit()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert fused.history[key] == pytest.approx(general.history[key], rel=1e-4), key
    wf, wg = weights(fused), weights(general)
    # Adam divides by the root of the gradients' running square: where that is tiny, rounding differences of
    # the order of 1e-7 grow to 1e-5 of the weights over two epochs (still 1e-4 of their size).
    atol = 1e-4 if changes.get("optimizer") == "adamw" else 1e-5
    assert all(torch.allclose(wf[k], wg[k], rtol=1e-4, atol=atol) for k in wf)
    state_f, state_g = fused.optimizer.state_dict()["state"], general.optimizer.state_dict()["state"]
    assert state_f.keys() == state_g.keys()  # the optimizer's own state, as a checkpoint saves it


def test_batch_callbacks_see_the_running_loss_and_accuracy(tiny_data):
    from fittingroom.training.callbacks import Callback

    seen = []

    class Spy(Callback):
        def on_train_batch_end(self, step, logs):
            seen.append((step, dict(logs)))

    trainer = make_trainer(tiny_data, [Spy()], epochs=1, batch_size=2, lr=0.05)  # 100 steps: reports at 0 and 50
    trainer.fit()
    assert [step for step, _ in seen] == list(range(100))
    reported = [(step, logs) for step, logs in seen if logs]
    assert [step for step, _ in reported] == [0, 50]
    assert all(0 <= logs["accuracy"] <= 1 and logs["loss"] > 0 for _, logs in reported)


@pytest.mark.parametrize("changes", [{}, {"optimizer": "adamw", "schedule": "onecycle"}])
def test_callbacks_that_want_every_nth_step_get_it_and_the_steps_are_the_same(tiny_data, changes):
    from fittingroom.training.callbacks import Callback

    class Every(Callback):
        def __init__(self, every):
            self.batch_every, self.seen = every, []

        def on_train_batch_end(self, step, logs):
            self.seen.append((step, bool(logs)))

    sparse, dense = Every(30), Every(1)
    by_runs = make_trainer(tiny_data, [sparse], epochs=2, batch_size=2, lr=0.05, **changes)  # 100 steps an epoch
    by_steps = make_trainer(tiny_data, [dense], epochs=2, batch_size=2, lr=0.05, **changes)
    by_runs.fit()
    by_steps.fit()
    assert sparse.seen == [(29, True), (59, True), (89, False), (99, False)] * 2  # logs for runs holding 0 and 50
    assert len(dense.seen) == 200 and [s for s, logs in dense.seen if logs] == [0, 50] * 2
    wr, ws = weights(by_runs), weights(by_steps)
    assert all(torch.equal(wr[k], ws[k]) for k in wr)
    assert by_runs.history["loss"] == pytest.approx(by_steps.history["loss"], rel=1e-6)


def test_a_progress_line_per_epoch_watches_no_steps(tiny_data):
    import io

    from fittingroom.training.callbacks import ProgressLogger

    assert make_trainer(tiny_data, [ProgressLogger(io.StringIO())])._batch_hooks == []
    live = ProgressLogger(io.StringIO(), live=True)
    assert make_trainer(tiny_data, [live])._batch_hooks == [live]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_epochs_inputs_are_what_the_models_own_input_layers_make(precision):
    """Colour images normalised per channel, taken in blocks smaller than the set."""
    model = create_model("mlp", input_shape=(5, 4), num_classes=3, in_channels=3, mean=[0.2, 0.5, 0.7],
                         std=[0.3, 0.2, 0.1])
    images = torch.randint(0, 256, (11, 5, 4, 3), dtype=torch.uint8)
    expected = model[1](model[0](images.float() / 255))  # Normalize, Flatten
    step = FusedMLPStep(model, torch.optim.AdamW(model.parameters()), precision)
    assert torch.equal(step.inputs(images, block=4), expected.to(step.dtype))


@pytest.mark.parametrize("changes", [{"optimizer": "adamw", "normalize": True}, {"lr": 0.05}])
def test_a_training_set_too_large_to_keep_converted_is_converted_each_epoch_to_the_same(tiny_data, monkeypatch,
                                                                                        changes):
    import fittingroom.training.loop as loop

    changes = {"epochs": 2, "deterministic": True, **changes}
    kept = make_trainer(tiny_data, **changes)
    kept.fit()
    assert kept._fused_inputs is not None
    monkeypatch.setattr(loop, "FUSED_INPUTS_BYTES", 0)
    each_epoch = make_trainer(tiny_data, **changes)
    each_epoch.fit()
    assert each_epoch._fused_inputs is None
    wk, we = weights(kept), weights(each_epoch)
    assert all(torch.equal(wk[k], we[k]) for k in wk)
