"""Serving a trained run: the HTTP API, its micro-batcher, metrics, limits and web page."""

from .app import create_app
from .limits import Limits

__all__ = ["Limits", "create_app"]
