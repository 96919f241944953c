"""Operation and energy counting on the real forward pass (docs/design.md section 3, appendix Sec. 1).

Per layer l (a convolution, a linear layer or an attention product): M output neurons per
timestep, C synapses per neuron (fan-in), T timesteps, F the measured fraction of non-zero
input values. A layer whose input is binary spikes from a spiking neuron, or that reads sparse
analog values and drives a spiking neuron (the first STM conv, reading P-frames), performs
T * M * C * F accumulates (AC); every other layer performs T * M * C multiply-accumulates (MAC,
T = 1 for a layer that sees no time axis). Energy = MACs * E_MAC + ACs * E_AC.

Three figures, per video:
1. ``energy_J``, the paper's convention: convolutions only;
2. ``energy_all_compute_J``: convolutions, linear layers and attention products;
3. ``energy_with_memory_J``: SpikingJelly's ``estimate_simple_energy`` (its own MAC/AC rules,
   BatchNorm and element-wise ops included, plus parameter and neuron-state memory traffic).
``ratio_vs_ann`` = the same convolutions counted as dense MACs, divided by ``energy_J``.

Counting runs at the torch-dispatch level (``aten.convolution``, ``aten.mm/addmm/bmm/baddbmm``
and the fused ``scaled_dot_product_attention`` kernels), so layers are counted as executed,
with the innermost running module's name. Spiking neurons are ``BaseNode`` instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._python_dispatch import TorchDispatchMode

from csvr.data.batch import STREAMS
from csvr.models.bn import recompute_bn_stats
from csvr.models.csvr_net import CSVRNet

E_MAC = 4.6e-12  # J per 32-bit float multiply-accumulate, 45 nm (Horowitz, ISSCC 2014)
E_AC = 0.9e-12  # J per 32-bit float accumulate, 45 nm (Horowitz, ISSCC 2014)

aten = torch.ops.aten
_MATMUL = {aten.mm.default: 0, aten.addmm.default: 1, aten.bmm.default: 0, aten.baddbmm.default: 1}
_SDPA = {  # fused attention kernels: (q, k, v) are the first three arguments
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
}


def _ptr(x: torch.Tensor) -> int:
    return x.untyped_storage().data_ptr()


def _is_spike_valued(x: torch.Tensor) -> bool:
    """Spike-valued: {0, 1}, or {-1, 0, 1} (a ternary spike is an add or a subtract: one AC)."""
    return x.dtype == torch.bool or bool(((x == 0) | (x.abs() == 1)).all())


@dataclass
class LayerCount:
    """One counted layer, per video. ops = T * M * C * F (AC) or T * M * C (MAC)."""

    name: str
    op: str  # "conv" | "linear" | "attention"
    kind: str  # "AC" | "MAC"
    M: float  # output neurons per timestep (all segments, views and crops of one video)
    C: int  # fan-in
    T: int  # timesteps
    F: float  # measured non-zero fraction of the input
    ops: float
    energy_J: float

    @property
    def dense_macs(self) -> float:
        """The same layer as an ANN layer: T * M * C MACs."""
        return self.T * self.M * self.C


@dataclass
class NeuronStats:
    """Firing of one spiking layer: spikes per neuron per timestep, never-fired neurons."""

    rate: float
    silent: float
    T: int


@dataclass
class EnergyReport:
    """Counts of one or more forward passes, scaled to one video (``views`` inferences)."""

    layers: list[LayerCount]
    neurons: dict[str, NeuronStats]
    input_nonzero: dict[str, float]  # analog-AC layers (P-frame inputs): non-zero fraction
    views: int  # inferences per video (the per-view figures divide by it)
    num_samples: int  # samples the counts were measured on
    energy_with_memory_J: float | None = None

    def _conv(self, kind: str) -> float:
        return sum(l.ops for l in self.layers if l.op == "conv" and l.kind == kind)

    @property
    def flops_ann(self) -> float:
        """Paper convention: MACs of the convolutions."""
        return self._conv("MAC")

    @property
    def flops_snn(self) -> float:
        """Paper convention: ACs of the convolutions."""
        return self._conv("AC")

    @property
    def ann_J(self) -> float:
        return self.flops_ann * E_MAC

    @property
    def snn_J(self) -> float:
        return self.flops_snn * E_AC

    @property
    def energy_J(self) -> float:
        """Paper convention (convolutions only)."""
        return self.ann_J + self.snn_J

    @property
    def energy_all_compute_J(self) -> float:
        """Convolutions, linear layers and attention products."""
        return sum(l.energy_J for l in self.layers)

    @property
    def dense_ann_J(self) -> float:
        """The same convolutions, every one counted as dense MACs."""
        return sum(l.dense_macs for l in self.layers if l.op == "conv") * E_MAC

    @property
    def ratio_vs_ann(self) -> float:
        """How many times cheaper than the dense-MAC network (> 1 means cheaper)."""
        return self.dense_ann_J / self.energy_J if self.energy_J else float("nan")

    @property
    def energy_per_view_J(self) -> float:
        """Paper convention, one inference (K segments, one crop): ``energy_J / views``."""
        return self.energy_J / self.views

    def totals(self) -> dict[str, float | None]:
        return {
            "flops_ann": self.flops_ann,
            "flops_snn": self.flops_snn,
            "energy_J": self.energy_J,
            "snn_J": self.snn_J,
            "ann_J": self.ann_J,
            "energy_all_compute_J": self.energy_all_compute_J,
            "energy_with_memory_J": self.energy_with_memory_J,
            "views": self.views,
            "energy_per_view_J": self.energy_per_view_J,
            "energy_all_compute_per_view_J": self.energy_all_compute_J / self.views,
        }

    def layer_dicts(self) -> list[dict[str, Any]]:
        keys = ("name", "op", "kind", "M", "C", "T", "F", "ops", "energy_J")
        return [{k: asdict(l)[k] for k in keys} for l in self.layers]

    def by_part(self, all_compute: bool = True) -> dict[str, float]:
        """Energy per network part (see ``part_of``), joules per video, in ``PART_ORDER``.

        ``all_compute=False``: the paper's convention (convolutions only; a part without
        convolutions, e.g. the ViT, is 0). The values sum to ``energy_all_compute_J`` or
        ``energy_J``.
        """
        out = {p: 0.0 for p in PART_ORDER}
        for l in self.layers:
            if all_compute or l.op == "conv":
                out[part_of(l.name)] = out.get(part_of(l.name), 0.0) + l.energy_J
        return out

    def snn_by_part(self) -> dict[str, float]:
        """Paper-convention energy of the AC (spiking-input) convolutions per part, J/video."""
        out = {p: 0.0 for p in PART_ORDER}
        for l in self.layers:
            if l.op == "conv" and l.kind == "AC":
                out[part_of(l.name)] = out.get(part_of(l.name), 0.0) + l.energy_J
        return out

    def metrics(self) -> dict[str, float]:
        """Flat metric dict (W&B groups by the prefix before '/')."""
        m: dict[str, float] = {}
        for name, s in self.neurons.items():
            m[f"firing_rate/{name}"] = s.rate
            m[f"silent_fraction/{name}"] = s.silent
        for name, f in self.input_nonzero.items():
            m[f"input_nonzero/{name}"] = f
        m.update(
            {
                "energy/total_J": self.energy_J,
                "energy/snn_J": self.snn_J,
                "energy/ann_J": self.ann_J,
                "energy/ratio_vs_ann": self.ratio_vs_ann,
                "energy/all_compute_J": self.energy_all_compute_J,
            }
        )
        return m


PARTS = CSVRNet.PARTS  # the model's top-level children -> the parts the plot shows
PART_ORDER = ("stems", "STM", "encoders", "ViT", "decoders", "RRDB", "head")


def part_of(name: str) -> str:
    """The network part of a layer name (its top-level module, mapped through ``PARTS``)."""
    top = name.split(".", 1)[0]
    return PARTS.get(top, top)


@dataclass
class _Acc:
    """Running totals of one layer over all its calls."""

    op: str
    C: int
    out: int = 0  # output neurons summed over calls, samples and timesteps
    nnz: int = 0
    numel: int = 0
    T: int = 1
    spike_in: bool = True  # every call read binary spikes from a spiking neuron
    drives_neuron: bool = False


@dataclass
class _Neuron:
    spikes: float = 0.0
    numel: int = 0
    fired: torch.Tensor | None = None
    T: int = 1


class EnergyCounter(TorchDispatchMode):
    """Context manager that counts every forward pass of ``model`` run inside it.

    ``with EnergyCounter(net) as c: net(batch)`` then ``c.report(num_samples, views)``.
    Module hooks exist only inside the ``with`` block.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        names = getattr(model, "spiking_layers", None)
        named = names().items() if callable(names) else model.named_modules()
        self.neuron_names = {id(m): n for n, m in named if isinstance(m, BaseNode)}
        self.params = {_ptr(p) for p in model.parameters()}
        self.acc: dict[tuple[str, str, int], _Acc] = {}
        self.neurons: dict[str, _Neuron] = {}
        self._stack: list[str] = []
        self._handles: list[Any] = []
        self._step_T: dict[str, int] = {}  # multi-step module name -> T of its current input
        self._spikes: dict[int, tuple[torch.Tensor, int]] = {}  # storage -> (spikes, T)
        self._conv_out: dict[int, tuple[torch.Tensor, tuple]] = {}  # storage -> layer key

    # -- module hooks: names, spiking outputs, conv -> (BN) -> neuron links ----------------
    def __enter__(self) -> EnergyCounter:
        for name, mod in self.model.named_modules():
            name = name or type(mod).__name__  # the root
            self._handles.append(mod.register_forward_pre_hook(self._pre(name, mod)))
            self._handles.append(mod.register_forward_hook(self._post(mod), always_call=True))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.clear()
        self._spikes.clear()
        self._conv_out.clear()

    def _pre(self, name: str, mod: nn.Module):
        def hook(_m: nn.Module, args: tuple) -> None:
            if mod is self.model:  # a new forward: forget the previous one's tensors
                self._spikes.clear()
                self._conv_out.clear()
            self._stack.append(name)
            x = args[0] if args and torch.is_tensor(args[0]) else None
            if x is not None and getattr(mod, "step_mode", "s") == "m" and x.ndim >= 3:
                self._step_T[name] = x.shape[0]
            if isinstance(mod, BaseNode) and x is not None and _ptr(x) in self._conv_out:
                acc = self.acc[self._conv_out[_ptr(x)][1]]
                acc.drives_neuron = True
                acc.T = self._step_T.get(name, 1)

        return hook

    def _post(self, mod: nn.Module):
        def hook(_m: nn.Module, args: tuple, out: Any) -> None:
            if self._stack:
                self._stack.pop()
            x = args[0] if args and torch.is_tensor(args[0]) else None
            if isinstance(mod, _BatchNorm) and x is not None and torch.is_tensor(out):
                if _ptr(x) in self._conv_out:  # conv -> BN -> neuron still counts as a link
                    self._conv_out[_ptr(out)] = (out, self._conv_out[_ptr(x)][1])
            if isinstance(mod, BaseNode) and torch.is_tensor(out):
                self._record_spikes(mod, out)

        return hook

    def _record_spikes(self, mod: BaseNode, out: torch.Tensor) -> None:
        name = self.neuron_names.get(id(mod), type(mod).__name__)
        multi = getattr(mod, "step_mode", "s") == "m"
        t = out.shape[0] if multi else 1
        s = out.detach()
        fired = (s != 0).flatten(0, 1 if multi else 0).any(0)  # per neuron [C, H, W]
        st = self.neurons.setdefault(name, _Neuron())
        st.spikes += float(s.abs().sum())
        st.numel += s.numel()
        st.T = t
        st.fired = fired if st.fired is None or st.fired.shape != fired.shape else st.fired | fired
        self._spikes[_ptr(out)] = (out, t)

    # -- dispatch: the operations themselves --------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self._stack:  # outside the model's forward (e.g. a backward pass)
            return out
        where = self._stack[-1]
        if func is aten.convolution.default:
            x, w, transposed = args[0], args[1], args[6]
            c = w.shape[1] * prod(w.shape[2:])
            n_out = x.numel() if transposed else out.numel()  # transposed: M = inputs, C = fan-out
            key = self._add(where, "conv", c, x, n_out)
            self._conv_out[_ptr(out)] = (out, key)
        elif func in _MATMUL:
            a, b = args[_MATMUL[func]], args[_MATMUL[func] + 1]
            weight = _ptr(b) in self.params or _ptr(a) in self.params
            x = a if _ptr(b) in self.params else b if _ptr(a) in self.params else a
            self._add(where, "linear" if weight else "attention", a.shape[-1], x, out.numel())
        elif func.overloadpacket.__name__ in _SDPA:
            q, k, v = args[:3]
            rows = prod(q.shape[:-1])  # batch * heads * queries
            self._add(f"{where}.qk", "attention", q.shape[-1], q, rows * k.shape[-2])
            self._add(f"{where}.av", "attention", k.shape[-2], v, rows * v.shape[-1])
        return out

    def _add(self, where: str, op: str, c: int, x: torch.Tensor, n_out: int) -> tuple:
        key = (where, op, int(c))  # one row per fan-in (e.g. QK^T and AV in one module)
        acc = self.acc.setdefault(key, _Acc(op, int(c)))
        acc.out += int(n_out)
        acc.nnz += int(torch.count_nonzero(x))
        acc.numel += x.numel()
        spikes = self._spikes.get(_ptr(x))
        if spikes is not None and _is_spike_valued(x):
            acc.T = spikes[1]
        else:
            acc.spike_in = False
            acc.T = max(acc.T, self._step_T.get(where, 1))
        return key

    # -- the report ---------------------------------------------------------------------
    def report(self, num_samples: int, views: int = 1) -> EnergyReport:
        """Scale the counts to one video: ``views`` inferences of one sample each."""
        scale = views / num_samples
        layers = []
        input_nonzero = {}
        groups: dict[tuple[str, str], list[_Acc]] = {}
        for (where, op, _c), a in self.acc.items():
            groups.setdefault((where, op), []).append(a)
        named = [  # one row per fan-in; several in one module (e.g. QK^T and AV) are numbered
            (f"{where}:{i}" if len(accs) > 1 else where, op, a)
            for (where, op), accs in groups.items()
            for i, a in enumerate(accs)
        ]
        for name, op, a in named:
            f = a.nnz / a.numel if a.numel else 0.0
            analog_ac = a.drives_neuron and not a.spike_in
            kind = "AC" if a.spike_in or analog_ac else "MAC"
            if analog_ac:
                input_nonzero[name] = f
            m = a.out * scale / a.T
            ops = a.T * m * a.C * (f if kind == "AC" else 1.0)
            layers.append(LayerCount(name, op, kind, m, a.C, a.T, f, ops, ops * (E_AC if kind == "AC" else E_MAC)))
        neurons = {
            n: NeuronStats(s.spikes / s.numel, 1.0 - float(s.fired.double().mean()), s.T)
            for n, s in self.neurons.items()
            if s.numel
        }
        return EnergyReport(layers, neurons, input_nonzero, views, num_samples)


def batch_size(inputs: Any) -> int:
    """The number of samples in a contract batch (or a tensor's first dimension)."""
    if isinstance(inputs, Mapping):
        for key in STREAMS:
            if key in inputs:
                return int(inputs[key].shape[0])
        return int(next(v for v in inputs.values() if torch.is_tensor(v)).shape[0])
    return int(inputs.shape[0])


def simple_energy_J(model: nn.Module, inputs: Any) -> float:
    """SpikingJelly's simple energy model (compute + memory traffic) for one forward, in J."""
    from spikingjelly.activation_based.op_counter import estimate_simple_energy

    functional.reset_net(model)
    return estimate_simple_energy(model, (inputs,)).energy_total_pj * 1e-12


def count_energy(
    model: nn.Module,
    batches: Iterable[Any] | Any,
    *,
    views: int = 1,
    num_samples: int | None = None,
    memory: bool = False,
) -> EnergyReport:
    """Run ``model`` (eval mode, no grad) on one batch or a list of batches and count.

    ``num_samples``: samples per batch summed (default: ``batch_size`` of each batch, i.e. B of a
    contract batch; give it for inputs like [T, B, ...]). ``views``: inferences per video (test
    segments / K x crops). ``memory``: also run SpikingJelly's ``estimate_simple_energy``.
    """
    batches = list(batches) if isinstance(batches, (list, tuple)) else [batches]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), EnergyCounter(model) as counter:
            for b in batches:
                functional.reset_net(model)
                model(b)
        n = num_samples if num_samples is not None else sum(batch_size(b) for b in batches)
        if n < 1:
            raise ValueError("count_energy: the batches hold no samples (every video skipped?)")
        report = counter.report(n, views)
        if memory:
            joules = sum(simple_energy_J(model, b) for b in batches)
            report.energy_with_memory_J = joules * views / n
    finally:
        functional.reset_net(model)
        model.train(was_training)
    return report


def calibrate_bn(model: nn.Module, batches: Iterable[Any]) -> int:
    """Precise-BN before measuring: every BatchNorm's running mean/var re-estimated as the exact
    average over ``batches`` (``csvr.models.bn.recompute_bn_stats``: only BN in train mode, no
    gradients, weights untouched). Eval-mode BN at its init statistics feeds the LIF layers a
    scale unrelated to the data, so untrained weights are measured this way. Returns the
    number of batches seen."""
    batches = list(batches)
    if not batches:
        raise ValueError("calibrate_bn: no batches given")
    with torch.no_grad():
        recompute_bn_stats(model, batches)
    functional.reset_net(model)
    return len(batches)


@dataclass(frozen=True)
class Protocol:
    """A test protocol: ``segments`` per video x ``crops`` per segment.

    For csvr one inference reads K segments, so a video costs ceil(segments / K) x crops
    inferences ("views"); for a per-frame 2D model (CoViAR) K = 1.
    """

    segments: int
    crops: int = 1

    def views(self, k: int = 1) -> int:
        return -(-self.segments // k) * self.crops

    def __str__(self) -> str:
        return self.describe()

    def describe(self, unit: str = "segment") -> str:
        """'25 segments x 10 crops' (``unit`` "clip": '10 clips x 1 crop')."""
        s, c = self.segments, self.crops
        return f"{s} {unit}{'s' if s > 1 else ''} x {c} crop{'s' if c > 1 else ''}"


@dataclass(frozen=True)
class Baseline:
    """A published model: GMACs of one inference ("view") and its published test protocol.

    ``unit``: what one view reads: "segment" (one frame per stream, TSN-style 2D nets, so a
    protocol of S segments x C crops costs S x C views) or "clip" (a multi-frame 3D/video
    transformer clip; ``protocol.segments`` then counts clips). ``verified``: the GMACs and the
    protocol were checked against the cited sources; unverified rows are shown but never
    enter the headline ratio. Papers' "GFLOPs" are multiply-adds (MACs).
    """

    name: str
    gmacs_per_view: float
    protocol: Protocol
    unit: str
    source: str = field(compare=False)
    verified: bool = field(default=False, compare=False)

    @property
    def views(self) -> int:
        return self.protocol.views(1)

    @property
    def energy_per_view_J(self) -> float:
        return self.gmacs_per_view * 1e9 * E_MAC

    @property
    def energy_J(self) -> float:
        """Dense MACs x E_MAC at the published protocol, joules per video."""
        return self.energy_per_view_J * self.views

    def energy_at(self, protocol: Protocol) -> float | None:
        """Joules per video at another protocol (only for per-segment models)."""
        return self.energy_per_view_J * protocol.views(1) if self.unit == "segment" else None


# Prior art. Only rows with verified=True enter the headline. Sources:
# - CoViAR (Wu et al., "Compressed Video Action Recognition", CVPR 2018): ResNet-152 on
#   I-frames + ResNet-18 on accumulated MVs + ResNet-18 on residuals, each on one 224x224 frame
#   per segment, late fusion. GMACs from He et al., "Deep Residual Learning", CVPR 2016,
#   Table 1 (p. 5): ResNet-152 11.3e9 FLOPs, ResNet-18 1.8e9 (multiply-adds); 11.3 + 2 x 1.8
#   = 14.9 per segment (the 2-channel MV input changes the first conv by < 0.1 GMAC). Protocol
#   25 segments x 10 crops: the authors' reference code, github.com/chaoyuaw/pytorch-coviar
#   test.py (defaults --test_segments 25, --test-crops 10).
# - The other rows carry figures from secondary tables that we could not check against the
#   papers themselves (no access while writing): shown, marked unverified, not in the headline.
BASELINES: tuple[Baseline, ...] = (
    Baseline(
        "CoViAR",
        14.9,
        Protocol(25, 10),
        "segment",
        "Wu et al. CVPR 2018; GMACs: He et al. CVPR 2016 Table 1 p.5; protocol: chaoyuaw/pytorch-coviar test.py",
        verified=True,
    ),
    # Shou et al., CVPR 2019: CoViAR's nets + DMC generator + ResNet-18 on the generated cue;
    # ~14.9 + 1.8 + ~0.8 GMACs per segment; protocol assumed as CoViAR's. UNVERIFIED.
    Baseline("DMC-Net", 17.5, Protocol(25, 10), "segment", "Shou et al. CVPR 2019 (GMACs and protocol unverified)"),
    # Battash et al., CVPRW 2020 (MFCD-Net): ~8.8 GMACs per 16-frame clip, 10 clips. UNVERIFIED.
    Baseline("MFCD-Net", 8.8, Protocol(10, 1), "clip", "Battash et al. CVPRW 2020 (GMACs and protocol unverified)"),
    # Chen & Ho, WACV 2022 (MM-ViT): ~1,800 GMACs per clip, 1 clip x 3 crops. UNVERIFIED.
    Baseline("MM-ViT", 1800.0, Protocol(1, 3), "clip", "Chen & Ho WACV 2022 (GMACs and protocol unverified)"),
    # Carreira & Zisserman, CVPR 2017 (I3D RGB): 108 GMACs per 64-frame clip as tabulated in
    # later work (Feichtenhofer, X3D, CVPR 2020); 10 clips. UNVERIFIED.
    Baseline("I3D", 108.0, Protocol(10, 1), "clip", "Carreira & Zisserman CVPR 2017 via X3D CVPR 2020 (unverified)"),
    # Arnab et al., ICCV 2021 (ViViT-B/16x2 FE): 284 GMACs per clip, 4 x 3 views. UNVERIFIED.
    Baseline("ViViT-B FE", 284.0, Protocol(4, 3), "clip", "Arnab et al. ICCV 2021 (GMACs and protocol unverified)"),
)

# The paper's own figures (Das Biswas et al.): 0.73 J per video and 330x lower cost than
# prior art in the main paper's abstract (arXiv 2503.13724v1, p. 1); ~113x in the appendix
# (Sec. 1, p. 1). Neither names the protocol behind the 0.73 J.
PAPER_ENERGY_J = 0.73


def comparison_rows(
    per_view_J: float, k: int, protocol: Protocol, baselines: Iterable[Baseline] = BASELINES
) -> list[dict[str, Any]]:
    """One row per baseline, csvr costing ``per_view_J`` per inference of ``k`` segments.

    ``csvr_same_J``: csvr per video at the baseline's own protocol (per-segment baselines only);
    ``ratio_same``: their energy / csvr's at that same protocol; ``ratio_mixed``: their energy
    at their protocol / csvr's at ``protocol`` (csvr's own), the comparison papers often make.
    """
    own = per_view_J * protocol.views(k)
    rows = []
    for b in baselines:
        same = per_view_J * b.protocol.views(k) if b.unit == "segment" else None
        rows.append(
            {
                "name": b.name,
                "protocol": b.protocol.describe(b.unit),
                "unit": b.unit,
                "gmacs_per_view": b.gmacs_per_view,
                "views": b.views,
                "energy_per_view_J": b.energy_per_view_J,
                "energy_J": b.energy_J,
                "csvr_same_J": same,
                "ratio_same": b.energy_J / same if same else None,
                "ratio_mixed": b.energy_J / own if own else None,
                "verified": b.verified,
                "source": b.source,
            }
        )
    return rows


def baseline_rows(reference_J: float, baselines: Iterable[Baseline] = BASELINES) -> list[dict[str, Any]]:
    """JSON rows: name, gmacs_per_view, views, energy_J, ratio (= their energy / reference_J)."""
    return [
        {
            "name": b.name,
            "gmacs_per_view": b.gmacs_per_view,
            "views": b.views,
            "protocol": b.protocol.describe(b.unit),
            "energy_J": b.energy_J,
            "ratio": b.energy_J / reference_J if reference_J else None,
            "verified": b.verified,
            "source": b.source,
        }
        for b in baselines
    ]


def report_json(
    report: EnergyReport,
    baselines: Iterable[Baseline] = BASELINES,
    *,
    k: int | None = None,
    protocol: Protocol | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``csvr energy --json`` document (energy per video; paper convention in energy_J).

    With ``k`` and ``protocol`` (csvr's segments per inference and test protocol) it also holds
    ``comparison``: every baseline at its own and at csvr's protocol.
    """
    doc: dict[str, Any] = {
        "layers": report.layer_dicts(),
        "totals": report.totals(),
        "parts": {
            "paper_J": report.by_part(False),
            "all_compute_J": report.by_part(True),
            "snn_J": report.snn_by_part(),
        },
        "firing": {n: asdict(s) for n, s in report.neurons.items()},
        "input_nonzero": dict(report.input_nonzero),
        "baselines": baseline_rows(report.energy_J, baselines),
    }
    if k is not None and protocol is not None:
        doc["protocol"] = {"segments": protocol.segments, "crops": protocol.crops, "K": k, "views": protocol.views(k)}
        doc["comparison"] = comparison_rows(report.energy_per_view_J, k, protocol, baselines)
    if meta:
        doc["meta"] = dict(meta)
    return doc
