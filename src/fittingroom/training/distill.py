"""Knowledge distillation: a small model learns from a trained teacher's probabilities.

Hinton et al. (2015): besides the labels, the student matches the teacher's
softened output distribution (temperature T), which says how alike the
classes look ("this shirt is a bit like a T-shirt") and carries far more
information per image than the label alone. It lets the tutorial's MLP learn
from a CNN what it could not find in the labels.

The teacher is a finished run or model folder, or the name of a preset, which
is then trained first into ``RUN/teacher``. Its log-probabilities for every
training image are computed once, before the first epoch (the images in their
stored form, without augmentation), so distilling costs one forward pass of
the teacher in all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, RunError
from ..runfolder.paths import RunPaths

if TYPE_CHECKING:
    from ..config.train_config import TrainConfig
    from ..data import SplitData


def distillation_loss(logits: torch.Tensor, teacher_logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the distributions softened by ``temperature``, times T^2.

    The T^2 keeps the gradients' scale independent of T (Hinton et al.), so the
    weight between this and the label loss means the same at any temperature.
    Log-probabilities serve as logits: softmax(logp / T) == softmax(logits / T).
    """
    student = F.log_softmax(logits.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_logp / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature**2


def check_teacher(config: TrainConfig, data: SplitData | None = None) -> None:
    """Fail early (before any run folder exists) when ``config.teacher`` names nothing usable.

    With ``data``, a teacher folder must also know the data's classes and take its images
    (a preset's teacher is trained on the data itself, so it always does).
    """
    from ..config.train_config import PRESETS
    from ..inference.saved import read_model_info

    name = config.teacher
    if name is None or name in PRESETS:
        return
    if not RunPaths(name).model_json.is_file():
        raise ConfigError(
            f"teacher={name!r} is neither a preset ({', '.join(PRESETS)}) nor a finished run or model folder"
        )
    if data is not None:
        _check_fits(Path(name), read_model_info(name), data)


def _check_fits(folder: Path, info: dict, data: SplitData) -> None:
    """A teacher must give probabilities over the data's classes, for images of the data's shape."""
    if list(info.get("classes", [])) != list(data.classes):
        raise RunError(f"{folder}: the teacher knows classes {info.get('classes')}, the data has {list(data.classes)}; "
                       f"name a teacher trained on the same classes")
    channels = (info.get("model_args") or {}).get("in_channels", 1)
    if list(info.get("input_shape", [])) != list(data.input_shape) or channels != data.channels:
        raise RunError(f"{folder}: the teacher takes {info.get('input_shape')} images with {channels} channel(s), "
                       f"the data has {list(data.input_shape)} with {data.channels}; name a teacher trained on "
                       f"images of that size")


def teacher_log_probs(config: TrainConfig, data: SplitData, folder: Path, device: torch.device) -> torch.Tensor:
    """The log-probabilities (N, classes) of the teacher in ``folder`` for the training images, on ``device``."""
    from ..core.device import resolve_precision
    from ..inference.forward import predict_logits
    from ..inference.saved import load_module

    teacher, info = load_module(folder, device)
    _check_fits(folder, info, data)
    precision = resolve_precision(config.precision, device)
    return predict_logits(teacher, data.x_train, config.eval_batch_size, device, precision,
                          tta=bool(info.get("tta"))).to(device)
