"""Dynamic data pruning (training/pruning.py, ``TrainConfig.prune``)."""

import math

import pytest
import torch

from fittingroom import TrainConfig
from fittingroom.core.errors import ConfigError
from fittingroom.training.callbacks import Callback
from fittingroom.training.optim import lr_multiplier
from fittingroom.training.pruning import KEPT_HARDEST, ExamplePruner
from helpers import make_trainer


def pruner_with_losses(n=1000, prune=0.5, epochs=16):
    pruner = ExamplePruner(prune, n, epochs, torch.device("cpu"))
    pruner.loss(torch.arange(n, dtype=torch.float32), torch.arange(n))  # example i has loss i
    return pruner


def test_the_first_epoch_and_the_last_eighth_train_on_every_example():
    pruner = pruner_with_losses(epochs=16)
    assert [pruner.prunes(e) for e in range(16)] == [False] + [True] * 13 + [False] * 2
    assert [ExamplePruner(0.5, 10, 3, torch.device("cpu")).prunes(e) for e in range(3)] == [False, True, False]
    assert not any(ExamplePruner(0.0, 10, 16, torch.device("cpu")).prunes(e) for e in range(16))
    perm = torch.randperm(1000)
    for epoch in (0, 14, 15):
        assert torch.equal(pruner.choose(perm, epoch, torch.Generator().manual_seed(0)), perm)
        assert torch.equal(pruner.weights, torch.ones(1000))


def test_a_pruned_epoch_skips_well_learned_examples_and_weighs_the_kept_ones_up():
    n, prune = 1000, 0.5
    pruner = pruner_with_losses(n, prune)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    kept = pruner.choose(perm, 3, torch.Generator().manual_seed(2))
    hard = torch.arange(n) >= n * (1 - KEPT_HARDEST)  # the highest losses
    assert set(torch.arange(n)[hard].tolist()) <= set(kept.tolist())  # the hardest always train
    assert torch.equal(kept, perm[torch.isin(perm, kept)])  # in the shuffled order
    skipped = n - len(kept)
    easy = int((~hard).sum())
    assert abs(skipped - prune * easy) < 4 * math.sqrt(easy * prune * (1 - prune))
    assert torch.all(pruner.weights[hard] == 1) and torch.all(pruner.weights[~hard] == 1 / (1 - prune))
    # unbiased: the kept examples' weights sum, in expectation, to the number of examples
    assert abs(float(pruner.weights[kept].sum()) - n) < 4 * math.sqrt(easy)
    again = pruner_with_losses(n, prune).choose(perm, 3, torch.Generator().manual_seed(2))
    assert torch.equal(kept, again)  # the same draws, the same examples


def test_the_loss_is_the_weighted_mean_and_records_each_examples_loss():
    pruner = pruner_with_losses(100)
    pruner.choose(torch.arange(100), 1, torch.Generator().manual_seed(0))
    idx = torch.tensor([0, 99])  # well learned (weight 2) and among the hardest (weight 1)
    loss = pruner.loss(torch.tensor([1.0, 3.0]), idx)
    assert float(loss) == pytest.approx((2 * 1.0 + 1 * 3.0) / 2)
    assert pruner.losses[0] == 1.0 and pruner.losses[99] == 3.0


def test_examples_never_seen_are_never_skipped():
    pruner = ExamplePruner(0.9, 100, 10, torch.device("cpu"))
    pruner.loss(torch.zeros(50), torch.arange(50))  # only the first half was seen
    kept = pruner.choose(torch.arange(100), 2, torch.Generator().manual_seed(0))
    assert set(range(50, 100)) <= set(kept.tolist())


def test_a_pruned_cnn_run_never_leaves_batch_norm_one_example(tiny_data):
    """A pruned epoch's last batch would often hold a single image, which batch norm refuses in training: the
    trainer leaves it out."""
    trainer = make_trainer(tiny_data, model="cnn", model_args={"widths": [4, 8, 8, 8], "convs": [1, 1, 1, 1]},
                           epochs=5, prune=0.5, batch_size=3, lr=0.01)
    trainer.fit()  # 200 images, epochs 1-3 keep about 116 each: with seed 42 one would end on a single image
    assert len(trainer.history["loss"]) == 5


def test_a_pruned_run_takes_fewer_steps_and_follows_the_whole_schedule(tiny_data):
    steps, lrs = {}, {}

    class Count(Callback):
        batch_every = 1

        def on_train_batch_end(self, step, logs):
            steps[self.trainer.epoch] = step + 1
            lrs.setdefault(self.trainer.epoch, []).append(self.trainer.optimizer.param_groups[0]["lr"])

    trainer = make_trainer(tiny_data, [Count()], epochs=8, prune=0.7, schedule="onecycle", lr=0.05, batch_size=8)
    history = trainer.fit()
    full = trainer.steps_per_epoch  # 200 training images, batch 8
    assert steps[0] == steps[7] == full
    assert all(steps[e] < full for e in range(1, 7))
    assert history["val_accuracy"][-1] > 0.8
    cfg = trainer.config
    for e in (0, 3):  # a pruned epoch starts and ends where the full epoch's part of the schedule does
        assert lrs[e][0] == pytest.approx(cfg.lr * lr_multiplier(cfg, e * full, full))
        assert lrs[e][-1] == pytest.approx(cfg.lr * lr_multiplier(cfg, (e + 1) * full - 1, full), rel=0.2)


def test_prune_is_checked():
    with pytest.raises(ConfigError, match=r"`prune` must be in \[0, 1\); received prune=1"):
        TrainConfig(prune=1).validate()
    with pytest.raises(ConfigError, match="distillation"):
        TrainConfig(prune=0.5, teacher="cnn").validate()
