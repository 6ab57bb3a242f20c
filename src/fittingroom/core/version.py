"""The package version: one home, read by pyproject.toml, the CLI, run metrics and exported models."""

__version__ = "0.1.0"
