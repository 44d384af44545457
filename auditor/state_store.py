"""Fitted states of trainable explainers, keyed by model fingerprint + data fingerprint +
explainer config, in a directory (``fit.store``; default under the user's cache directory).

A state file ``<store>/<explainer name>-<key>.pt`` holds ``{"meta": {...}, "state": {name:
tensor}}``, written with `torch.save` to a temporary file in the same directory and renamed
into place (an interrupted fit leaves no half-written state), read with ``weights_only=True``.
The meta repeats the model and data fingerprints and the config; a file whose meta does not
match what the key promises (copied or renamed by hand) is refused, never used silently.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import AuditorError

FORMAT = 1


class StateError(AuditorError):
    """A state file is unreadable, malformed, or was fitted for another model or data."""


def default_store() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "xai-auditor" / "states"


def explainer_config(explainer: Any) -> dict[str, Any]:
    """What about an explainer decides its fitted state: its class and its validated params."""
    cls = type(explainer)
    return {"name": cls.name, "class": f"{cls.__module__}.{cls.__qualname__}",
            "params": explainer.params.model_dump(mode="json")}


def state_meta(model_fingerprint: str, data_fingerprint: str, explainer: Any) -> dict[str, Any]:
    return {"format": FORMAT, "model": model_fingerprint, "data": data_fingerprint,
            "explainer": explainer_config(explainer)}


def state_key(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]


class StateStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, meta: dict[str, Any]) -> Path:
        return self.root / f"{meta['explainer']['name']}-{state_key(meta)}.pt"

    def save(self, meta: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
        if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise StateError(f"explainer {meta['explainer']['name']!r} returned a state that is not "
                             "a flat dict of tensors")
        target = self.path(meta)
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=self.root)
        try:
            with os.fdopen(handle, "wb") as f:
                torch.save({"meta": json.dumps(meta, sort_keys=True),
                            "state": {k: v.detach().cpu().contiguous() for k, v in state.items()}}, f)
            os.replace(temporary, target)
        except BaseException:  # Ctrl-C included: never leave a partial file behind
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def load(self, meta: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """The state fitted for exactly `meta`, None when there is none; `StateError` when the
        file exists but is unreadable or belongs to another model, data or config."""
        path = self.path(meta)
        if not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            stored, state = json.loads(saved["meta"]), saved["state"]
        except Exception as exc:
            raise StateError(f"{path}: unreadable state file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'truncated?'}); delete it "
                             "and fit again") from None
        for part, what in (("model", "model fingerprint"), ("data", "data fingerprint"),
                           ("explainer", "explainer config"), ("format", "format")):
            if stored.get(part) != meta[part]:
                raise StateError(f"{path}: fitted for {what} {_short(stored.get(part))}, not this "
                                 f"audit's {_short(meta[part])}; delete it and fit again")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise StateError(f"{path}: the state is not a dict of tensors; delete it and fit again")
        return state


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
