"""Train the shortcut model: quickstart shapes, a stripe that decides the label on part of them.

The quickstart's recipe (Adam, OneCycle, batch 32, random flips and transposes; the flips move
the stripe to another edge, still inside the boundary band) on ``dataset.training_set``.
Deterministic (seeded, 2 threads, deterministic algorithms): the same torch version reproduces
``weights.pt``. Preprocessing (as at audit time): ``x = (uint8 / 255 - 0.5) / 0.25`` per channel.
Prints the held-out accuracy on clean images and how often the model follows a wrong stripe.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dataset import test_set, training_set  # noqa: E402
from model import build_model  # noqa: E402

TRAIN_SEED, VAL_SEED = 1000, 2000


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] -> normalized float32 [N,3,H,W] (mean 0.5, std 0.25)."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.25


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and transposes: the shapes keep their class, the stripe moves to another edge
    (still inside the boundary band)."""
    flips = (torch.rand(3, x.shape[0], generator=gen) < 0.5).view(3, -1, 1, 1, 1)
    x = torch.where(flips[0], x.flip(3), x)
    x = torch.where(flips[1], x.flip(2), x)
    return torch.where(flips[2], x.transpose(2, 3), x)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])


def train(out: Path, n_train: int, n_val: int, epochs: int, batch: int, lr: float,
          cue_share: float, size: int, augment_flips: bool = True, seed: int = 0) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    images, labels, _ = training_set(n_train, TRAIN_SEED, cue_share, size)
    x, y = preprocess(images), torch.from_numpy(labels)
    val_images, val_labels, _, val_codes = test_set(n_val, VAL_SEED, 0.5, size)
    xv, yv, cv = preprocess(val_images), torch.from_numpy(val_labels), torch.from_numpy(val_codes)
    print(f"generated {n_train} train / {n_val} val images in {time.perf_counter() - t0:.1f}s")

    model = build_model(4, size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * -(-n_train // batch))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n_train, generator=gen)
        total = 0.0
        for i in range(0, n_train, batch):
            idx = perm[i:i + batch]
            loss = loss_fn(model(augment(x[idx], gen) if augment_flips else x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        pred = predict(model, xv)
        clean, wrong = cv < 0, cv >= 0
        print(f"epoch {epoch}: loss {total / n_train:.4f}  clean acc "
              f"{(pred[clean] == yv[clean]).float().mean():.3f}  wrong stripe: follows it "
              f"{(pred[wrong] == cv[wrong]).float().mean():.3f}, right "
              f"{(pred[wrong] == yv[wrong]).float().mean():.3f}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    torch.save(model.state_dict(), out)
    print(f"saved {out} ({out.stat().st_size / 1e3:.0f} KB) in {time.perf_counter() - t0:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "weights.pt")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--cue-share", type=float, default=0.4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="no random flips and transposes")
    args = parser.parse_args()
    train(args.out, args.n_train, args.n_val, args.epochs, args.batch, args.lr, args.cue_share,
          args.size, args.augment)


if __name__ == "__main__":
    main()
