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


def line_plot(figure: dict[str, Any]) -> str:
    """Render a ``{"kind": "line", "x": labels, "series": {name: values}, ...}`` figure (PNG URI)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=110)
    x = list(range(len(figure["x"])))
    for name, values in figure["series"].items():
        ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", markersize=3,
                label=name)
    lines: dict[float, list[str]] = {}
    for name, value in (figure.get("hlines") or {}).items():
        lines.setdefault(value, []).append(name)
    for value, names in lines.items():
        ax.axhline(value, linestyle="--", linewidth=1, color="grey")
        ax.annotate(", ".join(names), (x[-1], value), fontsize=7, ha="right", va="bottom", color="grey")
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in figure["x"]], rotation=45, ha="right", fontsize=7)
    ax.set_xlabel(figure.get("xlabel") or "")
    ax.set_ylabel(figure.get("ylabel") or "")
    if figure.get("ylim"):
        ax.set_ylim(*figure["ylim"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
