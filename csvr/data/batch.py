"""The batch contract between the data side and the model (docs/design.md section 8)."""

from __future__ import annotations

from typing import TypedDict

import torch


class Batch(TypedDict, total=False):
    """One collated batch.

    iframe:   [B, K, 3, H, W] float, normalised
    mv:       [B, K, T, 2, H, W] float, motion vectors (dx, dy) scaled by MV_SCALE
    residual: [B, K, T, 3, H, W] float, residuals scaled by RESIDUAL_SCALE
    label:    [B] long
    video_id: list[str] of length B
    skipped:  list[str], video ids dropped from this batch because they could not be read

    At test time K may be a multiple of the model's training K (views x crops, view-major);
    the LightningModule folds the extra views into the batch and averages their logits.
    """

    iframe: torch.Tensor
    mv: torch.Tensor
    residual: torch.Tensor
    label: torch.Tensor
    video_id: list[str]
    skipped: list[str]
