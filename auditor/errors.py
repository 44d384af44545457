"""Errors the user can act on. The CLI prints them as one line and exits 2 (never a traceback).

Also where a spec location is written (`join_path`, `key_path`: ``checks[1].thresholds.x``),
which both the schema's errors (`auditor.spec`) and the YAML reader's (`auditor.spec_yaml`) name.
Every error here pickles as its message and attributes, so one raised in another process (a Ray
worker) reaches the user as the same one-line message.
"""
from __future__ import annotations

import itertools
import pickle
import re
import reprlib
from typing import Any


class AuditorError(Exception):
    """Base class: the audit could not run for a reason the user can fix."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the arguments `Exception` keeps (the one-line message) and the attributes,
        never by calling ``__init__`` again: a subclass whose ``__init__`` takes other arguments
        than its message (`SpecError`) survives the trip to and from a Ray worker as itself."""
        return _rebuild, (type(self), self.args, _picklable(self.__dict__))


def _rebuild(cls: type[AuditorError], args: tuple[Any, ...], state: dict[str, Any]) -> AuditorError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


def _picklable(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with each value that does not pickle replaced by its short repr (a spec value
    named in a message may be any object; the message itself is already text)."""
    kept = {}
    for name, value in state.items():
        try:
            pickle.dumps(value)
        except Exception:  # an unpicklable object, or one whose pickling raises
            value = _short(value)
        kept[name] = value
    return kept


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


def key_path(prefix: str, *parts: Any) -> str:
    """``key_path("model.factory_kwargs", "a b")`` is ``model.factory_kwargs['a b']``."""
    return join_path(prefix, list(parts))


def join_path(prefix: str, loc: list[Any]) -> str:
    """A spec path: ``checks[1].thresholds.x``; a key that is not a plain name is quoted:
    ``params['a b']``."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{str(part)[:60]!r}]"
    return text
