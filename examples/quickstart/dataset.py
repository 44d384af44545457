"""Synthetic shapes dataset with ground-truth object masks.

Each image shows one (or several) coloured shapes on a randomly textured
background (stripes, colour gradients, pixel noise).  The background is drawn
independently of the class, so only the object's *shape* identifies the class.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from skimage.draw import disk, polygon

CLASS_NAMES = ["circle", "square", "triangle", "cross"]
MARGIN = 8  # border band (px at size 64) that objects stay out of
MIN_SIZE, MAX_SIZE = 16.0, 30.0  # object extent (px at size 64)
MIN_CONTRAST = 80.0  # min L1 distance (summed over RGB) object vs local background


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random mix of stripes, a colour gradient and noise, float HxWx3."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    # stripes at a random angle / frequency between two random colours
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(1.5, 8.0)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    if rng.random() < 0.5:
        wave = (wave > 0.5).astype(np.float64)  # hard-edged stripes
    stripes = wave[..., None] * _random_colour(rng) + (1 - wave[..., None]) * _random_colour(rng)
    # smooth linear gradient between two random colours
    g_theta = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(g_theta) + yy * np.sin(g_theta)
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    gradient = t[..., None] * _random_colour(rng) + (1 - t[..., None]) * _random_colour(rng)
    alpha = rng.uniform(0.0, 1.0)
    bg = alpha * stripes + (1 - alpha) * gradient
    return bg + rng.normal(0, rng.uniform(0, 20), size=bg.shape)


def _rotate(rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, angle: float):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = rows - cy, cols - cx
    return cy + c * dy - s * dx, cx + s * dy + c * dx


def _shape_mask(rng: np.random.Generator, cls: int, cy: float, cx: float,
                extent: float, size: int) -> np.ndarray:
    """Boolean mask of one shape of class ``cls`` centred at (cy, cx)."""
    mask = np.zeros((size, size), dtype=bool)
    h = extent / 2.0
    angle = np.deg2rad(rng.uniform(-25, 25))
    if cls == 0:  # circle
        rr, cc = disk((cy, cx), h, shape=mask.shape)
        mask[rr, cc] = True
        return mask
    if cls == 1:  # square (side chosen so the rotated square fits in extent)
        a = h / (abs(np.cos(angle)) + abs(np.sin(angle)))
        rows = np.array([-a, -a, a, a])
        cols = np.array([-a, a, a, -a])
    elif cls == 2:  # triangle, any orientation
        angle = rng.uniform(0, 2 * np.pi)
        phis = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) - np.pi / 2
        rows, cols = h * np.sin(phis), h * np.cos(phis)
    elif cls == 3:  # cross / plus sign
        a = h / (abs(np.cos(angle)) + abs(np.sin(angle)))
        w = a * rng.uniform(0.3, 0.42)
        rows = np.array([-a, -a, -w, -w, w, w, a, a, w, w, -w, -w])
        cols = np.array([-w, w, w, a, a, w, w, -w, -w, -a, -a, -w])
    else:
        raise ValueError(f"unknown class id {cls}")
    rows, cols = _rotate(rows + cy, cols + cx, cy, cx, angle)
    rr, cc = polygon(rows, cols, shape=mask.shape)
    mask[rr, cc] = True
    return mask


def render(rng: np.random.Generator, objects: list[int], size: int = 64
           ) -> tuple[np.ndarray, np.ndarray]:
    """Render objects (class ids, left to right) on a textured background.

    Returns ``(image HxWx3 uint8, label_map HxW int64)``; the label map is -1 on
    background and the class id on each object's pixels.
    """
    if not objects:
        raise ValueError("objects must be non-empty")
    scale = size / 64.0
    margin = MARGIN * scale
    image = _background(rng, size)
    label_map = np.full((size, size), -1, dtype=np.int64)
    slot = (size - 2 * margin) / len(objects)  # horizontal slot per object
    for i, cls in enumerate(objects):
        max_ext = min(MAX_SIZE * scale, slot)
        extent = rng.uniform(min(MIN_SIZE * scale, max_ext), max_ext)
        x0 = margin + i * slot
        cx = rng.uniform(x0 + extent / 2, x0 + slot - extent / 2)
        cy = rng.uniform(margin + extent / 2, size - margin - extent / 2)
        mask = _shape_mask(rng, int(cls), cy, cx, extent, size)
        if not mask.any():
            continue
        local = image[mask].mean(axis=0)
        for _ in range(50):  # object colour must stand out from its background
            colour = _random_colour(rng)
            if np.abs(colour - local).sum() >= MIN_CONTRAST:
                break
        image[mask] = colour + rng.normal(0, 8, size=(int(mask.sum()), 3))
        label_map[mask] = int(cls)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label_map


def sample(rng: np.random.Generator, size: int = 64, label: int | None = None
           ) -> tuple[np.ndarray, int, np.ndarray]:
    """One single-object image: ``(image uint8 HxWx3, label, mask bool HxW)``."""
    if label is None:
        label = int(rng.integers(len(CLASS_NAMES)))
    image, label_map = render(rng, [label], size)
    return image, int(label), label_map == label


def generate(n: int, seed: int, size: int = 64
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` class-balanced samples: images [N,H,W,3] uint8, labels [N] int64, masks [N,H,W] bool."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    for i, lab in enumerate(labels):
        images[i], _, masks[i] = sample(rng, size, int(lab))
    return images, labels, masks


def write_dataset(out: Path, n: int, seed: int, size: int = 64) -> None:
    """Write PNG images/masks and ``manifest.csv`` (path,label,mask) to ``out``."""
    from PIL import Image

    images, labels, masks = generate(n, seed, size)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "mask"])
        for i in range(n):
            img_rel, mask_rel = f"images/{i:06d}.png", f"masks/{i:06d}.png"
            Image.fromarray(images[i]).save(out / img_rel, optimize=True)
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(out / mask_rel, optimize=True)
            writer.writerow([img_rel, CLASS_NAMES[labels[i]], mask_rel])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    write_dataset(args.out, args.n, args.seed, args.size)
    print(f"wrote {args.n} samples to {args.out}")


if __name__ == "__main__":
    main()
