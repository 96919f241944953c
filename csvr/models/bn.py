"""Precise BatchNorm statistics (no Lightning here; ``csvr.precise_bn`` wires it into training)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recompute_bn_stats(net: nn.Module, batches: list[Any]) -> int:
    """Reset every BN of ``net`` and re-estimate its running statistics as the cumulative
    average over ``batches`` (net(batch) for each). Everything but BN runs in eval mode, so
    dropout/drop-path draw no random numbers. Returns the number of BN layers updated."""
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    if not bns or not batches:
        return 0
    was_training = net.training
    momenta = [m.momentum for m in bns]
    net.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
        m.train()
    try:
        for b in batches:
            net(b)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        net.train(was_training)
    return len(bns)
