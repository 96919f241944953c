"""Small training callbacks that the CLI installs (energy and firing rates: csvr/callbacks.py)."""

from __future__ import annotations

from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from csvr.checkpoint import save_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that writes a temporary file in the checkpoint's own folder and renames
    it (Lightning's default stages the file in /tmp and moves it, which across filesystems is
    an in-place copy: a full disk then truncates the previous last.ckpt)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        save_atomic(checkpoint, path)


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `last.ckpt` follows every epoch.

    Lightning 2.6 writes `last.ckpt` only in a step where a top-k checkpoint was written, so
    after an epoch that does not improve the monitored metric (or one without validation,
    `check_val_every_n_epoch` > 1) `--ckpt_path last` would resume from an older epoch. This
    refreshes it after every validation and every training epoch (validation runs first, so
    a validation epoch is saved once, best and last together).
    Every checkpoint of the run is written atomically (AtomicCheckpointIO) unless the trainer
    was given another CheckpointIO plugin.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def _refresh_last(self, trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer)


class OptionalLearningRateMonitor(LearningRateMonitor):
    """LearningRateMonitor that stays quiet when the run has no logger (`--trainer.logger false`)."""

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
