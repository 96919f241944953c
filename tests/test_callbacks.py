"""FiringRateEnergyCallback in a real (tiny, CPU) Lightning fit, logged through CSVLogger."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from csvr.callbacks import FiringRateEnergyCallback
from csvr.energy import count_energy
from csvr.lit_module import CSVRLitModule, fold_views
from csvr.models import CSVRNet

torch.set_num_threads(1)
K, T, SIZE = 2, 3, 64


class RandomVideos(Dataset):
    """Contract-shaped samples: sparse block motion, sparse residuals; S = views * K segments."""

    def __init__(self, n: int, views: int = 1) -> None:
        g = torch.Generator().manual_seed(n * 10 + views)
        s = views * K
        moving = (torch.rand(n, s, T, 1, 4, 4, generator=g) < 0.3).float()
        moving = moving.repeat_interleave(16, -1).repeat_interleave(16, -2)
        self.items = [
            {
                "iframe": torch.randn(s, 3, SIZE, SIZE, generator=g),
                "mv": torch.randn(s, T, 2, SIZE, SIZE, generator=g) * moving[i],
                "residual": torch.randn(s, T, 3, SIZE, SIZE, generator=g)
                * (torch.rand(s, T, 3, SIZE, SIZE, generator=g) < 0.2),
                "label": torch.tensor(i % 3),
                "video_id": f"v{i}",
            }
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class DirectCount(Callback):
    """Counts the training batch directly at the first step (runs after the callback under test)."""

    def __init__(self) -> None:
        self.report = None
        self.batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.batch = batch
            self.report = count_energy(pl_module.net, batch)


def logged_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(f"{logger.log_dir}/metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_callback_logs_rates_and_energy(tmp_path):
    torch.manual_seed(0)
    net = CSVRNet(3, variant="tiny", img_size=SIZE, num_segments=K)
    for neuron in net.spiking_layers().values():
        neuron.threshold.data.fill_(0.1)  # an untrained net barely fires at threshold 1
    module = CSVRLitModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=1e-3))
    callback, direct = FiringRateEnergyCallback(every_n_steps=1, num_batches=1), DirectCount()
    logger = CSVLogger(tmp_path)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=logger,
        callbacks=[callback, direct],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    val = RandomVideos(2, views=2)  # S = 2 views x K segments, folded by the callback
    trainer.fit(module, DataLoader(RandomVideos(4), batch_size=2), DataLoader(val, batch_size=2))

    rows = logged_rows(logger)
    train = [r for r in rows if r.get("energy/total_J") and r["epoch"] == "0" and r["step"] == "0"]
    assert len(train) == 1, "the measurement at step 0 was not logged"
    logged = {k: float(v) for k, v in train[0].items() if v and "/" in k}
    layers = list(net.spiking_layers())
    assert len(layers) == 6
    for name in layers:
        assert 0 < logged[f"firing_rate/{name}"] < 1
        assert 0 <= logged[f"silent_fraction/{name}"] < 1
    # the analog P-frame input: its non-zero fraction is that of the batch itself
    mv_nonzero = float((direct.batch["mv"] != 0).float().mean())
    assert logged["input_nonzero/stm_mv.layers.0.conv"] == pytest.approx(mv_nonzero, rel=1e-5)
    assert 0 < logged["input_nonzero/stm_residual.layers.0.conv"] < 0.3
    e = logged
    assert e["energy/total_J"] == pytest.approx(e["energy/snn_J"] + e["energy/ann_J"], rel=1e-5)
    assert 0 < e["energy/snn_J"] < e["energy/ann_J"] < e["energy/all_compute_J"]
    assert e["energy/ratio_vs_ann"] > 1
    # equal to a direct count on the same batch with the same weights
    for key, value in direct.report.metrics().items():
        assert logged[key] == pytest.approx(value, rel=1e-5), key

    # validation: measured once per epoch on the first validation batch, views folded in
    val_rows = [r for r in rows if r.get("energy/total_J") and r.get("val/acc")]
    assert len(val_rows) == 1
    batch = {k: torch.stack([val[i][k] for i in range(2)]) for k in ("iframe", "mv", "residual")}
    expected = count_energy(net, fold_views(batch, K)[0]).metrics()
    got = {k: float(v) for k, v in val_rows[0].items() if v and k in expected}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key
