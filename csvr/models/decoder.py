"""Per-modality decoder: token folding, Conv Folding, skip branch and Conv Fusion (section 2).

tokens [B, N, D] -> Linear(D, C*p*p) -> nn.Fold -> [B, C, 4p, 4p] -> Conv Folding (3x3 conv,
ReLU); skip: the modality's initial map [B, C, 4p, 4p] through a learnable 1x1 conv; sum ->
Conv Fusion (3x3 conv, LeakyReLU 0.2) -> [B, C, 4p, 4p]. All convs have C filters.
"""

from __future__ import annotations

import torch
from torch import nn

from csvr.models.stems import GRID


class ModalityDecoder(nn.Module):
    """Fold tokens back to a map and fuse it with the modality's initial map."""

    def __init__(self, embed_dim: int, channels: int, patch: int) -> None:
        super().__init__()
        side = GRID * patch
        self.unembed = nn.Linear(embed_dim, channels * patch * patch)
        self.fold = nn.Fold(output_size=(side, side), kernel_size=patch, stride=patch)
        self.conv_folding = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(inplace=True))
        self.skip = nn.Conv2d(channels, channels, 1)
        self.conv_fusion = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))

    def forward(self, tokens: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, D], initial [B, C, H', W'] -> [B, C, H', W']."""
        folded = self.fold(self.unembed(tokens).transpose(1, 2))
        return self.conv_fusion(self.conv_folding(folded) + self.skip(initial))
