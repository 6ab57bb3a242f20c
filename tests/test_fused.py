"""The fused MLP step computes what autograd + SGD compute, and is used exactly where it applies."""

import pytest
import torch
import torch.nn.functional as F

from fittingroom import create_model
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


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"fused": False}, "fused=False"),
    ({"momentum": 0.9}, "plain SGD"),
    ({"optimizer": "adam"}, "plain SGD"),
    ({"weight_decay": 1e-4}, "plain SGD"),
    ({"label_smoothing": 0.1}, "label smoothing"),
    ({"flip": True}, "augmentation"),
    ({"grad_clip": 1.0}, "gradient clipping"),
    ({"precision": "bf16"}, "bf16 precision"),
    ({"model_args": {"dropout": 0.1}}, "not Flatten"),
])
def test_the_fused_step_is_taken_only_where_it_computes_the_same(tiny_data, changes, reason):
    trainer = make_trainer(tiny_data, **changes)
    if reason is None:
        assert trainer.unfused_reason is None and trainer._fused_step is not None
    else:
        assert reason in trainer.unfused_reason and trainer._fused_step is None


def test_distributed_and_streamed_runs_take_the_general_loop(tiny_data):
    config = tiny_config(tiny_data).validate()
    model = create_model("mlp")
    assert why_not_fused(config, model, "fp32", distributed=True, streaming=False) == "several processes"
    assert why_not_fused(config, model, "fp32", distributed=False, streaming=True) == "streamed data"


def test_a_fused_run_matches_the_general_loop(tiny_data):
    fused = make_trainer(tiny_data, epochs=2, lr=0.05, schedule="cosine")
    general = make_trainer(tiny_data, epochs=2, lr=0.05, schedule="cosine", fused=False)
    fused.fit()
    general.fit()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert fused.history[key] == pytest.approx(general.history[key], rel=1e-4), key
    wf, wg = weights(fused), weights(general)
    assert all(torch.allclose(wf[k], wg[k], rtol=1e-4, atol=1e-5) for k in wf)


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
