"""I-frame stem and local spatial (patch) encoders (docs/design.md section 2)."""

from __future__ import annotations

import torch
from torch import nn

NUM_PATCHES = 16  # N in the paper: a 4 x 4 grid of non-overlapping patches per map
GRID = 4


def patch_size(img_size: int) -> int:
    """Patch side p = (img_size / 4) / 4 so that a H/4 map splits into N = 16 patches.

    Raises ValueError unless img_size is a positive multiple of 16.
    """
    if img_size <= 0 or img_size % (4 * GRID) != 0:
        lo, hi = max(16, img_size // 16 * 16), img_size // 16 * 16 + 16
        raise ValueError(
            f"img_size={img_size} is not supported: the maps are at img_size/4 and must split "
            f"into {GRID}x{GRID} patches, so img_size must be a multiple of 16 (e.g. {lo} or "
            f"{hi}; 224 is the default)"
        )
    return img_size // 4 // GRID


class IFrameStem(nn.Module):
    """Two conv3x3/stride-2 -> BN -> ReLU: [B, 3, H, W] -> [B, channels, H/4, W/4]."""

    def __init__(self, channels: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LocalEncoder(nn.Module):
    """Learnable conv with kernel = stride = p, then flatten.

    [B, C, 4p, 4p] -> tokens [B, 16, D] (row-major patch order).
    """

    def __init__(self, channels: int, embed_dim: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(channels, embed_dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (GRID * self.patch, GRID * self.patch):
            raise ValueError(
                f"LocalEncoder with patch {self.patch} expects maps of "
                f"{GRID * self.patch}x{GRID * self.patch}, got {tuple(x.shape)}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)
