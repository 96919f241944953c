"""Lightning callback: firing rates and energy of one inference, logged while training.

Keys (W&B draws one panel per prefix): ``firing_rate/<layer>``, ``silent_fraction/<layer>``,
``input_nonzero/<layer>`` (P-frame input of the first STM convs), ``energy/total_J``,
``energy/snn_J``, ``energy/ann_J``, ``energy/ratio_vs_ann``, ``energy/all_compute_J``.
Energies are per inference (one sample of K segments; ``csvr energy`` gives per-video totals).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from csvr.energy import EnergyReport, count_energy


class FiringRateEnergyCallback(Callback):
    """Measure ``pl_module.net`` every ``every_n_steps`` training steps (on that step's batch)
    and at the end of each validation epoch (on the first ``num_batches`` validation batches).

    Each measurement is an extra forward pass in eval mode without gradients, so it sees what
    inference sees and leaves training untouched; counting hooks exist only during it. Values
    are logged with ``sync_dist=True`` (mean over DDP ranks).
    """

    def __init__(self, every_n_steps: int = 50, num_batches: int = 1) -> None:
        if every_n_steps < 1 or num_batches < 1:
            raise ValueError("every_n_steps and num_batches must be >= 1")
        self.every_n_steps = every_n_steps
        self.num_batches = num_batches
        self._last_step = -1
        self._val_batches: list[dict[str, Any]] = []
        self.last_metrics: dict[str, float] = {}  # the most recent measurement (for inspection)

    def measure(self, net: torch.nn.Module, batches: list[dict[str, Any]]) -> EnergyReport:
        """Count ``net`` on contract batches; test-time views are folded into the batch."""
        from csvr.data.batch import fold_views

        return count_energy(net, [fold_views(b, int(net.num_segments))[0] for b in batches])

    def _measure_and_log(self, pl_module: LightningModule, batches: list, **kw: Any) -> None:
        # A batch whose videos were all skipped is not measured, but under DDP every rank must
        # log the same keys: such a rank repeats its previous measurement.
        batches = [b for b in batches if b["label"].numel()]
        if batches:
            self.last_metrics = self.measure(pl_module.net, batches).metrics()
        for key, value in self.last_metrics.items():
            pl_module.log(key, float(value), sync_dist=True, batch_size=1, **kw)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        self._measure_and_log(pl_module, [batch], on_step=True, on_epoch=False)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_batches = []

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking and dataloader_idx == 0 and batch_idx < self.num_batches:
            self._val_batches.append(batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._measure_and_log(pl_module, self._val_batches, on_step=False, on_epoch=True)
        self._val_batches = []
