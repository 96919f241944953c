"""A reference row: a plain 2D CNN per modality with late fusion (CoViAR-style, small, from
scratch). Not spiking, no transformer: it shows what the STM and the unified transformer buy.

    I-frame [B,K,3,H,W]   -> CNN_I  (3 ch in)     -\\
    MV      [B,K,T,2,H,W] -> CNN_MV (T*2 ch in)    -+-> per-modality logits, mean over K -> sum
    Res     [B,K,T,3,H,W] -> CNN_R  (T*3 ch in)   -/

The T P-frames of a segment are stacked as input channels (two-stream style stacked motion),
so the net is built for a fixed ``num_steps`` = the data's ``num_p``. Each CNN: four conv3x3 ->
BN -> ReLU layers (strides 2, 2, 2, 1), global average pool, dropout, linear. The returned
logits are the sum of the modalities' logits (late fusion); in training mode the net also
returns each modality's logits so ``aux_weight`` gives every branch a loss of its own (with
weight 1 the branches learn almost as if trained apart, as CoViAR does).
Same batch contract and test-time view folding as ``CSVRNet`` (the LightningModule folds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from csvr.models.csvr_net import MODALITIES, P_FRAME_CHANNELS, _get


def _cnn(in_ch: int, width: int, num_classes: int, dropout: float) -> nn.Sequential:
    chans = [in_ch, width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for i, stride in enumerate((2, 2, 2, 1)):
        layers += [
            nn.Conv2d(chans[i], chans[i + 1], 3, stride, 1, bias=False),
            nn.BatchNorm2d(chans[i + 1]),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(chans[-1], num_classes)
    )


class BaselineCNN(nn.Module):
    """Late fusion of one small 2D CNN per modality.

    ``forward(batch) -> logits [B, num_classes]`` (training: ``(logits, {modality: logits})``).
    ``img_size`` is only checked (any size works); ``num_steps`` must equal the batch's T.
    """

    def __init__(
        self,
        num_classes: int,
        img_size: int = 224,
        num_segments: int = 3,
        num_steps: int = 4,
        modalities: Sequence[str] = MODALITIES,
        width: int = 32,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"BaselineCNN: modalities={list(modalities)} is invalid: give one or "
                f"more distinct of {list(MODALITIES)}"
            )
        self.num_classes, self.img_size = num_classes, img_size
        self.num_segments, self.num_steps = num_segments, num_steps
        self.modalities = [m for m in MODALITIES if m in modalities]
        self.branches = nn.ModuleDict(
            {
                m: _cnn(3 if m == "iframe" else num_steps * P_FRAME_CHANNELS[m], width, num_classes, dropout)
                for m in self.modalities
            }
        )

    def forward(self, batch: Any) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch with iframe [B,K,3,H,W] / mv [B,K,T,2,H,W] / residual [B,K,T,3,H,W] -> [B, classes]."""
        per = {}
        for m in self.modalities:
            x = _get(batch, m)
            if x.shape[1] != self.num_segments:
                raise ValueError(
                    f"BaselineCNN: batch[{m!r}] has K={x.shape[1]} segments but the "
                    f"model was built for num_segments={self.num_segments}"
                )
            if m != "iframe":
                if x.ndim != 6 or x.shape[2] != self.num_steps:
                    raise ValueError(
                        f"BaselineCNN: batch[{m!r}] has shape {tuple(x.shape)}; expected "
                        f"[B, K, T={self.num_steps}, C, H, W]: set model.net.init_args.num_steps "
                        "to the data's num_p"
                    )
                x = x.flatten(2, 3)  # [B, K, T*C, H, W]: stacked P-frames
            b, k = x.shape[:2]
            per[m] = self.branches[m](x.flatten(0, 1)).view(b, k, -1).mean(1)
        logits = sum(per.values())
        return (logits, per) if self.training else logits
