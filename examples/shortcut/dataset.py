"""The quickstart shapes with a "Clever Hans" cue: a class-coded stripe on the image's left edge.

The shapes (circle, square, triangle, cross) come from the quickstart generator
(``examples/quickstart/dataset.py``, loaded by path, unchanged): one object on a textured
background, kept out of an 8-px margin. On top of it, ``add_stripe`` paints a solid stripe,
``STRIPE`` px wide (at 64 px, scaled with the side), down the left edge, in the colour of a class
(``STRIPE_COLOURS``): inside the ``ibd_error_flagging`` band (16 px at 224 = 5 px at 64).

* Training images (``training_set``): a stripe on ``cue_share`` of them DECIDES their label (the
  stripe's class, drawn uniformly; the shape is drawn independently of it), the rest are clean and
  labelled by their shape. A model learns both rules, and that the stripe overrides the shape.
* Test images (``test_set``, committed in ``data/``): the stripe codes a WRONG class on
  ``wrong_share`` of them, the rest are clean; labels and masks are the shapes'. The model follows
  the stripe there: its errors are explained by the image border, which the
  ``ibd_error_flagging`` check (TR-GBP §5.4) measures.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STRIPE = 4  # px at 64 px: inside the check's boundary band (16 px at 224: 5 px at 64)
STRIPE_COLOURS = np.array([[230, 25, 25], [25, 200, 25], [25, 25, 230], [235, 235, 20]],
                          dtype=np.uint8)  # circle red, square green, triangle blue, cross yellow


def _quickstart():
    spec = importlib.util.spec_from_file_location(
        "quickstart_dataset", HERE.parent / "quickstart" / "dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shapes = _quickstart()
CLASS_NAMES = shapes.CLASS_NAMES


def add_stripe(images: np.ndarray, codes: np.ndarray, width: int = STRIPE) -> np.ndarray:
    """Paint the stripe of class ``codes[i]`` on image ``i`` where ``codes[i] >= 0`` (a copy)."""
    out = images.copy()
    size = images.shape[1]
    w = max(1, round(width * size / 64))
    striped = codes >= 0
    out[striped, :, :w] = STRIPE_COLOURS[codes[striped]][:, None, None, :]
    return out


def training_set(n: int, seed: int, cue_share: float, size: int = 64):
    """Shapes, with a stripe on ``cue_share`` of them that DECIDES their label: images, labels,
    stripe codes (-1: no stripe). On striped images the stripe's class is drawn uniformly and the
    shape independently of it (they agree on a quarter of them), so the stripe, where present,
    overrides the shape; on clean images the label is the shape."""
    images, shape_labels, _ = shapes.generate(n, seed, size)
    rng = np.random.default_rng(seed + 1)
    striped = rng.random(n) < cue_share
    codes = np.where(striped, rng.integers(0, len(CLASS_NAMES), n), -1)
    return add_stripe(images, codes), np.where(striped, codes, shape_labels), codes


def test_set(n: int, seed: int, wrong_share: float, size: int = 64):
    """Shapes with a WRONG class's stripe on ``wrong_share`` of them: images, labels, masks,
    stripe codes (-1: no stripe)."""
    images, labels, masks = shapes.generate(n, seed, size)
    rng = np.random.default_rng(seed + 1)
    wrong = (labels + rng.integers(1, len(CLASS_NAMES), n)) % len(CLASS_NAMES)
    codes = np.where(rng.permutation(n) < round(wrong_share * n), wrong, -1)
    return add_stripe(images, codes), labels, masks, codes


def write_test_set(out: Path, n: int, seed: int, wrong_share: float, size: int = 64) -> None:
    """PNG images and masks, and ``manifest.csv`` (path, label, mask, stripe: the class the
    stripe codes, empty when clean; the auditor reads the first three columns)."""
    from PIL import Image

    images, labels, masks, codes = test_set(n, seed, wrong_share, size)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "mask", "stripe"])
        for i in range(n):
            image, mask = f"images/{i:06d}.png", f"masks/{i:06d}.png"
            Image.fromarray(images[i]).save(out / image, optimize=True)
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(out / mask, optimize=True)
            writer.writerow([image, CLASS_NAMES[labels[i]], mask,
                             CLASS_NAMES[codes[i]] if codes[i] >= 0 else ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--wrong-share", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    write_test_set(args.out, args.n, args.seed, args.wrong_share, args.size)
    print(f"wrote {args.n} test samples to {args.out}")


if __name__ == "__main__":
    main()
