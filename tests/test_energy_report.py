"""Energy reports a reviewer can check: parts add up, precise-BN, a trained checkpoint's SNN share,
safe checkpoint loading, prior art at the same protocol, and no dataset needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from csvr.energy import (
    BASELINES,
    E_MAC,
    PART_ORDER,
    Protocol,
    calibrate_bn,
    comparison_rows,
    count_energy,
)
from csvr.energy_cli import headline, measure_videos, synthetic_batch
from csvr.energy_cli import main as energy_main
from csvr.lit_module import CSVRLitModule
from csvr.models import CSVRNet
from csvr.summary import summary_main

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
STREAMS = ("iframe", "mv", "residual")


def tiny(seed: int = 0, k: int = 2) -> CSVRNet:
    torch.manual_seed(seed)
    return CSVRNet(3, variant="tiny", img_size=64, num_segments=k)


def streams(batch: dict) -> dict:
    return {s: batch[s] for s in STREAMS}


def test_parts_add_up_to_the_totals():
    net = tiny()
    batch = synthetic_batch(2, 2, 3, 64, seed=0)
    calibrate_bn(net, [streams(batch)])
    r = count_energy(net, streams(batch))
    paper, allc, snn = r.by_part(False), r.by_part(True), r.snn_by_part()
    assert tuple(paper) == tuple(allc) == tuple(snn) == PART_ORDER
    assert sum(paper.values()) == pytest.approx(r.energy_J)
    assert sum(allc.values()) == pytest.approx(r.energy_all_compute_J)
    assert sum(snn.values()) == pytest.approx(r.snn_J) and snn["STM"] == pytest.approx(r.snn_J)
    assert paper["ViT"] == 0 < allc["ViT"]  # the paper convention counts convolutions only
    assert all(paper[p] > 0 for p in ("stems", "STM", "encoders", "decoders", "RRDB"))


def test_calibrate_bn_is_the_exact_mean_over_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    xs = [torch.randn(3, 2, 8, 8) * 3 + 1, torch.randn(5, 2, 8, 8)]
    assert calibrate_bn(net, xs) == 2
    with torch.no_grad():  # independent: per-batch means of the conv output, averaged by batch
        ys = [net[0](x) for x in xs]
    want_mean = torch.stack([y.mean((0, 2, 3)) for y in ys]).mean(0)
    want_var = torch.stack([y.var((0, 2, 3), unbiased=True) for y in ys]).mean(0)
    assert torch.allclose(net[1].running_mean, want_mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, want_var, atol=1e-4)
    assert net[1].momentum == 0.1 and net.training  # restored


def trained_checkpoint(path: Path) -> CSVRNet:
    """A tiny net trained 3 AdamW steps on synthetic clips, BN re-estimated, saved as fit does."""
    net = tiny()
    lit = CSVRLitModule(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch = synthetic_batch(4, 2, 3, 64, seed=1)
    labels = torch.tensor([0, 1, 2, 0])
    net.train()
    for _ in range(3):
        loss = nn.functional.cross_entropy(net(streams(batch)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    calibrate_bn(net, [streams(batch)])
    torch.save({"state_dict": lit.state_dict(), "epoch": 0}, path)
    return net


def tiny_config(tmp_path: Path) -> list[str]:
    """configs/ucf101_3cls.yaml (tiny, 64 px) with its dataset missing, small test protocol."""
    missing = tmp_path / "no-data"
    return [
        "--config",
        str(REPO / "configs/ucf101_3cls.yaml"),
        f"--data.root={missing}/UCF-101",
        f"--data.split_dir={missing}/ucfTrainTestlist",
        "--data.num_segments=2",
        "--data.test_segments=4",
        "--data.num_p=3",
        "--data.test_crops=1",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        # the net `tiny()` builds: the paper's STM (one BN over all steps), no auxiliary heads
        "--model.net.init_args.stm_norm=shared",
        "--model.net.init_args.decay_input=true",
        "--model.net.init_args.aux_heads=false",
    ]


def test_trained_checkpoint_gives_a_nonzero_snn_share(tmp_path, capsys):
    ckpt = tmp_path / "last.ckpt"
    net = trained_checkpoint(ckpt)
    out = tmp_path / "e.json"
    rc = energy_main(
        tiny_config(tmp_path)
        + [
            "--ckpt_path",
            str(ckpt),
            "--json",
            str(out),
            "--batches",
            "1",
            "--no-memory",
            "--data.init_args.num_classes=3",
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["meta"]["weights"] == f"checkpoint {ckpt}"
    assert doc["totals"]["snn_J"] > 0 and doc["parts"]["snn_J"]["STM"] > 0
    assert all(f["rate"] > 0 for f in doc["firing"].values()) and len(doc["firing"]) == 6
    # the CLI counted the checkpoint's weights: the same count by hand on the same batch
    batch = synthetic_batch(1, 4, 3, 64, seed=0)
    assert doc["totals"]["energy_J"] == pytest.approx(measure_videos(net, [batch], memory=False).energy_J)
    assert doc["totals"]["views"] == 2  # ceil(4 / K=2) x 1 crop
    assert doc["totals"]["energy_per_view_J"] == pytest.approx(doc["totals"]["energy_J"] / 2)


class Payload:
    """Pickles to a call that creates a file: what a crafted checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_checkpoint_is_refused(tmp_path, capsys):
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, ckpt)
    rc = energy_main(tiny_config(tmp_path) + ["--ckpt_path", str(ckpt), "--batches", "1"])
    assert rc == 2 and not marker.exists()
    out = capsys.readouterr().out
    assert "refused to load" in out and "evil.ckpt" in out


def test_summary_and_energy_without_any_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a fresh checkout: no ../shared, no data/ under the cwd
    assert (
        summary_main(
            ["--config", str(REPO / "configs/ucf101_3cls.yaml"), f"--trainer.default_root_dir={tmp_path / 'run'}"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "dataset not found" in out and "total" in out
    # configs/ucf101.yaml (data/ucf101 relative to the cwd: absent) as on a fresh clone; tiny
    # net to keep the test small, the head sized for UCF-101's 101 classes
    assert (
        summary_main(
            [
                "--config",
                str(REPO / "configs/ucf101.yaml"),
                "--model.net.init_args.variant=tiny",
                "--data.img_size=64",
                f"--trainer.default_root_dir={tmp_path / 'run'}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "split folder not found" in out and "101 classes" in out
    assert f"{16 * 101 + 101:,}" in out  # head: Linear(16, 101)
    out_json = tmp_path / "e.json"
    assert energy_main(tiny_config(tmp_path) + ["--batches", "1", "--no-memory", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "dataset not found" in out and "SYNTHETIC" in out and "CoViAR" in out
    doc = json.loads(out_json.read_text())
    assert doc["protocol"] == {"segments": 4, "crops": 1, "K": 2, "views": 2}
    assert "untrained" in doc["meta"]["weights"]


def test_prior_art_at_the_same_protocol():
    rows = {r["name"]: r for r in comparison_rows(0.05, 3, Protocol(25, 1))}
    coviar = rows["CoViAR"]  # 14.9 GMACs x 25 segments x 10 crops x 4.6 pJ, by hand
    assert coviar["energy_J"] == pytest.approx(14.9e9 * 250 * 4.6e-12)
    assert coviar["csvr_same_J"] == pytest.approx(0.05 * 9 * 10)  # ceil(25/3) views x 10 crops
    assert coviar["ratio_same"] == pytest.approx(17.135 / 4.5)
    assert coviar["ratio_mixed"] == pytest.approx(17.135 / (0.05 * 9))
    assert coviar["protocol"] == "25 segments x 10 crops" and coviar["verified"]
    for b in BASELINES:  # every row names a source; clip-based rows are never rescaled
        assert b.source and (b.energy_at(Protocol(25, 1)) is None) == (b.unit == "clip")
    assert b.energy_per_view_J == pytest.approx(b.gmacs_per_view * 1e9 * E_MAC)
    # the headline uses verified rows only
    r = count_energy(tiny(), streams(synthetic_batch(1, 2, 3, 64)))
    text = headline(r, "tiny", 2, Protocol(4, 1))
    assert "CoViAR" in text and not any(b.name in text for b in BASELINES if not b.verified)
