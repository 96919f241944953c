"""The batch contract between the data side and the model (docs/design.md section 8): the stream
names, the `Batch` type and `fold_views`, the one reshaping that both sides agree on."""

from __future__ import annotations

from typing import Any, TypedDict

import torch

STREAMS = ("iframe", "mv", "residual")  # the tensors of a batch, in the model's canonical order


class Batch(TypedDict, total=False):
    """One collated batch.

    iframe:   [B, K, 3, H, W] float, normalised
    mv:       [B, K, T, 2, H, W] float, motion vectors (dx, dy) scaled by MV_SCALE
    residual: [B, K, T, 3, H, W] float, residuals scaled by RESIDUAL_SCALE
    label:    [B] long
    video_id: list[str] of length B
    skipped:  list[str], video ids dropped from this batch because they could not be read

    At test time K may be a multiple of the model's training K (views x crops, view-major);
    `fold_views` folds the extra views into the batch (the LightningModule averages their logits).
    """

    iframe: torch.Tensor
    mv: torch.Tensor
    residual: torch.Tensor
    label: torch.Tensor
    video_id: list[str]
    skipped: list[str]


def fold_views(batch: Batch | dict[str, Any], k: int) -> tuple[dict[str, Any], int]:
    """Fold test-time views into the batch.

    The streams arrive as `[B, V*K, ...]` (view-major); the net wants `[B*V, K, ...]`.
    Returns the folded batch (other keys unchanged) and V.
    """
    ref = next(batch[s] for s in STREAMS if s in batch)
    b, s = ref.shape[:2]
    if s % k:
        raise ValueError(f"batch has {s} segments per video, not a multiple of the model's K={k}")
    v = s // k
    if v == 1:
        return batch, 1
    out = dict(batch)
    for name in STREAMS:
        if name in batch:
            x = batch[name]
            out[name] = x.reshape(b * v, k, *x.shape[2:])
    return out, v
