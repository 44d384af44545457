"""The evidence a check returns for the report (`Conclusion.evidence`), as a schema.

Three keys are drawn by the report for any check; every other key is kept in results.json as data:

* ``tables``: `Table` — a title, column names, rows of cells.
* ``figures``: `LineFigure` — curves over shared x labels, drawn by matplotlib at render time.
* ``images``: `ImageGrid` — rows of inline pictures (``data:image/...`` URIs, see
  `auditor.figures.overlay` and `auditor.figures.picture`).

The engine validates the evidence when `conclude` returns: malformed evidence turns the cell into
ERROR naming the entry and the field, so nothing is ever silently left out of the report.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Number = float | int | None  # None: undefined (drawn as a gap)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Table(_Strict):
    """``rows`` of cells under ``columns``; every row has one cell per column."""

    title: str
    columns: list[str]
    rows: list[list[Any]]

    @model_validator(mode="after")
    def _rectangular(self) -> "Table":
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"rows[{i}] has {len(row)} cells for {len(self.columns)} columns")
        return self


class LineFigure(_Strict):
    """One curve per ``series`` entry over the labels ``x`` (each series as long as ``x``);
    ``hlines`` draws dashed thresholds, ``ylim`` fixes the y range, ``alt`` is the text
    alternative."""

    kind: Literal["line"] = "line"
    title: str
    x: list[Any]
    series: dict[str, list[Number]]
    alt: str = ""
    xlabel: str = ""
    ylabel: str = ""
    hlines: dict[str, float] = Field(default_factory=dict)
    ylim: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _aligned(self) -> "LineFigure":
        if not self.series:
            raise ValueError("series is empty: nothing to draw")
        for name, values in self.series.items():
            if len(values) != len(self.x):
                raise ValueError(f"series {name!r} has {len(values)} values for {len(self.x)} x labels")
        return self


class ImageRow(_Strict):
    label: str
    images: list[str]  # data:image/png|jpeg|webp;base64,... URIs


class ImageGrid(_Strict):
    """Rows of pictures under ``columns`` (one picture per column in each row)."""

    title: str
    columns: list[str]
    rows: list[ImageRow]
    alt: str = ""

    @model_validator(mode="after")
    def _inline(self) -> "ImageGrid":
        for i, row in enumerate(self.rows):
            for j, uri in enumerate(row.images):
                if not uri.startswith(("data:image/png;base64,", "data:image/jpeg;base64,",
                                       "data:image/webp;base64,")):
                    raise ValueError(f"rows[{i}].images[{j}] is not an inline data:image URI "
                                     "(reports fetch nothing)")
        return self


class Evidence(BaseModel):
    """`Conclusion.evidence`: the three drawn keys, plus any other JSON-able data."""

    model_config = ConfigDict(extra="allow")

    tables: list[Table] = Field(default_factory=list)
    figures: list[LineFigure] = Field(default_factory=list)
    images: list[ImageGrid] = Field(default_factory=list)


class EvidenceError(ValueError):
    """Evidence that does not follow the schema; the message names the entry and the field."""


def validated_evidence(evidence: Any) -> dict[str, Any]:
    """The evidence checked against `Evidence`, as plain data (defaults filled in)."""
    if isinstance(evidence, Evidence):
        evidence = evidence.model_dump()
    if not isinstance(evidence, dict):
        raise EvidenceError(f"evidence is {type(evidence).__name__}, expected a mapping")
    try:
        parsed = Evidence.model_validate(evidence)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EvidenceError(f"evidence.{where}: {first['msg']}"
                            + (f" ({len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else "")) from None
    drawn = parsed.model_dump(include={"tables", "figures", "images"})
    return {**evidence, **{k: v for k, v in drawn.items() if k in evidence}}
