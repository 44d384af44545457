"""Train the quickstart CNN on in-memory synthetic shapes and save ``weights.pt``.

Preprocessing (must match at audit time): ``x = (uint8 / 255 - 0.5) / 0.25``
per channel, channel-first [N, 3, 64, 64].
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

from dataset import generate  # noqa: E402
from model import build_model  # noqa: E402

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
TRAIN_SEED, VAL_SEED = 1000, 2000


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] -> normalized float32 [N,3,H,W]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` on preprocessed inputs."""
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                  for i in range(0, len(x), batch))
    return correct / len(x)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and transposes (class-preserving for all four shapes)."""
    flips = (torch.rand(3, x.shape[0], generator=gen) < 0.5).view(3, -1, 1, 1, 1)
    x = torch.where(flips[0], x.flip(3), x)
    x = torch.where(flips[1], x.flip(2), x)
    return torch.where(flips[2], x.transpose(2, 3), x)


def train(out: Path, n_train: int, n_val: int, epochs: int, batch: int, lr: float,
          seed: int = 0) -> float:
    """Train, report per-epoch loss and held-out accuracy, save the state_dict."""
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(seed)

    t0 = time.perf_counter()
    xtr_u8, ytr, _ = generate(n_train, TRAIN_SEED)
    xva_u8, yva, _ = generate(n_val, VAL_SEED)
    xtr, ytr = preprocess(xtr_u8), torch.from_numpy(ytr)
    xva, yva = preprocess(xva_u8), torch.from_numpy(yva)
    print(f"generated {n_train} train / {n_val} val images in {time.perf_counter() - t0:.1f}s")

    model = build_model(4)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((n_train + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n_train, generator=gen)
        total = 0.0
        for i in range(0, n_train, batch):
            idx = perm[i:i + batch]
            loss = loss_fn(model(augment(xtr[idx], gen)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        val_acc = accuracy(model, xva, yva)
        print(f"epoch {epoch}: loss {total / n_train:.4f}  val_acc {val_acc:.4f}  "
              f"({time.perf_counter() - t0:.0f}s)")

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"held-out accuracy: {val_acc:.4f}  wall time: {time.perf_counter() - t0:.1f}s  "
          f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return val_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "weights.pt")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    train(args.out, args.n_train, args.n_val, args.epochs, args.batch, args.lr)


if __name__ == "__main__":
    main()
