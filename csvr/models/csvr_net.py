"""CSVRNet: the whole network (docs/design.md section 2, paper appendix section 3).

    I-frame [B,K,3,H,W]    -> iframe_stem  -> [B*K,C,H/4,W/4] -\
    MV  [B,K,T,2,H,W]      -> stm_mv       -> [B*K,C,H/4,W/4] -+-> encoders -> tokens [B,M,K,16,D]
    Res [B,K,T,3,H,W]      -> stm_residual -> [B*K,C,H/4,W/4] -/
    tokens -> transformer -> decoders (fold + skip from each initial map) -> sum over modalities
           -> rrdb -> global average pool -> mean over K -> head (dropout, linear) -> [B, classes]

Auxiliary heads (``aux_heads=True``, ours): per modality, global average pool of its initial map
(the STM's or the I-stem's output) -> mean over K -> dropout -> linear. In training mode the net
then returns ``(logits, {modality: aux_logits})`` so the LightningModule can add a loss per
modality (``aux_weight``): the motion streams get a gradient of their own instead of the ~2% of
the gradient norm that reaches them through the fused path. In eval mode it returns logits only
(the public contract). ``late_fusion=True`` also adds the per-modality logits to the fused
logits (train and eval), a late fusion beside the paper's fused path.

Variants (``VARIANTS``). From the paper: base = 64 filters, ViT depth 12 / 12 heads; L = 96
filters, depth 16. Ours: the embedding width D = 768 for base and L (ViT-Base; the paper does
not state D), L's 12 heads, the whole ``tiny`` variant (for CPU and tests), the RRDB growth
(32 as in ESRGAN; 8 for tiny), mlp_ratio 4, drop_path 0.1, head dropout 0.5, and the STM/stem
layouts (strides 2, 2, 1; two stride-2 convs for the I-frame stem).

Tried by hand on torch 2.13 CPU (tiny, img_size 64, K=2, T=3; not in the tests):
- ``torch.autocast("cpu", dtype=torch.bfloat16)`` works in eval and in training (backward
  reaches the first STM conv); logits come out bf16, max |diff| to fp32 about 1e-3 on logits of
  magnitude 0.4 (a few spikes flip at the threshold).
- ``torch.compile(net)`` works (no graph break errors, no recompiles across calls): cold start
  about 24 s on an idle core (minutes on a loaded machine), then about 2x faster than eager
  (0.033 s vs 0.07 s); logits differ from eager by about 2e-3 (fused arithmetic flips a few
  spikes at the threshold). Kept out of CI (docs/design.md section 8).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from csvr.data.batch import STREAMS
from csvr.models.decoder import ModalityDecoder
from csvr.models.rrdb import RRDB
from csvr.models.stems import NUM_PATCHES, IFrameStem, LocalEncoder, patch_size
from csvr.models.stm import TEMPORAL, SpikingTemporalModulator
from csvr.models.transformer import UnifiedTransformer

MODALITIES = STREAMS  # the batch contract's stream names (csvr/data/batch.py)
P_FRAME_CHANNELS = {"mv": 2, "residual": 3}

VARIANTS: dict[str, dict[str, int]] = {
    "tiny": dict(channels=16, embed_dim=64, depth=2, heads=2, rrdb_growth=8),
    "base": dict(channels=64, embed_dim=768, depth=12, heads=12, rrdb_growth=32),
    "L": dict(channels=96, embed_dim=768, depth=16, heads=12, rrdb_growth=32),
}


class CSVRNet(nn.Module):
    """Compressed-domain spiking video recogniser.

    ``forward(batch)`` takes a dict (or an object with attributes) holding the enabled
    modalities: iframe [B, K, 3, H, W], mv [B, K, T, 2, H, W], residual [B, K, T, 3, H, W],
    with H = W = img_size and K = num_segments; returns logits [B, num_classes]. The
    variant-dependent arguments default (None) to the variant's value.
    """

    # top-level children -> the part they belong to (energy tables and plots group by it)
    PARTS = {
        "stm_mv": "STM",
        "stm_residual": "STM",
        "iframe_stem": "stems",
        "encoders": "encoders",
        "transformer": "ViT",
        "decoders": "decoders",
        "rrdb": "RRDB",
        "head": "head",
        "aux_heads": "head",
    }
    STMS = {"mv": "stm_mv", "residual": "stm_residual"}  # P-frame stream -> its STM child

    def __init__(
        self,
        num_classes: int,
        variant: str = "base",
        temporal: str = "lif",
        img_size: int = 224,
        num_segments: int = 3,
        modalities: Sequence[str] = MODALITIES,
        channels: Optional[int] = None,
        embed_dim: Optional[int] = None,
        depth: Optional[int] = None,
        heads: Optional[int] = None,
        rrdb_growth: Optional[int] = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        drop_path: float = 0.1,
        head_dropout: float = 0.5,
        tau: float = 2.0,
        learn_threshold: bool = True,
        learn_tau: bool = False,
        surrogate: str = "atan",
        detach_reset: bool = False,
        stm_norm: str = "shared",
        v_threshold: float = 1.0,
        decay_input: bool = True,
        lif_bn_bias: float | list[float] = 0.0,
        lif_spike: str = "binary",
        stm_input_power: float = 1.0,
        aux_heads: bool = False,
        late_fusion: bool = False,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"modalities={list(modalities)} is invalid: give one or more distinct of {list(MODALITIES)}"
            )
        if temporal not in TEMPORAL:
            raise ValueError(f"unknown temporal {temporal!r}; choose one of {list(TEMPORAL)}")
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        given = dict(channels=channels, embed_dim=embed_dim, depth=depth, heads=heads, rrdb_growth=rrdb_growth)
        cfg = {k: v if given[k] is None else given[k] for k, v in VARIANTS[variant].items()}
        c, d = cfg["channels"], cfg["embed_dim"]
        p = patch_size(img_size)
        self.num_classes, self.variant, self.temporal = num_classes, variant, temporal
        self.img_size, self.num_segments = img_size, num_segments
        self.modalities = [m for m in MODALITIES if m in modalities]  # canonical order
        self.config = cfg

        if late_fusion and not aux_heads:
            raise ValueError("CSVRNet: late_fusion=True needs aux_heads=True (it adds their logits)")
        stm = dict(
            channels=c,
            temporal=temporal,
            tau=tau,
            learn_threshold=learn_threshold,
            learn_tau=learn_tau,
            surrogate=surrogate,
            detach_reset=detach_reset,
            norm=stm_norm,
            v_threshold=v_threshold,
            decay_input=decay_input,
            bn_bias=lif_bn_bias,
            spike=lif_spike,
            input_power=stm_input_power,
        )
        self.iframe_stem = IFrameStem(c) if "iframe" in self.modalities else None
        self.stm_mv = SpikingTemporalModulator(2, **stm) if "mv" in self.modalities else None
        self.stm_residual = SpikingTemporalModulator(3, **stm) if "residual" in self.modalities else None
        self.encoders = nn.ModuleDict({m: LocalEncoder(c, d, p) for m in self.modalities})
        self.transformer = UnifiedTransformer(
            d,
            cfg["depth"],
            cfg["heads"],
            NUM_PATCHES,
            num_segments,
            len(self.modalities),
            mlp_ratio,
            dropout,
            drop_path,
        )
        self.decoders = nn.ModuleDict({m: ModalityDecoder(d, c, p) for m in self.modalities})
        self.rrdb = RRDB(c, cfg["rrdb_growth"])
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(c, num_classes))
        self.late_fusion = late_fusion
        self.aux_heads = (
            nn.ModuleDict(
                {m: nn.Sequential(nn.Dropout(head_dropout), nn.Linear(c, num_classes)) for m in self.modalities}
            )
            if aux_heads
            else None
        )

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def stms(self) -> dict[str, nn.Module]:
        """P-frame stream -> its spiking temporal modulator (the enabled streams only)."""
        return {s: getattr(self, a) for s, a in self.STMS.items() if getattr(self, a) is not None}

    def spiking_layers(self) -> dict[str, nn.Module]:
        """Qualified name -> spiking neuron module (empty unless temporal == "lif")."""
        return {n: m for n, m in self.named_modules() if isinstance(m, BaseNode)}

    def _initial_maps(self, batch: Any) -> tuple[dict[str, torch.Tensor], int]:
        """Each modality's map [B*K, C, H/4, W/4], and B."""
        maps, sizes = {}, set()
        for m in self.modalities:
            x = _get(batch, m)
            ndim = 5 if m == "iframe" else 6
            chans = 3 if m == "iframe" else P_FRAME_CHANNELS[m]
            if x.ndim != ndim or x.shape[-3] != chans:
                want = "[B, K, 3, H, W]" if m == "iframe" else f"[B, K, T, {chans}, H, W]"
                raise ValueError(f"CSVRNet: batch[{m!r}] must be {want}, got {tuple(x.shape)}")
            if x.shape[1] != self.num_segments:
                raise ValueError(
                    f"CSVRNet: batch[{m!r}] has K={x.shape[1]} segments but the model was built "
                    f"for num_segments={self.num_segments}; fold extra test views into the batch "
                    "(the LightningModule does) or build the model with that num_segments"
                )
            if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
                raise ValueError(
                    f"CSVRNet: batch[{m!r}] is {tuple(x.shape[-2:])} pixels but the model was "
                    f"built for img_size={self.img_size}"
                )
            sizes.add(x.shape[0])
            if m == "iframe":
                maps[m] = self.iframe_stem(x.flatten(0, 1))
            else:
                stm = self.stm_mv if m == "mv" else self.stm_residual
                maps[m] = stm(x.permute(2, 0, 1, 3, 4, 5).flatten(1, 2))  # [T, B*K, ...]
        if len(sizes) != 1:
            raise ValueError(f"CSVRNet: modalities disagree on the batch size: {sorted(sizes)}")
        return maps, sizes.pop()

    def forward(self, batch: Any) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch with iframe [B,K,3,H,W] / mv [B,K,T,2,H,W] / residual [B,K,T,3,H,W] -> [B, classes]
        (with ``aux_heads`` in training mode: ``(logits, {modality: [B, classes]})``)."""
        functional.reset_net(self)
        maps, b = self._initial_maps(batch)
        k = self.num_segments
        tokens = torch.stack(
            [self.encoders[m](maps[m]).unflatten(0, (b, k)) for m in self.modalities], 1
        )  # [B, M, K, N, D]
        tokens = self.transformer(tokens)
        fused = sum(self.decoders[m](tokens[:, i].flatten(0, 1), maps[m]) for i, m in enumerate(self.modalities))
        feats = self.rrdb(fused).mean((2, 3))  # [B*K, C]
        logits = self.head(feats.view(b, k, -1).mean(1))
        if self.aux_heads is None:
            return logits
        aux = {m: self.aux_heads[m](maps[m].mean((2, 3)).view(b, k, -1).mean(1)) for m in self.modalities}
        if self.late_fusion:
            logits = logits + sum(aux.values())
        return (logits, aux) if self.training else logits


def _get(batch: Any, name: str) -> torch.Tensor:
    value = batch.get(name) if isinstance(batch, Mapping) else getattr(batch, name, None)
    if value is None:
        raise KeyError(
            f"CSVRNet: the batch has no {name!r} tensor but the model uses that modality; "
            f"provide it or build the model without it (modalities=[...])"
        )
    return value
