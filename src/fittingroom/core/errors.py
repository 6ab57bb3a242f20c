"""The one exception type that reaches users as a one-line message.

Anything raised as a :class:`FittingroomError` is a user's mistake or a missing
resource: the CLI prints ``error: <message>`` on stderr and exits non-zero,
with no traceback. Everything else is a bug and keeps its traceback.
"""


class FittingroomError(Exception):
    """A problem the user can fix. The message says what was wrong and what to do.

    Example:
        >>> try:
        ...     fittingroom.Learner("mlp", "fashion-mnist", lr=-1)
        ... except fittingroom.FittingroomError as exc:
        ...     print(f"error: {exc}")
        error: `lr` must be a positive number; received lr=-1
    """


class DataError(FittingroomError):
    """Data files that are missing, malformed or do not match their checksums."""


class ConfigError(FittingroomError):
    """An unknown name or an invalid value in a configuration or on the command line."""


class RunError(FittingroomError):
    """A run or model folder that is missing, incomplete or inconsistent."""


class ImageError(FittingroomError):
    """An input that is not a readable image."""
