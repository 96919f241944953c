"""LIF neuron with a learnt per-channel threshold (docs/design.md sections 2 and 8).

SpikingJelly 2.0.0's ``LIFNode`` only takes a float ``v_threshold`` (its fused op
``sj_lif::forward`` rejects an ``nn.Parameter``) and its ``store_v_seq`` keeps the potential
*after* reset. ``ThresholdLIFNode`` is a small ``LIFNode`` subclass (so still a ``BaseNode``,
reset by ``functional.reset_net`` and found by hooks on ``BaseNode``) that charges, fires and
resets in plain torch with the threshold as an ``nn.Parameter``, and records the *pre-reset*
potential that the STM reads out.

Dynamics per step (``decay_input=True``, soft reset ``v_reset=None``), the same as ``LIFNode``:

    h[t] = v[t-1] + (x[t] - v[t-1]) / tau        (charge)
    s[t] = Heaviside(h[t] - theta)               (fire; surrogate gradient in backward)
    v[t] = h[t] - s[t] * theta                   (soft reset: subtract the threshold)

``learn_tau=True`` makes ``1/tau = sigmoid(w)`` learnable exactly as SpikingJelly's
``ParametricLIFNode`` does (``w`` initialised to ``-log(tau - 1)``); it combines with the
learnt threshold. The threshold is an unconstrained parameter (it is not clamped positive).

``spike="ternary"`` (an option, measured and not adopted: docs/stm_firing_rates.md) adds a
negative spike, s[t] = Heaviside(h[t] - theta) - Heaviside(-h[t] - theta), with the same soft
reset (a -1 spike adds theta back). The next conv adds or subtracts its weight: still one AC per
spike, which is how `csvr.energy` counts it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import neuron, surrogate
from torch import nn

SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}
SPIKES = ("binary", "ternary")  # ThresholdLIFNode's spike alphabets: {0, 1} or {-1, 0, 1}


def make_surrogate(name: str) -> surrogate.SurrogateFunctionBase:
    """The surrogate gradient function by name (``atan`` | ``sigmoid``)."""
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    return SURROGATES[name]()


def firing_shortfall(spikes: torch.Tensor, target: float) -> torch.Tensor:
    """How far (clip, neuron) pairs fire below a target rate: mean of max(0, target - rate), where
    rate = spikes [T, B, ...] averaged over the T steps. Differentiable through the surrogate
    gradient of the spikes, so a loss term on it raises the potential of neurons that fire too
    rarely (an activity regulariser; 0 when every pair fires at least `target`)."""
    return F.relu(target - spikes.mean(0)).mean()


FIRING_MEANS = ("layers", "neurons")  # how `pooled_firing_shortfall` pools layers


def pooled_firing_shortfall(layers: list[torch.Tensor], target: float, mean: str = "layers") -> torch.Tensor:
    """`firing_shortfall` of several spiking layers' spikes [T, B, ...], pooled: ``"layers"``
    counts each layer's mean alike, ``"neurons"`` every (clip, neuron) pair of every layer alike
    (a layer weighs by its neurons per clip)."""
    if mean not in FIRING_MEANS:
        raise ValueError(f"firing_mean must be one of {FIRING_MEANS}, got {mean!r}")
    weights = [s[0].numel() if mean == "neurons" else 1 for s in layers]
    return sum(firing_shortfall(s, target) * w for s, w in zip(layers, weights)) / sum(weights)


def regularisable_layers(net: nn.Module) -> list[neuron.BaseNode]:
    """The spiking layers (SpikingJelly ``BaseNode``s) whose spikes the activity regulariser
    reads; refuses a net without any, or with ternary ones (a silent ternary neuron gives
    |spike| no gradient, so the loss could not tell it which way to fire)."""
    layers = [m for m in net.modules() if isinstance(m, neuron.BaseNode)]
    if not layers:
        raise ValueError("model.firing_reg > 0 needs a net with spiking neurons (temporal: lif)")
    if any(getattr(m, "spike", "binary") != "binary" for m in layers):
        raise ValueError("model.firing_reg > 0 needs binary spikes: set net lif_spike: binary")
    return layers


class ThresholdLIFNode(neuron.LIFNode):
    """Multi-step soft-reset LIF with a learnable threshold ``theta`` of shape [C] (or [] if
    ``channels`` is None).

    Input [T, B, C, ...] in step_mode "m" (e.g. [T, B, C, H, W] or [T, B, C]), [B, C, ...] in
    "s"; output: spikes of the same shape. After a forward, ``v_pre_seq`` holds the pre-reset
    potential h [T, B, C, ...] when ``store_v_pre_seq`` is set (else None), ``v`` the potential
    after the last step's reset, and ``v_seq`` the post-reset sequence when ``store_v_seq`` is
    set (as in ``LIFNode``).
    """

    def __init__(
        self,
        channels: int | None = None,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        learn_threshold: bool = True,
        learn_tau: bool = False,
        decay_input: bool = True,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        store_v_seq: bool = False,
        store_v_pre_seq: bool = False,
        spike: str = "binary",
    ) -> None:
        super().__init__(
            tau=float(tau),
            decay_input=decay_input,
            v_threshold=float(v_threshold),
            v_reset=None,
            surrogate_function=surrogate_function or surrogate.ATan(),
            detach_reset=detach_reset,
            step_mode=step_mode,
            store_v_seq=store_v_seq,
        )
        if spike not in SPIKES:
            raise ValueError(f"unknown spike {spike!r}; choose one of {SPIKES}")
        self.spike = spike
        shape = () if channels is None else (channels,)
        self.threshold = nn.Parameter(torch.full(shape, float(v_threshold)), requires_grad=learn_threshold)
        self.learn_tau = learn_tau
        if learn_tau:
            self.w = nn.Parameter(torch.as_tensor(-math.log(tau - 1.0)))
        self.store_v_pre_seq = store_v_pre_seq
        self.v_pre_seq: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", channels={tuple(self.threshold.shape)}, learn_tau={self.learn_tau}, spike={self.spike}"
        )

    def reset(self) -> None:
        super().reset()
        self.v_pre_seq = None

    def _theta(self, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """The threshold shaped to broadcast over x (channel axis ``channel_dim``)."""
        if self.threshold.ndim == 0:
            return self.threshold
        if x.ndim <= channel_dim or x.shape[channel_dim] != self.threshold.shape[0]:
            raise ValueError(
                f"ThresholdLIFNode has {self.threshold.shape[0]} channels but got input of shape "
                f"{tuple(x.shape)} (channel axis {channel_dim})"
            )
        return self.threshold.view(-1, *([1] * (x.ndim - channel_dim - 1)))

    def _charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.learn_tau:
            k = self.w.sigmoid()
            return v + (x - v) * k if self.decay_input else v - v * k + x
        if self.decay_input:
            return v + (x - v) / self.tau
        return v - v / self.tau + x

    def _step(
        self, x: torch.Tensor, v: torch.Tensor, theta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self._charge(x, v)
        spike = self.surrogate_function(h - theta)
        if self.spike == "ternary":  # a negative spike where h <= -theta; reset adds theta back
            spike = spike - self.surrogate_function(-h - theta)
        s = spike.detach() if self.detach_reset else spike
        return spike, h - s * theta, h

    def _initial_v(self, like: torch.Tensor) -> torch.Tensor:
        v = self.v
        if not isinstance(v, torch.Tensor):
            return torch.full_like(like, float(v))
        if v.shape != like.shape:
            raise RuntimeError(
                f"ThresholdLIFNode holds a potential of shape {tuple(v.shape)} but got a step of "
                f"shape {tuple(like.shape)}: call spikingjelly's functional.reset_net(model) "
                "between sequences"
            )
        return v

    def single_step_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """x [B, C, ...] -> spikes [B, C, ...]."""
        spike, v, h = self._step(x, self._initial_v(x), self._theta(x, 1))
        self.v = v
        if self.store_v_seq:
            self._append_v_seq(v)
        if self.store_v_pre_seq:
            h = h.unsqueeze(0)
            self.v_pre_seq = h if self.v_pre_seq is None else torch.cat((self.v_pre_seq, h))
        return spike

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """x_seq [T, B, C, ...] -> spikes [T, B, C, ...]."""
        theta = self._theta(x_seq, 2)
        v = self._initial_v(x_seq[0])
        spikes, vs, hs = [], [], []
        for x in x_seq:
            spike, v, h = self._step(x, v, theta)
            spikes.append(spike)
            vs.append(v)
            hs.append(h)
        self.v = v
        self.v_seq = torch.stack(vs) if self.store_v_seq else None
        self.v_pre_seq = torch.stack(hs) if self.store_v_pre_seq else None
        return torch.stack(spikes)
