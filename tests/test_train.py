import math

import numpy as np
import pytest
import torch

from fittingroom import TrainConfig
from fittingroom.config.train_config import PRESETS
from fittingroom.data.augment import erase, flip, translate
from fittingroom.training.callbacks import Callback, EarlyStopping, NonFiniteLoss, TerminateOnNaN
from fittingroom.training.optim import lr_multiplier
from helpers import make_trainer, weights


def test_one_epoch_learns_the_tiny_task(tiny_data):
    trainer = make_trainer(tiny_data, lr=0.05, epochs=3)
    history = trainer.fit()
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert len(history["loss"]) == 3
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.8
    assert trainer.steps_per_epoch == math.ceil(200 / 16)  # the last partial batch counts, as in Keras


def test_same_seed_same_weights_different_seed_different(tiny_data):
    a, b, c = (make_trainer(tiny_data, deterministic=True, seed=s) for s in (1, 1, 2))
    for t in (a, b, c):
        t.fit()
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - {"mlp-best"}))  # mlp-best: a cnn teacher, then the mlp
def test_every_preset_is_repeatable_with_deterministic(tiny_data, preset):
    # the tiny data's split (40 validate), not a preset's own validation_size
    changes = {**PRESETS[preset], "epochs": 2, "batch_size": 16, "deterministic": True, "validation_size": 40}
    if preset == "resnet":
        changes["model_args"] = {"depth": 8, "width": 4}
    a, b = make_trainer(tiny_data, **changes), make_trainer(tiny_data, **changes)
    before = weights(a)
    a.fit()
    b.fit()
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], before[k]) for k in wa)
    assert a.history == {**b.history, "seconds": a.history["seconds"]}


def test_normalize_standardises_the_input_by_the_training_images(tiny_data):
    from fittingroom.data import open_data
    from fittingroom.models.zoo import Normalize

    trainer = make_trainer(tiny_data, normalize=True)
    data = open_data(str(tiny_data), validation_size=40)
    first = trainer.raw_model[0]
    assert isinstance(first, Normalize)
    x = data.x_train.astype(np.float64) / 255
    assert first.mean == pytest.approx((x.mean(),), abs=1e-4) and first.std == pytest.approx((x.std(),), abs=1e-4)
    assert trainer._fused_step is not None  # still a plain MLP
    assert not isinstance(make_trainer(tiny_data).raw_model[0], Normalize)  # the tutorial: x / 255 only


@pytest.mark.parametrize("changes", [
    {},
    {"optimizer": "adamw", "schedule": "onecycle", "weight_decay": 0.01, "translate": 2, "flip": True, "erase": 0.5},
    {"model_args": {"dropout": 0.3, "batch_norm": True}, "optimizer": "sgd", "momentum": 0.9, "nesterov": True,
     "schedule": "cosine", "warmup_epochs": 1.0, "label_smoothing": 0.1, "grad_clip": 1.0},
    {"optimizer": "adamw", "schedule": "onecycle", "weight_decay": 0.01, "label_smoothing": 0.1, "precision": "bf16",
     "normalize": True},  # the fused MLP step with the optimizer's own state
    {"prune": 0.5, "label_smoothing": 0.1, "translate": 1},  # the second epoch prunes by the first one's losses
])
def test_resume_from_checkpoint_gives_identical_weights(tiny_data, tmp_path, changes):
    full = make_trainer(tiny_data, deterministic=True, epochs=3, **changes)
    full.fit()

    class Kill(Callback):  # dies at the start of the second epoch, after the first one's checkpoint
        def on_epoch_begin(self, epoch):
            if epoch == 1:
                raise SystemExit("killed")

    first = make_trainer(tiny_data, [Kill()], tmp_path / "ck.safetensors", deterministic=True, epochs=3, **changes)
    with pytest.raises(SystemExit):
        first.fit()
    resumed = make_trainer(tiny_data, deterministic=True, epochs=3, **changes)
    torch.manual_seed(12345)  # the checkpoint, not the current global state, must decide what follows
    resumed.load_checkpoint(tmp_path / "ck.safetensors")
    assert resumed.epoch == 1
    resumed.fit()
    wf, wr = weights(full), weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed.history["loss"] == full.history["loss"]


def test_nan_loss_stops_with_a_clear_error(tiny_data):
    trainer = make_trainer(tiny_data, callbacks=[TerminateOnNaN()], lr=1e30)
    with pytest.raises(NonFiniteLoss, match="loss became nan"):
        trainer.fit()


def test_early_stopping_restores_the_best_weights(tiny_data):
    seen = {}

    class Spy(Callback):
        name = "spy"

        def on_epoch_end(self, epoch, logs):
            seen[epoch] = {k: v.clone() for k, v in self.trainer.raw_model.state_dict().items()}

    stopper = EarlyStopping(monitor="val_accuracy", patience=2)
    trainer = make_trainer(tiny_data, callbacks=[Spy(), stopper], epochs=30, lr=0.05)
    trainer.fit()
    assert stopper.stopped_epoch is not None and len(trainer.history["loss"]) < 30
    best = seen[stopper.best_epoch]
    assert all(torch.equal(best[k], v) for k, v in trainer.raw_model.state_dict().items())


def test_schedules():
    c = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1)
    assert lr_multiplier(c, 0, 100) == pytest.approx(1 / 25)
    assert lr_multiplier(c, 100, 100) == pytest.approx(1.0)
    assert lr_multiplier(c, 999, 100) == pytest.approx(0.0, abs=1e-4)
    step = TrainConfig(epochs=30, schedule="step", step_size=10, gamma=0.1)
    assert lr_multiplier(step, 1999, 100) == pytest.approx(0.1)
    one = TrainConfig(epochs=10, schedule="onecycle")
    peak = max(range(1000), key=lambda s: lr_multiplier(one, s, 100))
    assert peak == 300 and lr_multiplier(one, 999, 100) < 0.01
    assert lr_multiplier(TrainConfig(), 500, 100) == 1.0


def test_translate_shifts_without_changing_content():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 28, 28)
    x[:, 10:18, 10:18] = 1.0
    out = translate(x, 3, gen)
    assert out.shape == x.shape
    assert torch.equal(out.sum((1, 2)), x.sum((1, 2)))  # an 8x8 square moved by <= 3 px stays inside
    assert not torch.equal(out, x)


def test_flip_mirrors_about_half_the_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1000, 28, 28)
    out = flip(x, gen)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert 400 < int(flipped.sum()) < 600
    assert torch.equal(out[~flipped], x[~flipped])


def test_erase_zeroes_one_rectangle_with_the_given_probability():
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(1000, 28, 28)
    out = erase(x, 0.5, gen)
    erased = (out == 0).flatten(1).sum(1)
    assert 400 < int((erased > 0).sum()) < 600
    assert erased.max() <= 0.25 * 784 * 1.2


def test_augmentation_is_reproducible_from_the_generator_state():
    x = torch.rand(16, 28, 28)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(translate(x, 2, g1), translate(x, 2, g2))
    np.testing.assert_array_equal(erase(x, 1.0, g1).numpy(), erase(x, 1.0, g2).numpy())


def test_a_batch_norm_model_leaves_out_an_epochs_last_batch_of_one_image(tiny_data):
    """200 training images in batches of 199: batch norm cannot train on the last one alone."""
    seen = []

    class Count(Callback):
        def on_train_batch_end(self, step, logs):
            seen.append(step)

    trainer = make_trainer(tiny_data, [Count()], model="cnn", model_args={"widths": [4, 8, 8, 8], "convs": [1, 1, 1, 1]},
                           epochs=2, batch_size=199)
    trainer.fit()
    assert trainer.steps_per_epoch == 1 and seen == [0, 0]
    plain = make_trainer(tiny_data, epochs=1, batch_size=199, fused=False)  # no batch norm: every image trains
    assert plain.steps_per_epoch == 2
