"""Data side of csvr: split lists, TSN sampling, transforms, datasets and DataModules.

Names are imported lazily: `csvr.data.codec` or a worker process (spawned: the one rule is
`csvr.workers.START_METHOD`) must not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Batch": "batch",
    "CompressedVideoDataModule": "datamodules",
    "HMDB51DataModule": "datamodules",
    "NoiseOptions": "datamodules",
    "PrepareOptions": "datamodules",
    "SyntheticMotionDataModule": "datamodules",
    "UCF101DataModule": "datamodules",
    "ensure_prepared": "prepare",
    "prepare_tree": "prepare",
    "prepared_path": "prepare",
    "WORKER_CONTEXT": "datasets",
    "CompressedVideoDataset": "datasets",
    "check_files": "datasets",
    "collate": "datasets",
    "sample_test": "sampling",
    "sample_train": "sampling",
    "read_hmdb51_split": "splits",
    "read_ucf101_split": "splits",
    "ucf101_classes": "splits",
    "SyntheticMotionConfig": "synthetic",
    "generate_synthetic": "synthetic",
    "synthetic_root": "synthetic",
    "IFRAME_MEAN": "transforms",
    "IFRAME_STD": "transforms",
    "MV_SCALE": "transforms",
    "RESIDUAL_SCALE": "transforms",
    "SpuriousMotion": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'csvr.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"csvr.data.{_EXPORTS[name]}"), name)
