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


@torch.no_grad()
def sync_bn_stats(net: nn.Module) -> int:
    """Under torch.distributed, make every rank's BN running statistics the average over ranks,
    weighted by each rank's batch count (``num_batches_tracked``). After
    ``recompute_bn_stats`` (a cumulative average over batches) this equals recomputing on all
    ranks' batches together. A no-op (returns 0) outside a process group of 2 or more."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 0
    if torch.distributed.get_world_size() < 2:
        return 0
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
    for m in bns:
        n = m.num_batches_tracked.to(m.running_mean.dtype)
        packed = torch.cat([m.running_mean * n, m.running_var * n, n.reshape(1)])
        torch.distributed.all_reduce(packed)
        total = packed[-1].clamp(min=1)
        c = m.running_mean.numel()
        m.running_mean.copy_(packed[:c] / total)
        m.running_var.copy_(packed[c : 2 * c] / total)
        m.num_batches_tracked.fill_(int(packed[-1]))
    return len(bns)
