"""The YAML audit spec: schema (pydantic), loading (yaml.safe_load) and one-line errors.

Every error names the spec path (``checks[1].thresholds.spearman_abs``), the value and what was
expected. Input paths (weights, data) resolve relative to the spec file; the output directory
resolves relative to the current directory.
"""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveInt, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from .errors import SpecError


class Strict(BaseModel):
    """Rejects unknown keys and freezes after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _existing_path(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    base = Path((info.context or {}).get("base_dir", "."))
    path = value if value.is_absolute() else base / value
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    return path


class AuditSection(Strict):
    name: str = Field(min_length=1, description="Audit name, shown on the report's front page.")
    seed: int = Field(0, description="Seed of every random choice (sampling, randomization, noise).")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Preprocessing(Strict):
    """Applied to every image: resize to (H, W), scale to [0, 1], then the model sees (x - mean) / std.

    The normalization is folded into the model, so explainers and checks work in pixel space [0, 1].
    """

    resize: tuple[PositiveInt, PositiveInt] | None = Field(None, description="(height, width)")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @field_validator("resize", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(s <= 0 for s in value):
            raise ValueError("every std must be > 0")
        return value


class ModelSection(Strict):
    """Exactly one of ``architecture`` (torchvision), ``factory`` or ``torchscript``."""

    architecture: str | None = Field(None, description="torchvision model name, e.g. resnet18")
    factory: str | None = Field(None, description="'package.module:callable' or 'file.py:callable'")
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    torchscript: Path | None = None
    weights: Path | None = Field(None, description="state_dict file (torch.save)")
    allow_pickle: bool = Field(False, description="allow full-pickle weights (runs code: trust it)")
    num_classes: PositiveInt | None = None
    class_names: list[str] | None = None
    preprocessing: Preprocessing = Preprocessing()

    _paths = field_validator("torchscript", "weights")(_existing_path)

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^:\s]+:[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("expected 'package.module:callable' or 'path/file.py:callable'")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSection":
        given = [k for k in ("architecture", "factory", "torchscript") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of architecture, factory, torchscript "
                             f"(given: {', '.join(given) or 'none'})")
        return self


class DataSection(Strict):
    path: Path = Field(description="image folder, CSV manifest, or .pt/.npz tensor file")
    format: Literal["auto", "imagefolder", "csv", "tensor"] = "auto"
    batch_size: PositiveInt = 16
    limit: PositiveInt | None = Field(None, description="audit a seeded random subset of this size")
    target: Literal["predicted", "label"] = Field("predicted", description="class to explain")
    classes: list[str] | None = Field(None, description="class names in label-index order")
    on_error: Literal["raise", "skip"] = Field("raise", description="unreadable image: stop or skip")

    _path = field_validator("path")(_existing_path)


class ExplainerEntry(Strict):
    name: str = Field(description="registered explainer name (see `auditor plugins`)")
    label: str | None = Field(None, description="name in the report; defaults to `name`")
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.name


class CheckEntry(Strict):
    name: str = Field(description="registered check name (see `auditor plugins`)")
    explainers: list[str] | None = Field(None, description="explainer labels; default: all")
    params: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)


class OutputSection(Strict):
    directory: Path | None = Field(None, description="default: reports/<audit name>")
    formats: list[Literal["json", "junit", "html", "pdf"]] = ["json", "junit", "html", "pdf"]
    gallery_samples: int = Field(4, ge=0, le=8, description=(
        "samples whose maps (and explainers' extra figures) the report shows side by side"))


class PluginsSection(Strict):
    disable: list[str] = Field(default_factory=list, description=(
        "installed plugins not to load, by entry-point name or distribution name (as pytest's "
        "-p no:NAME); `auditor plugins` lists them as blocked"))


class AuditSpec(Strict):
    audit: AuditSection
    model: ModelSection
    data: DataSection
    explainers: list[ExplainerEntry] = Field(min_length=1)
    checks: list[CheckEntry] = Field(default_factory=list)
    output: OutputSection = OutputSection()
    plugins: PluginsSection = PluginsSection()

    @model_validator(mode="after")
    def _labels(self) -> "AuditSpec":
        seen: set[str] = set()
        for i, entry in enumerate(self.explainers):
            if entry.key in seen:
                raise _LocatedError(f"explainers[{i}].label", "duplicate explainer label; "
                                    "give each use of an explainer its own `label`", entry.key)
            seen.add(entry.key)
        for i, check in enumerate(self.checks):
            for j, name in enumerate(check.explainers or []):
                if name not in seen:
                    raise _LocatedError(f"checks[{i}].explainers[{j}]", "not an explainer of this "
                                        f"spec (expected one of: {', '.join(sorted(seen))})", name)
        return self

    def output_directory(self) -> Path:
        if self.output.directory is not None:
            return self.output.directory
        return Path("reports") / re.sub(r"[^A-Za-z0-9._-]+", "_", self.audit.name).strip("_")


class _LocatedError(ValueError):
    """A cross-field error that knows its own spec path."""

    def __init__(self, path: str, message: str, value: Any):
        super().__init__(message)
        self.path, self.value = path, value


def load_spec(path: str | Path) -> AuditSpec:
    """Read and validate a spec file; raise `SpecError` naming the spec path on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), f"cannot read the spec file: {exc.__class__.__name__}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError("<spec>", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, path.parent)


def parse_spec(data: Any, base_dir: str | Path = ".") -> AuditSpec:
    """Validate an already-parsed spec mapping."""
    if not isinstance(data, dict):
        raise SpecError("<spec>", "expected a mapping with sections audit, model, data, "
                        "explainers, checks, output", data)
    try:
        return AuditSpec.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise spec_error_from(exc) from None


def spec_error_from(exc: ValidationError, prefix: str = "", root: type[BaseModel] = AuditSpec
                    ) -> SpecError:
    """Turn the first pydantic error into a one-line `SpecError` (path, value, expectation)."""
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _LocatedError):
        return SpecError(cause.path, str(cause), cause.value)
    loc = [part for part in err["loc"] if not _is_pydantic_tag(part)]
    path = _join(prefix, loc)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1])
        message = "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
        return SpecError(path, message)
    if err["type"] == "missing":
        return SpecError(path, "required key is missing")
    return SpecError(path, message[0].lower() + message[1:], err.get("input"))


def _is_pydantic_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"tuple", "list", "int", "str"})


def _join(prefix: str, loc: list[Any]) -> str:
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _allowed_keys(model: type[BaseModel] | None, loc: list[Any]) -> list[str]:
    """Walk the schema along `loc` to list the keys allowed where an unknown key was found."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return []
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) in (typing.Union, types.UnionType) and args:
            current = args[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
