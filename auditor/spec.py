"""The YAML audit spec: schema (pydantic), loading (a safe YAML loader, stricter than yaml.safe_load)
and one-line errors.

Every error names the spec path (``checks[1].thresholds.spearman_abs``), the value and what was
expected. Input paths (weights, data) resolve relative to the spec file; the output directory
resolves relative to the current directory.

The YAML is read with a safe loader that also refuses duplicate keys, aliases (``*name``: write
the value out; this rules out alias bombs), nesting deeper than `MAX_DEPTH` levels and integers of
more than `MAX_INT_DIGITS` digits, each naming the spec path and line.
"""
from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      ValidationInfo, field_validator, model_validator)

from .errors import SpecError, join_path
from .spec_yaml import MAX_DEPTH, load_yaml


class Strict(BaseModel):
    """Rejects unknown keys and freezes after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_SEED = 2**32 - 1     # numpy's seed range
MAX_BATCH = 4096
MAX_SIDE = 4096          # pixels per side of model.preprocessing.resize
MAX_CLASSES = 100_000
MAX_LIMIT = 2**31 - 1
MAX_NORM = 1000.0        # |mean| and std bound (pixels are in [0, 1])
MIN_STD = 1e-6
MAX_THREADS = 4096       # execution.threads
MAX_SPEC_BYTES = 1 << 20


def _bounded_int(lo: int, hi: int) -> Any:
    """An integer from `lo` to `hi`: not a boolean; a whole float (``4.0``) is accepted."""
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer from {lo} to {hi}, not a boolean")
        if isinstance(value, (int, float)) and not lo <= value <= hi:  # NaN fails too
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return value
    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(check)]


def _bounded_float(lo: float, hi: float) -> Any:
    """A finite number from `lo` to `hi`, not a boolean."""
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number from {lo:g} to {hi:g}, not a boolean")
        if isinstance(value, (int, float)) and not (math.isfinite(value) and lo <= value <= hi):
            raise ValueError(f"expected a finite number from {lo:g} to {hi:g}")
        return value
    return Annotated[float, Field(ge=lo, le=hi, allow_inf_nan=False), BeforeValidator(check)]


Seed = _bounded_int(0, MAX_SEED)
BatchSize = _bounded_int(1, MAX_BATCH)
Limit = _bounded_int(1, MAX_LIMIT)
Classes = _bounded_int(1, MAX_CLASSES)
Side = _bounded_int(1, MAX_SIDE)
GallerySamples = _bounded_int(0, 8)
Mean = _bounded_float(-MAX_NORM, MAX_NORM)
Std = _bounded_float(MIN_STD, MAX_NORM)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control(value: Any) -> Any:
    """A name shown in the terminal and the report: no control characters (ANSI escapes, newlines
    would restyle or forge lines of the verdict table)."""
    if isinstance(value, str) and _CONTROL.search(value):
        raise ValueError("control characters (newlines, tabs, ANSI escapes) are not allowed")
    return value


def _path_text(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("expected a path, got an empty string")
    if isinstance(value, str) and "\0" in value:
        raise ValueError("expected a path, got a NUL character in it")
    return value


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = Path((info.context or {}).get("base_dir", "."))
    return value if value.is_absolute() else base / value


def _stat(path: Path, want_file: bool) -> None:
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the file system, ...
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"cannot access the path: {reason}") from None
    if not exists:
        raise ValueError(f"file not found: {str(path)[:200]}")
    if want_file and not is_file:
        raise ValueError(f"not a regular file (expected a file): {str(path)[:200]}")


def _existing_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """A file or a folder that exists, relative to the spec file."""
    if value is None:
        return None
    path = _resolve(value, info)
    _stat(path, want_file=False)
    return path


def _existing_file(value: Path | None, info: ValidationInfo) -> Path | None:
    """A regular file that exists, relative to the spec file."""
    if value is None:
        return None
    path = _resolve(value, info)
    _stat(path, want_file=True)
    return path


class AuditSection(Strict):
    name: str = Field(min_length=1, max_length=200, description=(
        "Audit name (1 to 200 characters), shown on the report's front page; the default output "
        "folder is reports/<name made safe as a folder name>."))
    seed: Seed = Field(0, description=(
        f"Seed of every random choice (sampling, randomization, noise): 0 to {MAX_SEED}."))
    device: Literal["auto", "cpu", "cuda"] = "auto"

    _name = field_validator("name")(_no_control)


class Preprocessing(Strict):
    """Applied to every image: resize to (H, W), scale to [0, 1], then the model sees (x - mean) / std.

    The normalization is folded into the model, so explainers and checks work in pixel space [0, 1].
    """

    resize: tuple[Side, Side] | None = Field(None, description=(
        f"(height, width), or one size for both; each 1 to {MAX_SIDE} pixels"))
    mean: tuple[Mean, Mean, Mean] = Field((0.0, 0.0, 0.0), description=(
        f"per-channel mean in pixel units: finite, -{MAX_NORM:g} to {MAX_NORM:g}"))
    std: tuple[Std, Std, Std] = Field((1.0, 1.0, 1.0), description=(
        f"per-channel std in pixel units: finite, > 0 ({MIN_STD:g} to {MAX_NORM:g})"))

    @field_validator("resize", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (math.isfinite(value) and 1 <= value <= MAX_SIDE):
                raise ValueError(f"expected a size from 1 to {MAX_SIDE} pixels, or [height, width]")
            return (value, value)
        return value


def _distinct_names(value: list[str] | None) -> list[str] | None:
    """Refuse a class-name list with duplicates: labels are mapped to classes by name."""
    if value is not None:
        seen: set[str] = set()
        dups = sorted({n for n in value if n in seen or seen.add(n)})
        if dups:
            raise ValueError(f"duplicate class names: {', '.join(dups)}")
    return value


class ModelSection(Strict):
    """Exactly one of ``architecture`` (torchvision), ``factory`` or ``torchscript``."""

    architecture: str | None = Field(None, description="torchvision model name, e.g. resnet18")
    factory: str | None = Field(None, description=(
        "'package.module:callable' (an installed package, not the standard library) or "
        "'file.py:callable' (relative to the spec's folder); `auditor validate` imports it (without "
        "calling it) and checks that factory_kwargs fit its signature"))
    factory_kwargs: dict[str, Any] = Field(default_factory=dict, description=(
        "keyword arguments of the factory (or of the torchvision builder)"))
    torchscript: Path | None = Field(None, description="TorchScript file (a regular file)")
    weights: Path | None = Field(None, description="state_dict file (torch.save; a regular file)")
    allow_pickle: bool = Field(False, strict=True, description=(
        "allow full-pickle weights (runs code: trust it); true or false"))
    num_classes: Classes | None = Field(None, description=(
        f"output classes, 1 to {MAX_CLASSES}"))
    class_names: list[str] | None = None
    preprocessing: Preprocessing = Preprocessing()

    _texts = field_validator("torchscript", "weights", mode="before")(_path_text)
    _paths = field_validator("torchscript", "weights")(_existing_file)
    _names = field_validator("class_names")(_distinct_names)

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
    batch_size: BatchSize = Field(16, description=(
        f"samples per forward pass, 1 to {MAX_BATCH}"))
    limit: Limit | None = Field(None, description=(
        f"audit a seeded random subset of this size (1 to {MAX_LIMIT})"))
    target: Literal["predicted", "label"] = Field("predicted", description="class to explain")
    classes: list[str] | None = Field(None, description="class names in label-index order")
    on_error: Literal["raise", "skip"] = Field("raise", description="unreadable image: stop or skip")
    rescale: Literal["auto", 255, "none"] = Field("auto", description=(
        "tensor files: auto = uint8 divided by 255, other dtypes must be in [0, 1]; 255 = divide "
        "every dtype by 255; none = divide nothing"))

    _text = field_validator("path", mode="before")(_path_text)
    _path = field_validator("path")(_existing_path)
    _classes = field_validator("classes")(_distinct_names)


class ExplainerEntry(Strict):
    name: str = Field(description="registered explainer name (see `auditor plugins`)")
    label: str | None = Field(None, description="name in the report; defaults to `name`")
    params: dict[str, Any] = Field(default_factory=dict)

    _label = field_validator("label")(_no_control)

    @property
    def key(self) -> str:
        return self.label or self.name


class CheckEntry(Strict):
    name: str = Field(description="registered check name (see `auditor plugins`)")
    explainers: list[str] | None = Field(None, description="explainer labels; default: all")
    params: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)


class OutputSection(Strict):
    directory: Path | None = Field(None, description=(
        "used as given (relative to the current directory); default: reports/<audit name made "
        "safe as a folder name: no separators, no leading or trailing dots; 'audit' if nothing "
        "is left>"))
    formats: list[Literal["json", "junit", "html", "pdf"]] = ["json", "junit", "html", "pdf"]
    gallery_samples: GallerySamples = Field(4, description=(
        "samples whose maps (and explainers' extra figures) the report shows side by side; "
        "0 to 8"))

    _text = field_validator("directory", mode="before")(_path_text)

    @field_validator("formats")
    @classmethod
    def _some_format(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one of json, junit, html, pdf (an audit that "
                             "writes no result is not run)")
        return value


class PluginsSection(Strict):
    disable: list[str] = Field(default_factory=list, description=(
        "installed plugins not to load, by entry-point name or distribution name (as pytest's "
        "-p no:NAME); `auditor plugins` lists them as blocked"))


class FitSection(Strict):
    """Trainable explainers (``needs_fitting``: VarSal, DRE): where fitted states live and what
    `auditor run` does when none matches this model, data and explainer config."""

    when_missing: Literal["error", "auto"] = Field("error", description=(
        "no fitted state: stop with the `auditor fit` command to run (error), or fit first (auto)"))
    store: Path | None = Field(None, description=(
        "state store directory (relative to the spec); default: $XDG_CACHE_HOME/xai-auditor/states "
        "or ~/.cache/xai-auditor/states"))

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"when_missing": value} if isinstance(value, str) else value  # `fit: auto`


class ExecutionSection(Strict):
    """Where batches are measured: in this process, or on Ray workers (the `ray` extra)."""

    engine: Literal["local", "ray"] = Field("local", description=(
        "local: this process; ray: stateful Ray workers that load the model from the spec"))
    address: str | None = Field(None, description=(
        "Ray cluster: null starts a local Ray with num_workers processes; 'auto' or 'ray://host:port'"))
    num_workers: int = Field(2, ge=1, le=4096, description="Ray workers (actors)")
    num_gpus_per_worker: float = Field(0.0, ge=0, le=64, description="GPUs each worker reserves")
    threads: _bounded_int(1, MAX_THREADS) | None = Field(None, description=(
        "torch threads: null keeps torch's default locally and gives each Ray worker its "
        "machine's cores divided by num_workers (at least 1); a number sets it for both"))


class AuditSpec(Strict):
    audit: AuditSection
    model: ModelSection
    data: DataSection
    explainers: list[ExplainerEntry] = Field(min_length=1)
    checks: list[CheckEntry] = Field(default_factory=list)
    output: OutputSection = OutputSection()
    plugins: PluginsSection = PluginsSection()
    fit: FitSection = FitSection()
    execution: ExecutionSection = ExecutionSection()

    @model_validator(mode="after")
    def _labels(self) -> "AuditSpec":
        seen: set[str] = set()
        for i, entry in enumerate(self.explainers):
            if entry.key in seen:
                raise _LocatedError(f"explainers[{i}].label", "duplicate explainer label; "
                                    "give each use of an explainer its own `label`", entry.key)
            seen.add(entry.key)
        if not self.checks:
            raise _LocatedError("checks", "no check to run: an audit that judges nothing is not a "
                                "pass; list at least one check", self.checks)
        for i, check in enumerate(self.checks):
            for j, name in enumerate(check.explainers or []):
                if name in (check.explainers or [])[:j]:
                    raise _LocatedError(f"checks[{i}].explainers[{j}]", "explainer listed twice "
                                        "in this check (its cells would be identical)", name)
                if name not in seen:
                    raise _LocatedError(f"checks[{i}].explainers[{j}]", "not an explainer of this "
                                        f"spec (expected one of: {', '.join(sorted(seen))})", name)
        return self

    @model_validator(mode="after")
    def _class_names_agree(self) -> "AuditSpec":
        """Labels are mapped to the model's classes by name: two name lists must be identical."""
        names, classes = self.model.class_names, self.data.classes
        if names is not None and classes is not None and names != classes:
            raise _LocatedError("data.classes", "differs from model.class_names (in order or "
                                f"content): expected [{', '.join(names)}]", classes)
        return self

    def output_directory(self) -> Path:
        """``output.directory`` as given, else ``reports/<folder_name(audit.name)>``."""
        if self.output.directory is not None:
            return self.output.directory
        return Path("reports") / folder_name(self.audit.name)

    def with_absolute_paths(self) -> "AuditSpec":
        """This spec with the input paths it resolved against the spec's folder when it was read
        (``model.weights``, ``model.torchscript``, ``data.path``) made absolute: the same spec in
        a process with another working directory (a Ray worker). A factory file and
        ``fit.store`` resolve against the base directory when used, so they stay as written."""
        model = {key: getattr(self.model, key).absolute() for key in ("weights", "torchscript")
                 if getattr(self.model, key) is not None}
        return self.model_copy(update={"model": self.model.model_copy(update=model),
                                       "data": self.data.model_copy(
                                           update={"path": self.data.path.absolute()})})


def folder_name(name: str) -> str:
    """`name` as one safe folder name: runs of other characters than ``A-Za-z0-9._-`` become
    ``_``, leading and trailing ``._-`` go (no ``.``, ``..``, hidden folder or separator), at most
    100 characters; ``audit`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:100].strip("._-") or "audit"


class LocatedError(ValueError):
    """An error raised inside a validator that knows its own spec path, relative to the model
    being validated (``spec_error_from`` prefixes it: ``checks[0].thresholds`` + ``ssim``)."""

    def __init__(self, path: str, message: str, value: Any):
        super().__init__(message)
        self.path, self.value = path, value


_LocatedError = LocatedError


def load_spec(path: str | Path) -> AuditSpec:
    """Read and validate a spec file; raise `SpecError` naming the spec path on any problem."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(str(path)[:200], f"the spec file is larger than {MAX_SPEC_BYTES >> 20} "
                            "MiB; is it the right file?")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise SpecError(str(path)[:200], f"cannot read the spec file: {reason}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError("<spec>", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise SpecError("<spec>", f"nested too deeply (expected at most {MAX_DEPTH} levels)"
                        ) from None
    except SpecError:
        raise
    except Exception as exc:  # a constructor's own failure (yaml raises more than YAMLError)
        raise SpecError("<spec>", f"not valid YAML: {type(exc).__name__}: {exc}") from None
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
    if isinstance(cause, LocatedError):
        return SpecError(f"{prefix}.{cause.path}" if prefix else cause.path, str(cause),
                         cause.value)
    loc = [part for part in err["loc"] if not _is_pydantic_tag(part)]
    path = join_path(prefix, loc)
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
