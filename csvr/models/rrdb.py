"""ESRGAN Residual-in-Residual Dense Block (Wang et al. 2018), as in its reference code."""

from __future__ import annotations

import torch
from torch import nn


class ResidualDenseBlock(nn.Module):
    """Five densely connected conv3x3 (growth ``growth``), LeakyReLU 0.2, residual x 0.2.

    [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, channels: int, growth: int = 32, scale: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, 1, 1) for i in range(5)
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + self.scale * self.convs[-1](torch.cat(feats, 1))


class RRDB(nn.Module):
    """Three dense blocks in a residual, scaled by 0.2: [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels: int, growth: int = 32, scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(channels, growth, scale) for _ in range(3)))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.blocks(x)
