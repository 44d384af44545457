"""The plugin contract of xai-auditor: every hook a plugin may implement.

Plugins are modules (or objects) registered under the entry-point group ``auditor``; they
implement any of these hooks with the ``@auditor.hookimpl`` decorator. The built-in explainers,
checks and loaders use exactly this contract (docs/plugins.md is the reference).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .check import Check
    from .explain import Explainer
    from .model import LoadedModel
    from .samples import SampleSource
    from .spec import DataSection, ModelSection

hookspec = pluggy.HookspecMarker("auditor")
hookimpl = pluggy.HookimplMarker("auditor")


@hookspec
def auditor_explainers() -> list[type[Explainer]]:
    """Called once when plugins are loaded; return the `auditor.Explainer` subclasses this plugin
    provides. Each needs a `name` unique across all installed plugins (prefix it)."""


@hookspec
def auditor_checks() -> list[type[Check]]:
    """Called once when plugins are loaded; return the `auditor.Check` subclasses this plugin
    provides. Each needs a `name` unique across all installed plugins (prefix it)."""


@hookspec(firstresult=True)
def auditor_load_model(spec: ModelSection, base_dir: Path) -> LoadedModel | None:
    """Called once per audit to build the model; the first non-None result wins (the core's
    loader runs last).

    :param spec: the validated ``model`` section of the audit spec.
    :param base_dir: the directory the spec's relative paths resolve from.
    :return: an `auditor.model.LoadedModel` (module, fingerprint, source), or None to pass.
    """


@hookspec(firstresult=True)
def auditor_load_data(spec: DataSection, base_dir: Path, seed: int,
                      image_size: tuple[int, int] | None) -> SampleSource | None:
    """Called once per audit to open the samples; the first non-None result wins (the core's
    loader runs last).

    :param spec: the validated ``data`` section of the audit spec.
    :param base_dir: the directory the spec's relative paths resolve from.
    :param seed: the audit seed (for a seeded ``data.limit`` subset).
    :param image_size: ``(H, W)`` every image is resized to, or None to keep sizes.
    :return: an `auditor.samples.SampleSource` that streams batches, or None to pass.
    """


@hookspec
def auditor_report_partials() -> dict[str, str]:
    """Called each time a report is rendered; return ``{check name: Jinja2 template source}`` to
    replace the generic body of that check's section. The template sees ``check`` (the check's
    entry of results.json with its ``cells``), ``cells`` and ``results``; it is autoescaped."""
