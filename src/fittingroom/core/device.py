"""Choosing the device and the numeric precision a run computes in."""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is visible, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; valid devices: auto, cpu, cuda, cuda:N") from None


def cpu_has_fast_bf16() -> bool:
    """True where bfloat16 matrix products run in hardware (AMX tiles or AVX-512 BF16)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # older PyTorch without the probes
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on GPUs that support it and CPUs with AMX/AVX-512 BF16, else ``fp32``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """A context that runs the forward pass in ``precision`` (bf16 autocast, or nothing for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    """A short human description, e.g. ``cpu (2 threads, AVX512)`` or ``cuda (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"
