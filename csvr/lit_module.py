"""The LightningModule: wires a `CSVRNet` (or any nn.Module over the batch contract) to
training, metrics, multi-view testing and prediction (lightning-hydra-template's split)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from csvr.data.batch import fold_views
from csvr.models.lif import FIRING_MEANS, pooled_firing_shortfall, regularisable_layers


def default_optimizer(params) -> torch.optim.Optimizer:
    """AdamW, lr 1e-3, weight decay 0.05 (ours: the paper publishes no optimizer)."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)


def param_groups(net: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on weights only: biases, norm scales, learnt LIF thresholds (all 1-D) and
    the positional embeddings get none (a decayed threshold would drift to 0 and fire on noise)."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or ".pos_" in f".{name}" else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CSVRLitModule(LightningModule):
    """Classification of compressed videos.

    Args:
        net: the network; `net(batch) -> logits [B, num_classes]`, with `net.num_classes`
            and `net.num_segments` (K).
        optimizer: a callable `params -> Optimizer` (LightningCLI's OptimizerCallable).
        label_smoothing: cross-entropy label smoothing.
        warmup_epochs: linear warm-up length, in (fractional) epochs.
        min_lr_ratio: the cosine schedule ends at `lr * min_lr_ratio`.
        class_names: names of the classes (linked from the DataModule; kept in checkpoints
            so `csvr predict` prints names).
        aux_weight: weight of the per-modality auxiliary losses, used when the net returns
            `(logits, {modality: aux_logits})` in training (CSVRNet with `aux_heads: true`):
            loss = CE(logits) + aux_weight * mean over modalities of CE(aux_logits).
        firing_reg: weight of an activity regulariser on the net's spiking neurons in training
            (0: off): loss += firing_reg * the mean over spiking layers (see `firing_mean`) of
            `firing_shortfall(spikes, firing_target)`, which pushes (clip, neuron) pairs that
            fire on fewer than `firing_target` of the T steps towards firing.
        firing_target: the rate per (clip, neuron) below which the regulariser acts.
        firing_mean: "layers" (each spiking layer's mean shortfall counts alike) or "neurons"
            (every (clip, neuron) pair of every layer counts alike, as the silent fraction over
            all the STM's neurons does: layer 1 holds 4x the neurons of layers 2 and 3).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = default_optimizer,
        label_smoothing: float = 0.1,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        class_names: list[str] | None = None,
        aux_weight: float = 0.0,
        firing_reg: float = 0.0,
        firing_target: float = 0.25,
        firing_mean: str = "layers",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net
        self.optimizer_fn = optimizer
        self.class_names = list(class_names) if class_names else None
        n = int(net.num_classes)
        self.num_classes = n
        self.metrics = nn.ModuleDict()
        for stage in ("train", "val", "test"):
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(n, average="micro")
            self.metrics[f"{stage}_top5"] = MulticlassAccuracy(n, top_k=min(5, n), average="micro")
            self.metrics[f"{stage}_loss"] = MeanMetric()
        self.val_acc_best = MaxMetric()
        self._best_so_far: float | None = None  # val/acc_best of the epochs before a resume
        self.test_confusion = MulticlassConfusionMatrix(n)
        self._warned_skipped: set[str] = set()
        self._pending_rng: dict[str, Any] | None = None  # RNG states of a checkpoint being resumed
        self._spikes: list[torch.Tensor] | None = None  # spiking layers' outputs, while a training step collects them
        if firing_mean not in FIRING_MEANS:
            raise ValueError(f"model.firing_mean must be one of {FIRING_MEANS}, got {firing_mean!r}")
        if firing_reg:
            for m in regularisable_layers(net):
                m.register_forward_hook(self._capture_spikes)

    def _capture_spikes(self, module: nn.Module, inputs: Any, spikes: torch.Tensor) -> None:
        """Forward hook on each spiking layer: keep its spikes [T, B, ...] for the training step's loss."""
        if self._spikes is not None:
            self._spikes.append(spikes)

    def setup(self, stage: str) -> None:
        """Check the data options the model depends on, before any batch is read."""
        dm = getattr(self.trainer, "datamodule", None)
        checks = (
            ("num_p", lambda v: v is None or v >= 1, "must be >= 1 (P-frames per segment, T)"),
            ("num_segments", lambda v: v >= 1, "must be >= 1 (segments per video, K)"),
            ("test_crops", lambda v: v in (1, 3), "must be 1 or 3"),
        )
        for name, ok, what in checks:
            value = getattr(dm, name, None) if name == "num_p" else getattr(dm, name, 1)
            if isinstance(value, (int, type(None))) and not ok(value):
                raise ValueError(f"data.{name} {what}, got {value}")

    # ----------------------------------------------------------------- forward
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits `[B, num_classes]`; test-time views are folded in and averaged."""
        return self._logits_and_aux(batch)[0]

    def _logits_and_aux(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits `[B, num_classes]` and the net's auxiliary per-modality logits (training only)."""
        for s in ("mv", "residual"):
            if s in batch and batch[s].ndim == 6 and batch[s].shape[2] == 0:
                raise ValueError(f"batch[{s!r}] has T=0 P-frames per segment: data.num_p must be >= 1")
        folded, v = fold_views(batch, int(self.net.num_segments))
        out = self.net(folded)  # CSVRNet.forward resets its own neurons first
        logits, aux = out if isinstance(out, tuple) else (out, {})
        if v > 1:
            logits = logits.reshape(-1, v, logits.shape[-1]).mean(dim=1)
        return logits, aux

    def _report_skipped(self, batch: dict[str, Any], stage: str) -> None:
        skipped = batch.get("skipped") or []
        for vid in skipped:
            if vid not in self._warned_skipped:
                self._warned_skipped.add(vid)
                warnings.warn(
                    f"skipped unreadable video {vid!r} ({stage}); see the warning above for why", stacklevel=2
                )
        if skipped:
            self.log(f"{stage}/skipped_videos", float(len(skipped)), reduce_fx="sum", on_step=False, on_epoch=True)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        self._report_skipped(batch, stage)
        label = batch["label"]
        if label.numel() == 0:
            return None  # every video of this batch was unreadable (skip_corrupt)
        regularise = stage == "train" and bool(self.hparams.get("firing_reg"))
        self._spikes = [] if regularise else None
        try:
            logits, aux = self._logits_and_aux(batch)
        finally:
            spikes, self._spikes = self._spikes, None
        loss = F.cross_entropy(logits, label, label_smoothing=self.hparams.label_smoothing)
        if regularise:
            hp = self.hparams
            shortfall = pooled_firing_shortfall(spikes, hp.firing_target, hp.get("firing_mean", "layers"))
            self.log(
                f"{stage}/firing_shortfall", shortfall.detach(), on_step=False, on_epoch=True, batch_size=label.shape[0]
            )
            loss = loss + self.hparams.firing_reg * shortfall
        if aux and self.hparams.aux_weight:
            aux_loss = sum(
                F.cross_entropy(a, label, label_smoothing=self.hparams.label_smoothing) for a in aux.values()
            ) / len(aux)
            self.log(f"{stage}/aux_loss", aux_loss.detach(), on_step=False, on_epoch=True, batch_size=label.shape[0])
            loss = loss + self.hparams.aux_weight * aux_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage} loss is {loss.item()} at step {self.global_step} "
                f"(videos {batch.get('video_id', [])[:4]}...): lower the learning rate "
                "(model.optimizer.init_args.lr), enable gradient clipping "
                "(trainer.gradient_clip_val) or check the input data."
            )
        n = label.shape[0]
        self.metrics[f"{stage}_loss"](loss.detach(), n)
        self.metrics[f"{stage}_acc"](logits.detach(), label)
        self.metrics[f"{stage}_top5"](logits.detach(), label)
        on_step = stage == "train"
        sync = stage != "train"
        self.log(
            f"{stage}/loss", self.metrics[f"{stage}_loss"], on_step=on_step, on_epoch=True, prog_bar=True, batch_size=n
        )
        self.log(
            f"{stage}/acc",
            self.metrics[f"{stage}_acc"],
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=sync,
        )
        self.log(
            f"{stage}/acc_top5",
            self.metrics[f"{stage}_top5"],
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=sync,
        )
        if stage == "test":
            self.test_confusion(logits.detach(), label)
        return loss

    # ----------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # the sanity check must not count as a best
        if self._best_so_far is not None:  # resumed: the best of the epochs already run
            self.val_acc_best(torch.tensor(self._best_so_far))
        self._restore_rng()  # after the sanity check, before the first resumed batch is drawn

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.metrics["val_acc"].compute())
        best = self.val_acc_best.compute()
        self._best_so_far = float(best)
        self.log("val/acc_best", best, sync_dist=True, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def test_confusion_matrix(self) -> torch.Tensor:
        """`[C, C]` counts (rows: true class, columns: predicted) of the last test epoch."""
        return self.test_confusion.compute()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Per video: id, predicted class name and the probabilities of every class."""
        probs = self(batch).softmax(dim=-1)
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        out = []
        for vid, p in zip(batch["video_id"], probs.cpu()):
            i = int(p.argmax())
            out.append({"video_id": vid, "label": names[i], "index": i, "probs": dict(zip(names, p.tolist()))})
        return out

    # ----------------------------------------------------------------- optim
    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optimizer_fn(param_groups(self.net))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(round(self.hparams.warmup_epochs * total / epochs))
        warmup = min(warmup, total // 2)
        min_ratio = self.hparams.min_lr_ratio
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup, min_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = self.class_names
        # Lightning restores model/optimizer/scheduler/loops; keep the RNGs too so a resumed
        # run draws the same shuffles and augmentations as an uninterrupted one.
        checkpoint["rng_states"] = _rng_states()
        if self._best_so_far is not None:
            checkpoint["val_acc_best"] = self._best_so_far

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("class_names"):
            self.class_names = list(checkpoint["class_names"])
        if "rng_states" in checkpoint:
            self._pending_rng = checkpoint["rng_states"]
        if "val_acc_best" in checkpoint:
            self._best_so_far = float(checkpoint["val_acc_best"])

    def _restore_rng(self) -> None:
        if self._pending_rng is not None:
            _set_rng_states(self._pending_rng)
            self._pending_rng = None
            _restart_train_iterator(self.trainer)


def _restart_train_iterator(trainer) -> None:
    """On resume, Lightning builds and iterates the train loader (to estimate the stepping
    batches) before it restores the epoch counter, so loader workers have already prefetched
    the order of epoch 0. Set the restored epoch on the sampler and start the iterator again.
    This reads Lightning internals (tested with the pinned version): if another version lacks
    them, warn (the run resumes, but its shuffles may differ from an uninterrupted run's)."""
    loop = trainer.fit_loop
    try:
        from lightning.fabric.utilities.data import _set_sampler_epoch

        loader, fetcher = loop._combined_loader, loop._data_fetcher
        if loader is None or fetcher is None:
            return
        for dl in loader.flattened:
            _set_sampler_epoch(dl, loop.epoch_progress.current.processed)
    except (ImportError, AttributeError) as e:
        warnings.warn(
            f"resume: this Lightning version differs from the one csvr was tested with ({e}); the "
            "resumed epoch's data order may differ from an uninterrupted run's",
            stacklevel=2,
        )
        return
    iter(fetcher)


def _rng_states() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and ints (loadable with weights_only)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
