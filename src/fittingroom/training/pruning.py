"""Dynamic data pruning (InfoBatch: Qin et al., "InfoBatch: Lossless Training Speed Up by Unbiased Dynamic Data
Pruning", ICLR 2024), for ``TrainConfig.prune``.

Every epoch records each example's loss as it trains. In the epochs between the first (no losses yet) and the
last eighth of the run (InfoBatch's annealing), each well-learned example is skipped with probability ``prune``,
and a kept one's loss weighs ``1 / (1 - prune)``: the epoch's expected gradient is the full epoch's, from fewer
steps. Well learned: below the ``1 - KEPT_HARDEST`` quantile of the last recorded losses, so that the hardest
examples train every epoch. (InfoBatch's threshold is the mean loss, which cost the ``cnn`` preset three to four
tenths of a point on Fashion-MNIST where this rule cost one or two: benchmarks/README.md.)

The learning-rate schedule runs through an epoch's range of steps whatever the epoch's length, so a pruned run
follows the same schedule as the full one in fewer steps. Draws come from the trainer's shuffling generator and the
losses travel in checkpoints, so a resumed run continues as if never stopped.
"""

from __future__ import annotations

import math

import torch

# The share of the examples, by their last loss, never skipped.
KEPT_HARDEST = 0.16
# The last eighth of the epochs (at least one) trains on every example.
FULL_EPOCHS_AT_THE_END = 0.125


class ExamplePruner:
    """Which examples an epoch trains on and what each one's loss weighs; the losses it learns from."""

    def __init__(self, prune: float, examples: int, epochs: int, device: torch.device):
        if not 0 <= prune < 1:
            raise ValueError(f"prune must be in [0, 1); received {prune!r}")
        self.prune, self.epochs = prune, epochs
        self.losses = torch.full((examples,), float("nan"), device=device)  # NaN: not yet seen
        self.weights = torch.ones(examples, device=device)

    def prunes(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) skips examples: not the first, not the last eighth."""
        full_at_end = max(1, math.ceil(FULL_EPOCHS_AT_THE_END * self.epochs))
        return self.prune > 0 and 0 < epoch < self.epochs - full_at_end

    def choose(self, perm: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """The examples of ``perm`` (a shuffled order, on the CPU) that ``epoch`` trains on, in that order; sets
        the weights their losses take."""
        self.weights.fill_(1.0)
        if not self.prunes(epoch):
            return perm
        losses = self.losses.float().cpu()
        seen = ~losses.isnan()
        if not seen.any():
            return perm
        threshold = torch.quantile(losses[seen], 1 - KEPT_HARDEST)
        easy = seen & (losses < threshold)
        skip = easy & (torch.rand(len(losses), generator=generator) < self.prune)
        self.weights[easy.to(self.weights.device)] = 1 / (1 - self.prune)
        return perm[~skip[perm]]

    def loss(self, losses: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The batch's loss from its examples' own (``losses``, of the examples ``idx``), recording them."""
        self.losses[idx] = losses.detach().to(self.losses.dtype)
        return (losses * self.weights[idx]).mean()

    def state(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        losses = tensors["losses"]
        if losses.shape != self.losses.shape:
            raise ValueError(f"the checkpoint's losses are for {len(losses)} examples, not {len(self.losses)}")
        self.losses.copy_(losses)
