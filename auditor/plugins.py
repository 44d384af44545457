"""Plugin discovery: entry-point group ``auditor``, one name per explainer/check across plugins."""
from __future__ import annotations

import importlib.metadata as metadata
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import ValidationError

from . import hookspecs, loaders, model
from .check import Check
from .errors import PluginError, SpecError
from .explain import Explainer
from .spec import AuditSpec, spec_error_from

GROUP = "auditor"
CORE = (model, loaders)  # the core's own model and data loaders (first-result hooks, trylast)


@dataclass(frozen=True)
class Provided:
    """A registered explainer or check class and where it comes from."""

    kind: str  # "explainer" | "check"
    name: str
    cls: type
    distribution: str
    version: str
    module: str


@dataclass
class Registry:
    manager: pluggy.PluginManager
    explainers: dict[str, Provided] = field(default_factory=dict)
    checks: dict[str, Provided] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # entry point -> why it did not load
    blocked: dict[str, str] = field(default_factory=dict)  # "entry point (dist)" -> who blocked it
    disabled: dict[str, str] = field(default_factory=dict)  # as asked: name -> who asked (rebuild)

    def describe(self) -> list[Provided]:
        return sorted([*self.explainers.values(), *self.checks.values()], key=lambda p: (p.kind, p.name))

    def make_explainers(self, spec: AuditSpec) -> dict[str, Explainer]:
        """Instantiate every explainer of the spec, keyed by its label; params validated."""
        made = {}
        for i, entry in enumerate(spec.explainers):
            cls = self._lookup(self.explainers, entry.name, f"explainers[{i}].name", "explainer").cls
            made[entry.key] = cls(_validate(cls.Params, entry.params, f"explainers[{i}].params"))
        return made

    def make_checks(self, spec: AuditSpec) -> list[Check]:
        """Instantiate every check of the spec in order; params and thresholds validated."""
        made = []
        for i, entry in enumerate(spec.checks):
            cls = self._lookup(self.checks, entry.name, f"checks[{i}].name", "check").cls
            made.append(cls(_validate(cls.Params, entry.params, f"checks[{i}].params"),
                            _validate(cls.Thresholds, entry.thresholds, f"checks[{i}].thresholds")))
        return made

    def _lookup(self, table: dict[str, Provided], name: str, path: str, kind: str) -> Provided:
        if name not in table:
            hint = f"; plugins that failed to load: {', '.join(self.failed)}" if self.failed else ""
            hint += f"; blocked plugins: {', '.join(self.blocked)}" if self.blocked else ""
            raise SpecError(path, f"unknown {kind} (expected one of: {', '.join(sorted(table))}){hint}",
                            name)
        return table[name]


def _validate(model: type, values: dict[str, Any], path: str) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise spec_error_from(exc, prefix=path, root=model) from None


def load_registry(extra: list[tuple[Any, str]] | None = None,
                  disabled: dict[str, str] | None = None) -> Registry:
    """Discover plugins: the core loaders, every ``auditor`` entry point, then `extra` (plugin, dist).

    An entry point that fails to import is recorded in `Registry.failed` with a warning; two plugins
    registering the same explainer or check name raise `PluginError` naming both distributions.
    `disabled` maps entry-point or distribution names to who disabled them (``--disable-plugin``,
    the spec's ``plugins.disable``): those are not imported and are listed in `Registry.blocked`;
    a name that matches no installed plugin is a `SpecError`.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    origin: dict[int, tuple[str, str]] = {}
    for core in CORE:
        pm.register(core, name=f"core:{core.__name__}")
        origin[id(core)] = ("xai-auditor", _version("xai-auditor"))
    failed, blocked, disabled = {}, {}, dict(disabled or {})
    points = sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)
    _check_disabled(disabled, points)
    for ep in points:
        dist = ep.dist.name if ep.dist else "?"
        if pm.has_plugin(f"{dist}:{ep.name}"):
            continue  # the same distribution seen twice on sys.path
        who = disabled.get(ep.name) or disabled.get(dist)
        if who is not None:
            blocked[f"{ep.name} ({dist})"] = who
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin never takes the audit down
            failed[f"{ep.name} ({dist})"] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"plugin {ep.name!r} from {dist!r} failed to load: {exc}", stacklevel=2)
            continue
        pm.register(plugin, name=f"{dist}:{ep.name}")
        origin[id(plugin)] = (dist, ep.dist.version if ep.dist else "?")
    for plugin, dist in extra or []:
        pm.register(plugin)
        origin[id(plugin)] = (dist, _version(dist))
    registry = Registry(pm, failed=failed, blocked=blocked, disabled=disabled)
    _collect(registry, "explainer", pm.hook.auditor_explainers, Explainer, registry.explainers, origin)
    _collect(registry, "check", pm.hook.auditor_checks, Check, registry.checks, origin)
    return registry


def _check_disabled(disabled: dict[str, str], points: list[Any]) -> None:
    known = {ep.name for ep in points} | {ep.dist.name for ep in points if ep.dist}
    for name, who in disabled.items():
        if name not in known:
            raise SpecError(who, "no installed plugin has this entry-point or distribution name "
                            f"(expected one of: {', '.join(sorted(known))})", name)


def _collect(registry: Registry, kind: str, hook: Any, base: type, table: dict[str, Provided],
             origin: dict[int, tuple[str, str]]) -> None:
    for impl in hook.get_hookimpls():
        dist, version = origin.get(id(impl.plugin), ("?", "?"))
        try:
            classes = impl.function() or []
        except Exception as exc:
            registry.failed[f"{impl.plugin_name} ({dist})"] = f"{type(exc).__name__}: {exc}"
            continue
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, base) and getattr(cls, "name", None)):
                raise PluginError(f"plugin {impl.plugin_name!r} ({dist}) returned {cls!r} from "
                                  f"{hook.name}; expected a named subclass of {base.__name__}")
            if cls.name in table and table[cls.name].cls is not cls:
                other = table[cls.name]
                raise PluginError(f"{kind} {cls.name!r} is registered twice: by distribution "
                                  f"{other.distribution!r} ({other.module}) and by distribution "
                                  f"{dist!r} ({cls.__module__}); uninstall one of them")
            table[cls.name] = Provided(kind, cls.name, cls, dist, version, cls.__module__)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0+unknown"
