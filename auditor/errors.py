"""Errors the user can act on. The CLI prints them as one line and exits 2 (never a traceback)."""


class AuditorError(Exception):
    """Base class: the audit could not run for a reason the user can fix."""


class SpecError(AuditorError):
    """The audit spec is invalid. `path` is the spec location, e.g. ``checks[1].thresholds.x``."""

    def __init__(self, path: str, message: str, value: object = ...):
        self.path, self.value = path or "<spec>", value
        got = "" if value is ... else f" (got {_short(value)})"
        super().__init__(f"{self.path}: {message}{got}")


class PluginError(AuditorError):
    """Plugins could not be loaded or conflict with each other."""


class DataError(AuditorError):
    """A sample could not be read."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
