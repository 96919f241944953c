"""Precise BatchNorm: recompute BN running statistics on training clips before validation and
before the last checkpoint is written (Wu & Johnson, "Rethinking Batch in BatchNorm", 2021).

During training BN normalises with batch statistics while the running averages lag behind
the weights (momentum 0.1, a few hundred steps); eval-mode activations then differ from the
training-mode ones, which for LIF neurons means different firing. This callback keeps the last
``num_batches`` training batches and, with the weights frozen, recomputes every BN's running
mean and variance as a plain average over them.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from csvr.models.bn import recompute_bn_stats, sync_bn_stats


class PreciseBNCallback(Callback):
    """Recompute ``pl_module.net``'s BN statistics on the last ``num_batches`` training batches
    at the start of every (non-sanity) validation and at the end of the last training epoch
    (callbacks run before ``ModelCheckpoint``, so ``last.ckpt`` holds the recomputed stats).

    Test-time views are folded by the LightningModule; training batches have one view, so they
    go to the net as they are. Under DDP each rank recomputes on its own batches and the
    statistics are then averaged over the ranks (`sync_bn_stats`).
    """

    def __init__(self, num_batches: int = 8) -> None:
        if num_batches < 1:
            raise ValueError("PreciseBNCallback: num_batches must be >= 1")
        self.num_batches = num_batches
        self._batches: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if batch["label"].numel():
            self._batches = [*self._batches[-(self.num_batches - 1) :], batch] if self.num_batches > 1 else [batch]

    def _recompute(self, pl_module: LightningModule) -> None:
        recompute_bn_stats(pl_module.net, self._batches)
        sync_bn_stats(pl_module.net)  # DDP: every rank validates and saves the same statistics

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._recompute(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            self._recompute(pl_module)
