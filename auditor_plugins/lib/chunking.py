"""How many expanded copies of a batch go through one forward+backward pass (IG steps,
SmoothGrad samples)."""
from __future__ import annotations

import torch


def copies_per_pass(requested: int | None, device: torch.device) -> int:
    """Copies of the batch per pass: `requested`, else 2 on CPU and 8 on GPU.

    Captum's default expands the whole batch at once (B x steps rows). On CPU that is up to 2x
    slower per row than small chunks (cache-bound; measured: IG 16 steps on the quickstart CNN
    26.8 passes unchunked vs 12.1 with 2 steps per pass, resnet18 IG 8 steps 14.0 vs 7.6), so the
    default is 2 copies per pass there; on a GPU 8, which bounds memory for large models.
    """
    if requested is not None:
        return requested
    return 8 if device.type == "cuda" else 2
