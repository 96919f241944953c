"""DataLoader throughput on the synthetic motion set: clips/s with 0 and 2 workers (K = 3).

`run() -> dict` returns {name: {"value", "unit", "aim"}}; both loaders are timed in this one
process on the same clips, so their ratio is meaningful on a busy machine too.
Run: `python bench/bench_loader.py` (first run generates a small synthetic set in the cache).
"""

from __future__ import annotations

import json
import time

import torch
from torch.utils.data import DataLoader

from csvr.data.datasets import WORKER_CONTEXT, CompressedVideoDataset, collate
from csvr.data.synthetic import SyntheticMotionConfig, generate_synthetic, read_synthetic_splits

CONFIG = SyntheticMotionConfig(num_classes=6, videos_per_class=8, frames=36, width=128, height=96, seed=0)


def _clips_per_s(ds: CompressedVideoDataset, workers: int, batch_size: int = 8) -> float:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, multiprocessing_context=WORKER_CONTEXT if workers else None)
    n = sum(len(batch["label"]) for batch in loader)  # warm-up epoch: starts (spawns) the workers
    start = time.perf_counter()
    n = sum(len(batch["label"]) for batch in loader)
    return n / (time.perf_counter() - start)


def run() -> dict:
    torch.set_num_threads(1)
    root = generate_synthetic(config=CONFIG, progress=False)
    items = [it for s in ("train", "val", "test") for it in read_synthetic_splits(root)[s]]
    ds = CompressedVideoDataset(root, items, num_segments=3, num_p=4, accumulate=True, img_size=64, train=True)
    c0 = _clips_per_s(ds, 0)
    c2 = _clips_per_s(ds, 2)
    aim = "higher is better (synthetic 128x96, K=3, T=4, img 64, training augmentation)"
    return {
        "loader_clips_per_s_workers0": {"value": round(c0, 2), "unit": "clips/s", "aim": aim},
        "loader_clips_per_s_workers2": {"value": round(c2, 2), "unit": "clips/s", "aim": aim},
        "loader_speedup_workers2_vs_0": {"value": round(c2 / c0, 2), "unit": "x",
                                         "aim": "about 2 with 2 free cores; near 1 on a saturated machine"},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
