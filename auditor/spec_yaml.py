"""Reading a spec's YAML: `yaml.SafeLoader` (same tags, no code) that also refuses what would
make validation slow or ambiguous, naming the spec path and line: aliases (an alias bomb expands
exponentially), duplicate keys, nesting deeper than `MAX_DEPTH`, scalars that do not construct
and integers of more than `MAX_INT_DIGITS` digits."""
from __future__ import annotations

from typing import Any

import yaml

from .errors import SpecError, join_path

MAX_DEPTH = 64           # YAML nesting levels
MAX_INT_DIGITS = 100     # digits of a YAML integer


class _SpecLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (same tags, no code) that also refuses, naming the spec path: aliases,
    duplicate keys, nesting deeper than `MAX_DEPTH`, scalars that do not construct (a 5000-digit
    integer, a date 2024-13-45) and integers of more than `MAX_INT_DIGITS` digits."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._where: list[Any] = []  # the path being composed: key nodes, indices, None (a key)

    def _path(self) -> str:
        loc = [part if isinstance(part, int) else str(part.value)[:60] for part in self._where
               if isinstance(part, int) or isinstance(part, yaml.ScalarNode)]
        return join_path("", loc) or "<spec>"

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._where.append(index)
        try:
            event = self.peek_event()
            line = f"line {event.start_mark.line + 1}"
            if len(self._where) > MAX_DEPTH:
                raise SpecError(self._path(), f"nested deeper than {MAX_DEPTH} levels ({line})")
            if isinstance(event, yaml.AliasEvent):
                raise SpecError(self._path(), f"YAML aliases are not allowed in a spec ({line}); "
                                "write the value out", f"*{event.anchor}")
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:str":
                self._check_scalar(node, line)
            elif isinstance(node, yaml.MappingNode):
                self._check_keys(node)
            return node
        finally:
            self._where.pop()

    def _check_scalar(self, node: yaml.ScalarNode, line: str) -> None:
        if node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS + 2:
            raise SpecError(self._path(), f"integer of {len(node.value)} characters ({line}; "
                            f"expected at most {MAX_INT_DIGITS} digits)", node.value)
        try:
            value = self.construct_object(node)
        except Exception as exc:  # ValueError, or !!timestamp on a non-date: AttributeError
            kind = node.tag.removeprefix("tag:yaml.org,2002:")
            known = isinstance(exc, (yaml.YAMLError, ValueError))
            reason = (getattr(exc, "problem", None) or exc) if known else f"not a valid {kind}"
            raise SpecError(self._path(), f"cannot read this {kind} ({line}): {reason}",
                            node.value) from None
        if isinstance(value, int) and value.bit_length() > MAX_INT_DIGITS * 3.33:
            raise SpecError(self._path(), f"integer too large ({line}; expected at most "
                            f"{MAX_INT_DIGITS} digits)", node.value)

    def _check_keys(self, node: yaml.MappingNode) -> None:
        seen: dict[tuple[str, str], Any] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if (key.tag, key.value) in seen:
                first = seen[(key.tag, key.value)].start_mark.line + 1
                self._where.append(key)
                raise SpecError(self._path(), f"duplicate key (line {key.start_mark.line + 1}; "
                                f"first at line {first}); give each key once")
            seen[(key.tag, key.value)] = key


def load_yaml(text: str) -> Any:
    """Parse spec YAML safely (see `_SpecLoader`); raises `SpecError` or `yaml.YAMLError`."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
