"""Loader and fit throughput (wall time: DataLoader workers are other processes).

(d) DataLoader clips/s with 0, 1 and 2 workers (spawned, as the DataModules do): K=3, T=4,
    64 px, accumulate, training augmentation, batch 8, on full-length UCF-101 clips of ../shared
    re-encoded at 170x128 (synthetic clips without ../shared). Aim >= 15 clips/s with 1 worker.
(e) training steps/s of configs/ucf101_3cls.yaml (its network, batch and DataModule, built
    by the CLI: prepared slice, 1 worker; AdamW) against the same model fed from batches already in
    memory; the ratio says how data-bound fit is. Aim <= 1.3. Skipped without ../shared.
    Torch runs on the cores the workers leave (cpus - num_workers): on 2 cores with 2 torch
    threads and 1 busy worker, each step was 6x slower (thread oversubscription, not data).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from csvr.data.datasets import WORKER_CONTEXT, CompressedVideoDataset, collate

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ucf101_3cls.yaml"


def _clips_per_s(ds: CompressedVideoDataset, workers: int, batches: int, batch_size: int = 8) -> float:
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=batch_size * (batches + 1))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        multiprocessing_context=WORKER_CONTEXT if workers else None,
    )
    it = iter(loader)
    next(it)  # worker start-up (spawn, imports, kernel cache load) is not throughput
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)["label"])
    rate = n / (time.perf_counter() - start)
    del it
    return rate


def loader_rates() -> dict:
    import bench_data

    clips = bench_data.source_clips(24, 300)
    with tempfile.TemporaryDirectory() as tmp:
        paths = bench_data.encode_all(clips, Path(tmp), 170, 128)
        items = [(str(p.relative_to(tmp)), k % 3) for k, p in enumerate(paths)]
        ds = CompressedVideoDataset(tmp, items, num_segments=3, num_p=4, accumulate=True, img_size=64, train=True)
        out = {}
        for workers in (0, 1, 2):
            rate = _clips_per_s(ds, workers, batches=6)
            aim = ">= 15" if workers == 1 else "info"
            out[f"d_loader_clips_per_s_workers{workers}"] = {
                "value": round(rate, 2),
                "unit": "clips/s (wall)",
                "aim": aim,
            }
    return out


def fit_ratio(steps: int = 4) -> dict:
    from csvr.lightning_cli import load_config_objects

    try:  # the model and data exactly as `csvr fit --config configs/ucf101_3cls.yaml` builds them
        module, dm = load_config_objects([CONFIG])
    except (FileNotFoundError, ValueError) as err:
        return {"e_fit_real_vs_memory": {"value": "skipped", "unit": "", "aim": f"needs the UCF slice: {err}"}}
    dm.prepare_data()
    dm.setup("fit")
    # The loader's workers need cores too: with torch on every core, the training threads stall
    # at each parallel region while a worker holds a core (measured: 6x slower steps on 2 cores).
    threads = max(1, (os.cpu_count() or 1) - int(dm.hparams.get("num_workers", 0)))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = module.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(batch: dict) -> None:
        out = net(batch)  # logits, or (logits, per-modality logits) with aux heads
        logits, aux = out if isinstance(out, tuple) else (out, {})
        loss = sum(torch.nn.functional.cross_entropy(x, batch["label"]) for x in (logits, *aux.values()))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def from_memory(batches: list[dict]) -> float:
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        return time.perf_counter() - start

    it = iter(dm.train_dataloader())
    kept = [next(it) for _ in range(steps)]  # the same kind of batches, held in memory
    step(kept[0])  # warm-up: allocator, first backward
    memory = from_memory(kept)
    start = time.perf_counter()
    for _ in range(steps):
        step(next(it))  # worker already running: steady state
    real = time.perf_counter() - start
    del it
    memory = min(memory, from_memory(kept))  # before and after: the machine may be shared
    torch.set_num_threads(old_threads)
    return {
        "e_fit_real_vs_memory": {"value": round(real / memory, 3), "unit": "wall ratio", "aim": "<= 1.3"},
        "e_fit_steps_per_s_real": {
            "value": round(steps / real, 3),
            "unit": "steps/s",
            "aim": f"info (batch 16, torch threads {threads})",
        },
        "e_fit_steps_per_s_memory": {"value": round(steps / memory, 3), "unit": "steps/s", "aim": "info"},
    }


def run() -> dict:
    return {**loader_rates(), **fit_ratio()}


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for name, row in run().items():
        print(f"{name:40s} {row['value']:>10} {row['unit']:16s} aim {row['aim']}")
