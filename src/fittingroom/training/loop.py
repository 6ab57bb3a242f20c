"""The training loop: a visible PyTorch loop with a few named callback hooks.

The whole training set lives on the device as one uint8 tensor ``(N, H, W)``.
Each epoch shuffles it with one gather, then every step takes a contiguous
slice, scales it to [0, 1], augments it as a batch and takes one optimizer
step: no DataLoader, no per-image Python. Validation runs after every epoch,
then the callbacks, then (if a path is set) an atomic checkpoint of
everything needed to resume. A plain multilayer perceptron takes the same
loop with a hand-written backward pass instead of autograd (fused.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config.train_config import TrainConfig
from ..core.device import autocast, resolve_precision
from ..core.errors import ConfigError, FittingroomError, RunError
from ..core.memory import empty_on_huge_pages, freed_memory_kept
from ..data import SplitData
from ..data.augment import augment_batch
from ..inference.forward import loss_and_accuracy, predict_logits, to_float
from ..models.fused_layers import FUSED_LAYERS, ConvNet
from . import distributed
from .callbacks import Callback
from .checkpoint import META_KEY, load_checkpoint, optimizer_from_parts, optimizer_to_parts, save_checkpoint
from .distill import distillation_loss
from .fused import FusedMLPStep, epoch_loss_and_correct, why_not_fused
from .optim import build_optimizer, lr_multiplier, set_lr
from .pruning import ExamplePruner

# The fused step keeps the whole training set ready for its first layer (float, normalised) up to this size.
FUSED_INPUTS_BYTES = 1 << 30


class TrainingInterrupted(FittingroomError):
    """Ctrl-C during training; the last complete epoch's checkpoint is kept."""


def checkpoint_meta(path: str | Path) -> dict | None:
    """The JSON part of a checkpoint (``epoch``, ``stop_training``, ``config``...) without its tensors; None if unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})[META_KEY])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch; with ``deterministic`` also forbid nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


class Trainer:
    """Trains ``model`` on ``data`` as ``config`` says.

    Attributes callbacks may use: ``model`` (possibly DDP-wrapped), ``raw_model``,
    ``optimizer``, ``config``, ``history`` (metric -> list per epoch), ``epoch``
    (epochs completed), ``lr_factor`` (multiplies the schedule; ReduceLROnPlateau
    lowers it), ``stop_training`` and ``steps_per_epoch``.
    """

    def __init__(
        self,
        model: nn.Module,
        data: SplitData,
        config: TrainConfig,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
        checkpoint_path: str | Path | None = None,
        dist: distributed.DistInfo | None = None,
        verbose: bool = True,
        teacher_logp: torch.Tensor | None = None,
    ):
        self.config, self.device, self.dist = config, device, dist
        self.precision = resolve_precision(config.precision, device)
        self.raw_model = model.to(device)
        self.model: nn.Module = self.raw_model
        if dist is not None:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(self.raw_model, config)
        # Pruning (pruning.py) weighs each example's loss itself.
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing,
                                           reduction="none" if config.prune else "mean")
        self.teacher_logp = teacher_logp  # (N, classes) for the training images, in their stored order
        self.set_callbacks(callbacks)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.verbose = verbose and (dist is None or dist.is_main)

        # The data, on the device, as uint8 images and int64 labels (a streamed folder stays on disk).
        self.streaming = data.streaming
        self.x_train = data.x_train if self.streaming else torch.as_tensor(data.x_train).to(device)
        self.y_train = torch.as_tensor(data.y_train.astype(np.int64)).to(device)
        self.x_val = data.x_val if self.streaming else torch.as_tensor(data.x_val).to(device)
        self.y_val = data.y_val.astype(np.int64)

        world = dist.world_size if dist else 1
        if config.batch_size % world:
            raise ConfigError(
                f"batch_size={config.batch_size} must be divisible by the number of processes ({world}); "
                f"the batch is split evenly between them"
            )
        self.local_batch = config.batch_size // world
        if config.prune and world > 1:
            raise ConfigError(f"prune={config.prune} trains one process (each would prune its own examples' "
                              f"losses); run it without torchrun, or set prune=0")
        # Dynamic data pruning (pruning.py): the examples each epoch trains on, from their last losses.
        self.pruner = ExamplePruner(config.prune, len(self.y_train), config.epochs, device) if config.prune else None
        # Every process sees ceil(N / world) examples per epoch (the shortfall is filled by wrapping round).
        self.local_examples = math.ceil(len(self.x_train) / world)
        self.steps_per_epoch = math.ceil(self.local_examples / self.local_batch)
        # Batch norm cannot train on a single image: an epoch that would end on a batch of one leaves it out (another
        # image each epoch, as the shuffle falls).
        self.batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.raw_model.modules())
        if self._ends_on_one_image(self.local_examples):
            self.steps_per_epoch -= 1

        self.history: dict[str, list[float]] = {}
        self.epoch = 0
        self.lr_factor = 1.0
        self.stop_training = False
        self.train_seconds = 0.0
        # Separate generators, so that resuming restores exactly the random draws still to come.
        self.shuffle_gen = torch.Generator().manual_seed(config.seed)
        self.augment_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self._epoch_buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        # A plain MLP (the tutorial's case among others) takes the hand-fused step.
        self.unfused_reason = why_not_fused(config, self.raw_model, self.precision, dist is not None, self.streaming)
        self._fused_step = (FusedMLPStep(self.raw_model, self.optimizer, self.precision, config.label_smoothing)
                            if self.unfused_reason is None else None)
        # Plain SGD in fp32 (the tutorial's recipe) runs its steps in compiled code where that can be built.
        self.uncompiled_reason = (self._fused_step.load_compiled(self.say) if self._fused_step is not None
                                  else self.unfused_reason)
        # A CNN training in bf16 on a CPU takes its pooling, batch norm and ReLU fused (models/fused_layers.py).
        self.fused_layers = (any(isinstance(m, ConvNet) and m.runs() for m in self.raw_model.modules())
                             and device.type == "cpu" and self.precision == "bf16"
                             and not isinstance(FUSED_LAYERS.load(self.say), str))
        self._fused_targets: tuple[torch.Tensor, torch.Tensor] | None = None  # the epoch's (targets, logits)
        self._fused_inputs: torch.Tensor | None = None  # the training set as the first layer takes it
        self._fused_epoch_inputs: torch.Tensor | None = None  # ... converted per epoch, for a set too large to keep

    def set_callbacks(self, callbacks: Sequence[Callback]) -> None:
        """The callbacks of the next ``fit`` (a Learner's ``fit`` passes each call's own)."""
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_trainer(self)
        self._batch_hooks = [cb for cb in self.callbacks if cb.wants_batch_ends()]

    # ------------------------------------------------------------------ output
    def say(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, list[float]]:
        """Train from ``self.epoch`` to ``config.epochs`` (or until a callback stops it); returns the history.

        On a CPU, the steps' freed activations are kept for the next step's (``core.memory.freed_memory_kept``)."""
        with freed_memory_kept() if self.device.type == "cpu" else contextlib.nullcontext():
            return self._fit()

    def _fit(self) -> dict[str, list[float]]:
        for cb in self.callbacks:
            cb.on_train_begin()
        logs: dict[str, float] = {}
        try:
            while self.epoch < self.config.epochs and not self.stop_training:
                start = time.perf_counter()
                for cb in self.callbacks:
                    cb.on_epoch_begin(self.epoch)
                logs = self.train_epoch(self.epoch)
                val_loss, val_accuracy = self.validate()
                logs.update(val_loss=val_loss, val_accuracy=val_accuracy)
                logs["seconds"] = time.perf_counter() - start  # training and validation
                for key, value in logs.items():
                    self.history.setdefault(key, []).append(value)
                for cb in self.callbacks:
                    cb.on_epoch_end(self.epoch, logs)
                self.epoch += 1
                # The whole epoch counts, callbacks and checkpoint included, as Keras's fit counts them.
                saving = time.perf_counter()
                self.train_seconds += saving - start
                self.save_checkpoint()
                self.train_seconds += time.perf_counter() - saving
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupted_message()) from None
        for cb in self.callbacks:
            cb.on_train_end(logs)
        return self.history

    def _interrupted_message(self) -> str:
        """What Ctrl-C leaves: the epochs the checkpoint on disk holds (a save cut short keeps the previous one)."""
        meta = checkpoint_meta(self.checkpoint_path) if self.checkpoint_path else None
        saved = meta["epoch"] if meta else 0
        if not saved:
            return f"interrupted during epoch {self.epoch + 1}; no epoch was complete, nothing was saved"
        return (f"interrupted; {self.checkpoint_path} holds epoch {saved} of {self.config.epochs}, resume with "
                f"`fittingroom train --resume {self.checkpoint_path.parent}`")

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this process's shard of the shuffled training set."""
        cfg, model, opt = self.config, self.model, self.optimizer
        model.train()
        world = self.dist.world_size if self.dist else 1
        rank = self.dist.rank if self.dist else 0
        # Shuffle: every process draws the same permutation and takes its own interleaved shard.
        perm = torch.randperm(len(self.x_train), generator=self.shuffle_gen)
        if world > 1:
            perm = perm.repeat(2)[: self.local_examples * world][rank::world]
        if self.pruner is not None:
            perm = self.pruner.choose(perm, epoch, self.shuffle_gen)
        if self._ends_on_one_image(len(perm)):
            perm = perm[:-1]
        steps = math.ceil(len(perm) / self.local_batch)  # steps_per_epoch, or fewer where pruning skips examples
        augmenting = cfg.augmenting
        scheduled = cfg.schedule != "constant" or cfg.warmup_epochs > 0 or self.lr_factor != 1.0
        first_step = epoch * self.steps_per_epoch
        if self._fused_step is not None:
            return self._train_epoch_fused(perm, scheduled, first_step)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        if not scheduled:
            set_lr(opt, cfg.lr)
        for step, (xb, yb, idx) in enumerate(self.batches(perm)):
            xb = to_float(xb)  # (B, H, W) in [0, 1]
            if augmenting:
                xb = augment_batch(xb, self.augment_gen, cfg.translate, cfg.flip, cfg.erase, cfg.color_jitter)
            if scheduled:  # a pruned epoch's steps run through the whole epoch's part of the schedule
                at = first_step + step * self.steps_per_epoch // steps
                set_lr(opt, cfg.lr * self.lr_factor * lr_multiplier(cfg, at, self.steps_per_epoch))
            with autocast(self.device, self.precision):
                logits = model(xb)  # (B, classes)
            loss = self.loss_fn(logits.float(), yb)
            if self.pruner is not None:
                losses, loss = loss, self.pruner.loss(loss, idx)  # each example's, and their weighted mean
            if self.teacher_logp is not None:
                soft = distillation_loss(logits, self.teacher_logp[idx], cfg.distill_temperature)
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * soft
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                loss_sum += losses.detach().sum() if self.pruner is not None else loss.detach() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
            if self._batch_hooks:
                seen = (step + 1) * self.local_batch
                running = {"loss": loss_sum.item() / seen, "accuracy": correct.item() / seen} if step % 50 == 0 else {}
                for cb in self._batch_hooks:
                    cb.on_train_batch_end(step, running)
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype), torch.tensor(float(len(perm)), device=self.device)])
        totals = distributed.all_reduce_sum(totals, self.dist)
        return {
            "loss": (totals[0] / totals[2]).item(),
            "accuracy": (totals[1] / totals[2]).item(),
            "lr": opt.param_groups[0]["lr"],
        }

    def _train_epoch_fused(self, perm: torch.Tensor, scheduled: bool, first_step: int) -> dict[str, float]:
        """The epoch of ``train_epoch`` for a plain MLP, with the fused step (see fused.py)."""
        cfg, opt, step_fn = self.config, self.optimizer, self._fused_step
        n, classes = len(perm), self.raw_model[-1].out_features
        perm = perm.to(self.device)
        labels = torch.index_select(self.y_train, 0, perm)
        features = math.prod(self.x_train.shape[1:])
        if self._fused_targets is None or len(self._fused_targets[0]) != n:
            self._fused_targets = (torch.empty(n, classes, device=self.device), torch.empty(n, classes, device=self.device))
        target, logits = self._fused_targets
        # The images as the first layer takes them (scaled, normalised, flattened, cast), as the model would make
        # them per batch: made once for the whole training set if that fits FUSED_INPUTS_BYTES, on huge pages
        # (core/memory.py: the steps read a few rows at a time, anywhere), and each step reads its rows through
        # the epoch's shuffle (plain SGD's compiled loop itself; an optimizer's step from a gather of its rows).
        # Too large a set is converted from the epoch's gathered images.
        size = step_fn.dtype.itemsize
        # Huge pages pay for plain SGD's thousands of small steps an epoch; faulting them in costs the machine a
        # compaction (0.3-0.8 s for Fashion-MNIST), more than an optimizer's few large steps gain.
        empty = empty_on_huge_pages if step_fn.optimizer is None else torch.empty
        if self._fused_inputs is None and len(self.x_train) * features * size <= FUSED_INPUTS_BYTES:
            self._fused_inputs = step_fn.inputs(self.x_train, out=empty(
                len(self.x_train), features, device=self.device, dtype=step_fn.dtype))
        order = None
        if self._fused_inputs is not None:  # each step's rows read through the epoch's shuffle
            x_all, order = self._fused_inputs, perm
        else:
            if self._fused_epoch_inputs is None or len(self._fused_epoch_inputs) != n:
                self._fused_epoch_inputs = empty(n, features, device=self.device, dtype=step_fn.dtype)
            x_all = self._fused_epoch_inputs
            step_fn.inputs(self._gather_epoch(perm)[0], out=x_all)
        step_fn.targets(labels, classes, out=target)
        lr = cfg.lr
        if not scheduled:
            set_lr(opt, lr)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        counted = 0  # the rows whose loss and accuracy loss_sum and correct hold
        # The steps go in runs between the batch callbacks' calls: the whole epoch when nobody watches them.
        every = max(1, min((cb.batch_every for cb in self._batch_hooks), default=self.steps_per_epoch))
        for first in range(0, self.steps_per_epoch, every):
            run = range(first, min(first + every, self.steps_per_epoch))
            lrs = [cfg.lr * self.lr_factor * lr_multiplier(cfg, first_step + step, self.steps_per_epoch)
                   if scheduled else lr for step in run]
            if step_fn.optimizer is None:  # plain SGD: the run in one call (the compiled loop where it is built)
                step_fn.sgd_steps(x_all, target, logits, lrs, self.local_batch, first * self.local_batch, order)
            else:
                for step, lr in zip(run, lrs):
                    if scheduled:
                        set_lr(opt, lr)
                    s = slice(step * self.local_batch, (step + 1) * self.local_batch)
                    step_fn(x_all[s] if order is None else torch.index_select(x_all, 0, order[s]), target[s], lr,
                            logits[s])
            lr = lrs[-1]
            if self._batch_hooks:
                counted = self._batch_ends(run, counted, logits, labels, loss_sum, correct)
        block_loss, block_correct = epoch_loss_and_correct(logits[counted:], labels[counted:], cfg.label_smoothing)
        set_lr(opt, lr)
        return {"loss": ((loss_sum + block_loss) / n).item(), "accuracy": ((correct + block_correct) / n).item(),
                "lr": lr}

    def _batch_ends(self, run: range, counted: int, logits: torch.Tensor, labels: torch.Tensor,
                    loss_sum: torch.Tensor, correct: torch.Tensor) -> int:
        """The batch callbacks after a run of fused steps, with the running loss and accuracy when the run holds a
        multiple of 50 (accumulated into ``loss_sum`` and ``correct`` in place); returns the rows now counted."""
        running = {}
        if -(-run.start // 50) * 50 < run.stop:
            stop = min(run.stop * self.local_batch, len(labels))
            block_loss, block_correct = epoch_loss_and_correct(logits[counted:stop], labels[counted:stop],
                                                               self.config.label_smoothing)
            loss_sum += block_loss
            correct += block_correct
            counted = stop
            running = {"loss": loss_sum.item() / counted, "accuracy": correct.item() / counted}
        for cb in self._batch_hooks:
            cb.on_train_batch_end(run[-1], running)
        return counted

    def _ends_on_one_image(self, examples: int) -> bool:
        """Whether an epoch of ``examples`` would end on a batch of one image, which batch norm cannot train on."""
        return self.batch_norm and examples > 1 and examples % self.local_batch == 1

    def batches(self, perm: torch.Tensor):
        """(uint8 images, labels, their indices in the training set) of each step, in the order of ``perm``."""
        perm = perm.to(self.device)
        steps = [slice(start, start + self.local_batch) for start in range(0, len(perm), self.local_batch)]
        if self.streaming:
            from ..data.folder import iterate_batches

            labels = self.y_train[perm]
            for s, xb in zip(steps, iterate_batches(self.x_train, self.local_batch, perm.tolist(), self.config.workers)):
                yield xb.to(self.device), labels[s], perm[s]
            return
        x_epoch, y_epoch = self._gather_epoch(perm)
        for s in steps:
            yield x_epoch[s], y_epoch[s], perm[s]  # (B, H, W) uint8, (B,), (B,)

    def _gather_epoch(self, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images and labels in the order of ``perm``, gathered into buffers kept across epochs.

        One gather per epoch, then contiguous slices per step; the buffers are reused because a fresh 43 MB
        tensor every epoch costs page faults.
        """
        if self._epoch_buffers is None or len(self._epoch_buffers[0]) != len(perm):
            self._epoch_buffers = (self.x_train.new_empty((len(perm), *self.x_train.shape[1:])),
                                   self.y_train.new_empty(len(perm)))
        x_epoch, y_epoch = self._epoch_buffers
        torch.index_select(self.x_train, 0, perm, out=x_epoch)
        torch.index_select(self.y_train, 0, perm, out=y_epoch)
        return x_epoch, y_epoch

    def validate(self) -> tuple[float, float]:
        """Validation loss and accuracy (every process computes the same numbers on the whole set)."""
        logp = predict_logits(self.raw_model, self.x_val, self.config.eval_batch_size, self.device, self.precision)
        return loss_and_accuracy(logp, self.y_val)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        optim_tensors, optim_meta = optimizer_to_parts(self.optimizer.state_dict())
        rng = {"torch": torch.get_rng_state(), "shuffle": self.shuffle_gen.get_state(), "augment": self.augment_gen.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        tensors = {"model": self.raw_model.state_dict(), "optim": optim_tensors, "rng": rng}
        if self.pruner is not None:
            tensors["prune"] = self.pruner.state()
        for cb in self.callbacks:
            if cb.get_tensors():
                tensors[f"cb.{cb.name}"] = cb.get_tensors()
        meta = {
            "epoch": self.epoch,
            "history": self.history,
            "lr_factor": self.lr_factor,
            "train_seconds": self.train_seconds,
            "stop_training": self.stop_training,
            "optimizer": optim_meta,
            "callbacks": {cb.name: cb.get_state() for cb in self.callbacks if cb.get_state()},
            "config": self.config.to_dict(),  # what the weights were trained with: resume checks config.json against it
        }
        return tensors, meta

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or (self.dist is not None and not self.dist.is_main):
            return
        tensors, meta = self.state()
        save_checkpoint(self.checkpoint_path, tensors, meta)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything a checkpoint holds, so that ``fit`` continues as if never stopped."""
        groups, meta = load_checkpoint(path, device="cpu")
        try:
            self.raw_model.load_state_dict({k: v.to(self.device) for k, v in groups["model"].items()})
            self.optimizer.load_state_dict(optimizer_from_parts(groups.get("optim", {}), meta["optimizer"]))
            if self.pruner is not None and "prune" in groups:
                self.pruner.load_state({k: v.to(self.device) for k, v in groups["prune"].items()})
        except (KeyError, RuntimeError, ValueError) as exc:  # another model, width or optimizer than config.json's
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(f"{path}: the checkpoint does not fit the model and optimizer that config.json describes "
                           f"({reason.rstrip(':.')}); put config.json back as the run wrote it, or start a new run") from None
        rng = groups["rng"]
        torch.set_rng_state(rng["torch"])
        self.shuffle_gen.set_state(rng["shuffle"])
        self.augment_gen.set_state(rng["augment"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.epoch, self.history = meta["epoch"], meta["history"]
        self.lr_factor, self.train_seconds = meta["lr_factor"], meta["train_seconds"]
        self.stop_training = meta.get("stop_training", False)
        for cb in self.callbacks:
            if cb.name in meta["callbacks"]:
                cb.set_state(meta["callbacks"][cb.name])
            if f"cb.{cb.name}" in groups:
                cb.set_tensors({k: v.to(self.device) for k, v in groups[f"cb.{cb.name}"].items()})
