"""MonitorCallback: the direction a metric improves in (mode, "auto" by a declared rule) and min_delta."""

from types import SimpleNamespace

import pytest

from fittingroom.core.errors import ConfigError
from fittingroom.training.callbacks import (
    EarlyStopping,
    ModelCheckpoint,
    MonitorCallback,
    ReduceLROnPlateau,
    infer_mode,
)


@pytest.mark.parametrize("monitor, mode", [
    ("val_accuracy", "max"), ("accuracy", "max"), ("val_acc", "max"), ("val_top2_accuracy", "max"),
    ("val_macro_f1", "max"), ("val_loss", "min"), ("loss", "min"), ("distill_loss", "min"), ("val_ece", "min"),
])
def test_auto_mode_follows_the_declared_rule(monitor, mode):
    assert infer_mode(monitor) == mode
    assert MonitorCallback(monitor).mode == mode


@pytest.mark.parametrize("monitor", ["val_seconds", "lr", "val_accepted"])  # "acc" inside a name is no rule
def test_auto_mode_refuses_a_metric_it_cannot_place(monitor):
    with pytest.raises(ConfigError, match=f"monitor='{monitor}'.*mode='max' or 'min'"):
        MonitorCallback(monitor)
    assert MonitorCallback(monitor, mode="min").mode == "min"  # an explicit mode is taken as given


def test_an_explicit_mode_overrides_the_name():
    watch = MonitorCallback("val_accuracy", mode="min")
    assert watch.is_improvement(0.5, 0.9) and not watch.is_improvement(0.95, 0.9)


def test_an_unknown_mode_is_a_one_line_error():
    with pytest.raises(ConfigError, match="mode must be one of auto, min, max; received mode='maximum'"):
        EarlyStopping(mode="maximum")


@pytest.mark.parametrize("min_delta", [0.01, -0.01])  # the sign is ignored, as in Keras
def test_min_delta_is_the_margin_an_improvement_needs(min_delta):
    up = MonitorCallback("val_accuracy", min_delta=min_delta)
    assert up.is_improvement(0.5, None)  # anything beats no best yet
    assert not up.is_improvement(0.905, 0.9) and up.is_improvement(0.92, 0.9)
    down = MonitorCallback("val_loss", min_delta=min_delta)
    assert not down.is_improvement(0.495, 0.5) and down.is_improvement(0.48, 0.5)
    assert not MonitorCallback("val_loss").is_improvement(0.5, 0.5)  # equal is no improvement


def _trainer(lr=0.1):
    return SimpleNamespace(stop_training=False, config=SimpleNamespace(lr=lr), lr_factor=1.0, say=lambda m: None,
                           history={"loss": []})


def test_early_stopping_counts_changes_below_min_delta_as_no_improvement():
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.1, restore_best_weights=False)
    stopper.set_trainer(_trainer())
    for epoch, value in enumerate([1.0, 0.95, 0.92]):  # each step better, but by less than 0.1
        stopper.on_epoch_end(epoch, {"val_loss": value})
    assert stopper.trainer.stop_training and stopper.stopped_epoch == 2
    assert stopper.best == 1.0 and stopper.best_epoch == 0


def test_reduce_lr_on_plateau_watches_accuracy_upwards():
    reducer = ReduceLROnPlateau(monitor="val_accuracy", patience=1, factor=0.5, min_delta=0.0)
    reducer.set_trainer(_trainer())
    reducer.on_epoch_end(0, {"val_accuracy": 0.8})
    reducer.on_epoch_end(1, {"val_accuracy": 0.9})  # up: an improvement for accuracy
    assert reducer.trainer.lr_factor == 1.0
    reducer.on_epoch_end(2, {"val_accuracy": 0.85})
    assert reducer.trainer.lr_factor == pytest.approx(0.5)


def test_saved_states_keep_their_keys_and_load_from_older_checkpoints(tmp_path):
    """A checkpoint written before MonitorCallback holds these dicts: resuming must read them back."""
    stopper = EarlyStopping(monitor="val_accuracy")
    stopper.set_state({"best": 0.8, "best_epoch": 3, "wait": 1})
    assert stopper.get_state() == {"best": 0.8, "best_epoch": 3, "wait": 1}
    assert not stopper.is_improvement(0.8, stopper.best) and stopper.is_improvement(0.81, stopper.best)
    reducer = ReduceLROnPlateau()
    reducer.set_state({"best": 0.4, "wait": 2, "cooldown_counter": 0})
    assert reducer.get_state() == {"best": 0.4, "wait": 2, "cooldown_counter": 0}
    checkpoint = ModelCheckpoint(tmp_path / "best", describe=lambda m: {}, monitor="val_loss")
    checkpoint.set_state({"best": 0.3})
    assert checkpoint.get_state() == {"best": 0.3} and checkpoint.mode == "min" and checkpoint.min_delta == 0.0
