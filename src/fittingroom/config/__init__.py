"""The typed configuration of a run and the named presets."""

from .train_config import PRESET_NOTES, PRESETS, TrainConfig

__all__ = ["PRESETS", "PRESET_NOTES", "TrainConfig"]
