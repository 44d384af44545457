"""Errors the user can act on. The CLI prints them as one line and exits 2 (never a traceback)."""
import itertools
import reprlib


class AuditorError(Exception):
    """Base class: the audit could not run for a reason the user can fix."""


class SpecError(AuditorError):
    """The audit spec is invalid. `path` is the spec location, e.g. ``checks[1].thresholds.x``.

    The message is one line: ``<path>: <message> (got <value>)``, with the path, the message and
    the value shortened (the value is never rendered beyond what is printed)."""

    def __init__(self, path: str, message: str, value: object = ...):
        self.path, self.value = path or "<spec>", value
        got = "" if value is ... else f" (got {_short(value)})"
        super().__init__(f"{one_line(self.path, 120)}: {one_line(message, 400)}{got}")


class PluginError(AuditorError):
    """Plugins could not be loaded or conflict with each other."""


class DataError(AuditorError):
    """A sample could not be read."""


class _Bounded(reprlib.Repr):
    """`reprlib.Repr` that never renders a whole big value: a few items per container, a few
    levels, and huge integers by their size (``repr`` of one would itself fail past 4300 digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 60, 60, 40
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 4
        self.maxdeque = self.maxarray = 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 1000:
            return f"<integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)

    def repr_dict(self, x: dict, level: int) -> str:  # no sorting of a huge dict's keys
        if len(x) > 64:
            head = dict(itertools.islice(x.items(), self.maxdict))
            return super().repr_dict(head, level)[:-1] + ", ...}"
        return super().repr_dict(x, level)


_BOUNDED = _Bounded()


def _short(value: object, limit: int = 80) -> str:
    """A one-line repr of `value` of at most `limit` characters, computed in bounded time."""
    try:
        text = _BOUNDED.repr(value)
    except Exception:  # a repr that raises
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


def one_line(text: str, limit: int = 400) -> str:
    """`text` on one line (whitespace runs, newlines included, become one space), at most `limit`
    characters (cut with ``...``)."""
    text = " ".join(str(text)[: limit * 4].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
