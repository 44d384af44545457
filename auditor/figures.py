"""Pictures as data: heatmap overlays and line plots, as ``data:image/...;base64`` URIs.

Checks put these strings in their evidence (so results.json alone can re-render the report);
the report embeds them as they are. matplotlib runs headless (Agg).
"""
from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def data_uri(rgb: np.ndarray, fmt: str = "JPEG") -> str:
    """``[H,W,3]`` uint8 -> ``data:image/...;base64,...`` (JPEG by default: small for heatmaps)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fit(picture: Image.Image, size: int) -> np.ndarray:
    if picture.width > size:
        picture = picture.resize((size, round(size * picture.height / picture.width)), Image.BILINEAR)
    return np.asarray(picture)


def overlay(image: torch.Tensor, saliency: torch.Tensor, size: int = 96, alpha: float = 0.6) -> str:
    """A heatmap of |saliency| (scaled to its own max) over the greyed input, as a data URI.

    `image` is ``[3,H,W]`` in [0,1], `saliency` ``[H,W]``; the result is at most `size` px wide.
    """
    grey = image.detach().float().mean(0).cpu().numpy()
    heat = saliency.detach().float().abs().cpu().numpy()
    heat = heat / heat.max() if heat.max() > 0 else heat
    colours = matplotlib.colormaps["inferno"](heat)[..., :3]
    mixed = (1 - alpha) * grey[..., None] + alpha * colours
    return data_uri(_fit(Image.fromarray((np.clip(mixed, 0, 1) * 255).astype(np.uint8)), size))


def picture(image: torch.Tensor, size: int = 96) -> str:
    """An input image ``[3,H,W]`` in [0,1] as a data URI, at most `size` px wide."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    return data_uri(_fit(Image.fromarray(array), size))


MAX_SERIES = 20     # curves drawn in one figure; the others are named in the figure's note
MAX_POINTS = 2_000  # points drawn per curve; a longer curve is thinned to evenly spaced points
MAX_TICKS = 30      # x tick labels written; more are thinned to every k-th
_NAMED = 30         # series names a note lists before "and N more"


def drawable(figure: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`figure` (a LineFigure dict) as it is drawn, and a note saying what was left out ("" when
    it is drawn whole): at most `MAX_SERIES` curves, the others named; at most `MAX_POINTS`
    evenly spaced points per curve, first and last kept. Evidence with 5,000 series or 200,000
    points would take minutes to draw (issue 20 §6); results.json keeps all of it."""
    notes = []
    series = figure["series"]
    if len(series) > MAX_SERIES:
        names = list(series)
        left = names[MAX_SERIES:]
        shown = ", ".join(str(n) for n in left[:_NAMED])
        more = f" and {len(left) - _NAMED:,} more" if len(left) > _NAMED else ""
        notes.append(f"{len(names):,} series, the first {MAX_SERIES} drawn; not drawn: {shown}{more}")
        series = {name: series[name] for name in names[:MAX_SERIES]}
    x = figure["x"]
    if len(x) > MAX_POINTS:
        keep = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).round().astype(int)).tolist()
        notes.append(f"{len(keep):,} of {len(x):,} points drawn per curve, evenly spaced")
        x = [x[i] for i in keep]
        series = {name: [values[i] for i in keep] for name, values in series.items()}
    if not notes:
        return figure, ""
    return {**figure, "x": x, "series": series}, "; ".join(notes) + "; results.json keeps all of it"


def thin_ticks(count: int) -> list[int]:
    """Positions of the x tick labels written for `count` labels: all up to `MAX_TICKS`, else
    every k-th (thousands of labels took minutes to lay out)."""
    step = -(-count // MAX_TICKS) if count > MAX_TICKS else 1
    return list(range(0, count, step))


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _values(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def line_plot(figure: dict[str, Any], size: tuple[float, float] = (5.2, 3.0)) -> str:
    """Render a ``{"kind": "line", "x": labels, "series": {name: values}, ...}`` figure (PNG URI)."""
    fig, ax = plt.subplots(figsize=size, dpi=140)
    x = list(range(len(figure["x"])))
    marker = "o" if len(x) <= 200 else None  # a marker per point hides a long curve
    for name, values in figure["series"].items():
        ax.plot(x, _values(values), marker=marker, markersize=3, label=name)
    lines: dict[float, list[str]] = {}
    for name, value in (figure.get("hlines") or {}).items():
        lines.setdefault(value, []).append(name)
    for value, names in lines.items():
        ax.axhline(value, linestyle="--", linewidth=1, color="grey")
        ax.annotate(", ".join(names), (x[-1], value), fontsize=7, ha="right", va="bottom", color="grey")
    ticks = thin_ticks(len(x))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(figure["x"][i]) for i in ticks], rotation=45, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel(figure.get("xlabel") or "", fontsize=8)
    ax.set_ylabel(figure.get("ylabel") or "", fontsize=8)
    if figure.get("ylim"):
        ax.set_ylim(*figure["ylim"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(fig)


def short_ticks(labels: list[Any]) -> bool:
    """Whether x labels are short enough to be tick labels of a small panel (else: 1, 2, ...)."""
    return all(len(str(v)) <= 4 for v in labels)


def small_multiples(panels: list[dict[str, Any]], columns: int = 5,
                    panel: tuple[float, float] = (1.45, 1.0)) -> str:
    """One small panel per ``{"title": str, "figure": LineFigure dict}`` (the same figure of
    several explainers), as a PNG data URI: a shared y range, one legend, the same colour for a
    series in every panel, dashed threshold lines. Long x labels become 1, 2, ... (the caller
    lists them); `columns` panels per row at most, each `panel` inches (width, height)."""
    n = len(panels)
    ncols = max(1, min(n, columns))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(3.4, 0.25 + panel[0] * ncols), 0.4 + panel[1] * nrows), dpi=160,
                             sharey=True, squeeze=False)
    names = list(dict.fromkeys(name for p in panels for name in p["figure"]["series"]))
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    thresholds: dict[str, None] = {}
    longest = max((len(p["title"]) for p in panels), default=1)
    title_size = max(4.5, min(6.5, panel[0] * 72 / (0.6 * longest)))  # a title fits its panel
    limits = {tuple(p["figure"]["ylim"]) if p["figure"].get("ylim") else None for p in panels}
    for i, panel in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        figure = panel["figure"]
        x = list(range(1, len(figure["x"]) + 1))
        marker = "o" if len(x) <= 200 else None
        for name, values in figure["series"].items():
            ax.plot(x, _values(values), marker=marker, markersize=1.8, linewidth=1, color=colours[name])
        for name, value in (figure.get("hlines") or {}).items():
            ax.axhline(value, linestyle="--", linewidth=0.8, color="grey")
            thresholds[name] = None
        ax.set_title(panel["title"], fontsize=title_size, pad=2)
        if short_ticks(figure["x"]) and len(x) <= MAX_TICKS:
            ax.set_xticks(x)
            ax.set_xticklabels([str(v) for v in figure["x"]])
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8, integer=True))
        ax.tick_params(labelsize=5.5, length=2, pad=1)
        ax.grid(alpha=0.3, linewidth=0.5)
        if i % ncols == 0 and figure.get("ylabel"):
            ax.set_ylabel(figure["ylabel"], fontsize=6)
    if len(limits) == 1 and None not in limits:
        axes[0][0].set_ylim(*next(iter(limits)))
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    xlabel = panels[0]["figure"].get("xlabel") if n else ""
    if xlabel:
        fig.supxlabel(xlabel, fontsize=6.5)
    handles = [matplotlib.lines.Line2D([], [], color=colours[name], marker="o", markersize=2, linewidth=1)
               for name in names]
    labels = list(names)
    if thresholds:
        handles.append(matplotlib.lines.Line2D([], [], color="grey", linestyle="--", linewidth=0.8))
        joined = ", ".join(thresholds)
        labels.append(joined if len(joined) <= 28 else "thresholds")
    renderer = fig.canvas.get_renderer()
    for per_row in range(len(labels), 0, -1):  # as many entries a row as fit the figure's width
        legend = fig.legend(handles, labels, loc="upper center", ncol=per_row, fontsize=6.5,
                            frameon=False, bbox_to_anchor=(0.5, 1.0), handlelength=1.6,
                            columnspacing=1.0, borderaxespad=0.2)
        box = legend.get_window_extent(renderer)
        if box.width <= 0.98 * fig.bbox.width or per_row == 1:
            break
        legend.remove()
    tall = box.height / fig.dpi  # inches the legend takes above the panels
    fig.set_figheight(fig.get_figheight() + max(0.0, tall - 0.3))
    fig.tight_layout(pad=0.3, h_pad=0.6, w_pad=0.4, rect=(0, 0, 1, 1 - (tall + 0.04) / fig.get_figheight()))
    return _png(fig)
