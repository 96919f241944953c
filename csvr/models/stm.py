"""Spiking Temporal Modulator (STM) and its dense ablations (docs/design.md section 2).

A P-frame stream [T, B, C_in, H, W] (motion vectors or residuals) goes through three layers
with strides 2, 2, 1, so the output map is [B, C, H/4, W/4] like the I-frame stem's.

- ``temporal="lif"``: three conv -> BN -> LIF layers (soft reset, learnt threshold). Layers 1-2
  pass spikes on; the output is the *accumulated analog membrane potential* of layer 3: the mean
  over T of its pre-reset potential.
- ``temporal="convgru"``: the same three layers as ConvGRU cells (a dense RNN); the output is
  the mean over T of layer 3's hidden state.
- ``temporal="conv"``: per-frame conv -> BN -> ReLU with no state; layers 1-2 pass ReLU
  activations on and the output is the mean over T of layer 3's pre-activation (BN output), the
  counterpart of the LIF's analog potential.

Each spiking layer is ``stm.layers[i]`` with ``.conv``, ``.bn`` and ``.neuron``; the neuron is a
module whose forward output is the spike tensor [T, B, C, h, w] (hooks see it). Layer 3's
spikes feed no synapse: the STM reads (and then clears) that neuron's ``v_pre_seq``, so the
next consumer (the local encoder conv) reads an analog map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from csvr.models.lif import ThresholdLIFNode, make_surrogate

TEMPORAL = ("lif", "convgru", "conv")
STRIDES = (2, 2, 1)


def _per_frame(module: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame module to [T, B, ...] by folding T into the batch."""
    y = module(x_seq.flatten(0, 1))
    return y.unflatten(0, x_seq.shape[:2])


class SpikingConvLayer(nn.Module):
    """conv3x3 -> BN -> ThresholdLIFNode on [T, B, C_in, H, W] -> spikes [T, B, C, H/s, W/s]."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, **lif: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.neuron = ThresholdLIFNode(out_ch, **lif)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.neuron(_per_frame(lambda x: self.bn(self.conv(x)), x_seq))


class ConvLayer(nn.Module):
    """conv3x3 -> BN (-> ReLU) per frame, no state: [T, B, C_in, H, W] -> [T, B, C, H/s, W/s]."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = act

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = _per_frame(lambda x: self.bn(self.conv(x)), x_seq)
        return F.relu(y) if self.act else y


class ConvGRULayer(nn.Module):
    """ConvGRU cell unrolled over T: [T, B, C_in, H, W] -> hidden states [T, B, C, H/s, W/s].

    Gates from the input through a strided conv3x3 -> BN (3C channels: update, reset,
    candidate), from the hidden state through a conv3x3; h0 = 0.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 3 * out_ch, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(3 * out_ch)
        self.conv_h = nn.Conv2d(out_ch, 3 * out_ch, 3, 1, 1)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        gx = _per_frame(lambda x: self.bn(self.conv(x)), x_seq)
        h = gx.new_zeros(gx.shape[1], gx.shape[2] // 3, *gx.shape[3:])
        hs = []
        for g in gx:
            xz, xr, xn = g.chunk(3, dim=1)
            hz, hr, hn = self.conv_h(h).chunk(3, dim=1)
            z = torch.sigmoid(xz + hz)
            r = torch.sigmoid(xr + hr)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            hs.append(h)
        return torch.stack(hs)


class SpikingTemporalModulator(nn.Module):
    """Three temporal layers over a P-frame stream.

    Input [T, B, in_ch, H, W] (H, W divisible by 4); output [B, channels, H/4, W/4].
    """

    def __init__(
        self,
        in_ch: int,
        channels: int = 64,
        temporal: str = "lif",
        tau: float = 2.0,
        learn_threshold: bool = True,
        learn_tau: bool = False,
        surrogate: str = "atan",
        detach_reset: bool = False,
    ) -> None:
        super().__init__()
        if temporal not in TEMPORAL:
            raise ValueError(f"unknown temporal {temporal!r}; choose one of {TEMPORAL}")
        self.temporal = temporal
        chans = [in_ch, channels, channels, channels]
        layers: list[nn.Module] = []
        for i, stride in enumerate(STRIDES):
            if temporal == "lif":
                layer = SpikingConvLayer(
                    chans[i], chans[i + 1], stride, tau=tau, learn_threshold=learn_threshold,
                    learn_tau=learn_tau, surrogate_function=make_surrogate(surrogate),
                    detach_reset=detach_reset, store_v_pre_seq=i == len(STRIDES) - 1,
                )
            elif temporal == "convgru":
                layer = ConvGRULayer(chans[i], chans[i + 1], stride)
            else:
                layer = ConvLayer(chans[i], chans[i + 1], stride, act=i < len(STRIDES) - 1)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """x_seq [T, B, in_ch, H, W] -> [B, channels, H/4, W/4]."""
        if x_seq.ndim != 5:
            raise ValueError(f"STM expects [T, B, C, H, W], got shape {tuple(x_seq.shape)}")
        y = x_seq
        for layer in self.layers:
            y = layer(y)
        if self.temporal == "lif":
            y = self.layers[-1].neuron.v_pre_seq
            self.layers[-1].neuron.v_pre_seq = None  # the output keeps it alive; drop the ref
        return y.mean(0)
