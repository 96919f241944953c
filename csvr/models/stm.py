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

Normalisation (``norm``): ``"shared"`` is one BatchNorm2d whose statistics pool all T steps
(the paper's conv -> BN); ``"step"`` (``TemporalBatchNorm2d``) keeps statistics and affine
parameters per time step. Accumulated motion vectors grow with the step (on the real UCF slice
the MV std is 0.04 / 0.12 / 0.18 / 0.23 over T = 4 steps), so with pooled statistics step 0
barely reaches a threshold; per-step statistics put every step on the same footing. The
option applies to all three temporal kinds, so the ablation compares like with like.

``spike="ternary"`` (LIF only; measured, not adopted) lets the neurons fire -1 as well as +1
(``ThresholdLIFNode``): signed motion gets a signed spike. ``input_power=p`` (any temporal
kind; measured, not adopted) feeds sign(x) |x|^p to the first conv, compressing the
heavy-tailed P-frame values (zeros stay zero).

Each spiking layer is ``stm.layers[i]`` with ``.conv``, ``.bn`` and ``.neuron``; the neuron is a
module whose forward output is the spike tensor [T, B, C, h, w] (hooks see it). Layer 3's
spikes feed no synapse: the STM reads (and then clears) that neuron's ``v_pre_seq``, so the
next consumer (the local encoder conv) reads an analog map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from csvr.models.lif import ThresholdLIFNode, make_surrogate

TEMPORAL = ("lif", "convgru", "conv")
NORMS = ("shared", "step")
STRIDES = (2, 2, 1)
MAX_STEPS = 12  # a GOP of 12 frames has at most 11 P-frames


class TemporalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with statistics and affine parameters per time step.

    Input [T*B, C, H, W] folded T-major (step t at rows t*B .. t*B+B-1), T = ``self.steps``
    (set by the STM before each forward). Step t of channel c has its own mean, variance,
    weight and bias: buffers and parameters have max_steps*C entries, the first T*C are used.
    Equal to T separate ``BatchNorm2d``s, one per step (tested). Input and output keep the
    [T*B, ...] layout, so counting code that follows conv -> BN -> neuron still sees the link.
    """

    def __init__(self, channels: int, max_steps: int = MAX_STEPS, **kw: object) -> None:
        super().__init__(channels * max_steps, **kw)
        self.channels, self.max_steps = channels, max_steps
        self.steps = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, c = self.steps, self.channels
        if t > self.max_steps or x.shape[0] % t or x.shape[1] != c:
            raise ValueError(
                f"TemporalBatchNorm2d({c} channels, {self.max_steps} steps) got input "
                f"{tuple(x.shape)} for T={t}: T must be <= {self.max_steps} (lower data.num_p or "
                "build the STM with stm_norm: shared)"
            )
        n, y = t * c, x.view(t, -1, c, *x.shape[2:])  # [T, B, C, H, W]
        if self.training or self.running_mean is None:
            mean, var = y.mean((1, 3, 4)), y.var((1, 3, 4), unbiased=False)  # [T, C]
            if self.training and self.running_mean is not None:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                    count = y.numel() / n
                    unbiased = var * count / max(count - 1.0, 1.0)
                    self.running_mean[:n].mul_(1 - m).add_(mean.flatten(), alpha=m)
                    self.running_var[:n].mul_(1 - m).add_(unbiased.flatten(), alpha=m)
        else:
            mean, var = self.running_mean[:n].view(t, c), self.running_var[:n].view(t, c)
        shape = (t, 1, c, 1, 1)
        y = (y - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight[:n].view(shape) + self.bias[:n].view(shape)
        return y.view_as(x)


def _norm(kind: str, channels: int) -> nn.BatchNorm2d:
    return TemporalBatchNorm2d(channels) if kind == "step" else nn.BatchNorm2d(channels)


def _per_frame(module: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame module to [T, B, ...] by folding T into the batch."""
    y = module(x_seq.flatten(0, 1))
    return y.unflatten(0, x_seq.shape[:2])


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x_seq: torch.Tensor) -> torch.Tensor:
    """conv -> BN per frame: [T, B, C_in, H, W] -> [T, B, C, h, w] (T folded into the batch)."""
    if isinstance(bn, TemporalBatchNorm2d):
        bn.steps = x_seq.shape[0]
    return _per_frame(lambda x: bn(conv(x)), x_seq)


class SpikingConvLayer(nn.Module):
    """conv3x3 -> BN -> ThresholdLIFNode on [T, B, C_in, H, W] -> spikes [T, B, C, H/s, W/s]."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, norm: str = "shared", bn_bias: float = 0.0, **lif: object
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = _norm(norm, out_ch)
        nn.init.constant_(self.bn.bias, bn_bias)  # > 0 brings BN outputs nearer the threshold
        self.neuron = ThresholdLIFNode(out_ch, **lif)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.neuron(_conv_bn(self.conv, self.bn, x_seq))


class ConvLayer(nn.Module):
    """conv3x3 -> BN (-> ReLU) per frame, no state: [T, B, C_in, H, W] -> [T, B, C, H/s, W/s]."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: bool = True, norm: str = "shared") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = _norm(norm, out_ch)
        self.act = act

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = _conv_bn(self.conv, self.bn, x_seq)
        return F.relu(y) if self.act else y


class ConvGRULayer(nn.Module):
    """ConvGRU cell unrolled over T: [T, B, C_in, H, W] -> hidden states [T, B, C, H/s, W/s].

    Gates from the input through a strided conv3x3 -> BN (3C channels: update, reset,
    candidate), from the hidden state through a conv3x3; h0 = 0.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str = "shared") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 3 * out_ch, 3, stride, 1, bias=False)
        self.bn = _norm(norm, 3 * out_ch)
        self.conv_h = nn.Conv2d(out_ch, 3 * out_ch, 3, 1, 1)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        gx = _conv_bn(self.conv, self.bn, x_seq)
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
        norm: str = "shared",
        v_threshold: float = 1.0,
        decay_input: bool = True,
        bn_bias: float | Sequence[float] = 0.0,
        spike: str = "binary",
        input_power: float = 1.0,
    ) -> None:
        super().__init__()
        if input_power <= 0:
            raise ValueError(f"input_power must be > 0, got {input_power}")
        self.input_power = float(input_power)
        if temporal not in TEMPORAL:
            raise ValueError(f"unknown temporal {temporal!r}; choose one of {TEMPORAL}")
        if norm not in NORMS:
            raise ValueError(f"unknown STM norm {norm!r}; choose one of {NORMS}")
        self.temporal = temporal
        chans = [in_ch, channels, channels, channels]
        biases = [float(bn_bias)] * len(STRIDES) if isinstance(bn_bias, (int, float)) else [float(b) for b in bn_bias]
        if len(biases) != len(STRIDES):
            raise ValueError(f"bn_bias: give one value or one per layer ({len(STRIDES)}), got {bn_bias!r}")
        layers: list[nn.Module] = []
        for i, stride in enumerate(STRIDES):
            if temporal == "lif":
                layer = SpikingConvLayer(
                    chans[i],
                    chans[i + 1],
                    stride,
                    norm=norm,
                    bn_bias=biases[i],
                    tau=tau,
                    learn_threshold=learn_threshold,
                    learn_tau=learn_tau,
                    surrogate_function=make_surrogate(surrogate),
                    detach_reset=detach_reset,
                    store_v_pre_seq=i == len(STRIDES) - 1,
                    v_threshold=v_threshold,
                    decay_input=decay_input,
                    spike=spike,
                )
            elif temporal == "convgru":
                layer = ConvGRULayer(chans[i], chans[i + 1], stride, norm=norm)
            else:
                layer = ConvLayer(chans[i], chans[i + 1], stride, act=i < len(STRIDES) - 1, norm=norm)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """x_seq [T, B, in_ch, H, W] -> [B, channels, H/4, W/4]."""
        if x_seq.ndim != 5:
            raise ValueError(f"STM expects [T, B, C, H, W], got shape {tuple(x_seq.shape)}")
        y = x_seq
        if self.input_power != 1.0:  # signed power: sign(x) |x|^p compresses large values (p < 1)
            y = y.sign() * y.abs().pow(self.input_power)
        for layer in self.layers:
            y = layer(y)
        if self.temporal == "lif":
            y = self.layers[-1].neuron.v_pre_seq
            self.layers[-1].neuron.v_pre_seq = None  # the output keeps it alive; drop the ref
        return y.mean(0)
