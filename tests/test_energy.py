"""Energy counting: hand-computed counts, SpikingJelly's op_counter, attention, baselines."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from spikingjelly.activation_based import functional, layer, neuron
from spikingjelly.activation_based.op_counter import ACCounter, DispatchCounterMode, MACCounter
from torch import nn

from csvr.energy import (
    BASELINES,
    E_AC,
    E_MAC,
    PART_ORDER,
    count_energy,
    part_of,
    report_json,
    simple_energy_J,
)
from csvr.energy_cli import main as energy_main
from csvr.energy_cli import synthetic_batch, views_per_video
from csvr.models import CSVRNet
from csvr.models.lif import ThresholdLIFNode

torch.set_num_threads(1)
aten = torch.ops.aten

# (t, i, j) of the non-zero input values: 5 values at 4 distinct pixels, none on the border
SPIKES = [(0, 1, 1), (0, 2, 3), (1, 2, 3), (1, 4, 4), (0, 3, 1)]


def two_layer_net() -> nn.Sequential:
    """conv (1 -> 2 ch) on analog input -> LIF -> conv (2 -> 3 ch) on spikes, 3x3, padding 1.

    conv1 copies the input (x 4) into channel 0 and leaves channel 1 at zero, so with tau = 2
    (charge to 4/2 = 2 >= threshold 1, hard reset) channel 0 spikes exactly where the input is
    non-zero and channel 1 never spikes.
    """
    conv1 = layer.Conv2d(1, 2, 3, padding=1, bias=False, step_mode="m")
    conv2 = layer.Conv2d(2, 3, 3, padding=1, bias=False, step_mode="m")
    with torch.no_grad():
        conv1.weight.zero_()
        conv1.weight[0, 0, 1, 1] = 4.0
        conv2.weight.normal_()
    return nn.Sequential(conv1, neuron.LIFNode(tau=2.0, step_mode="m"), conv2)


def two_layer_input(batch: int = 1) -> torch.Tensor:
    x = torch.zeros(2, batch, 1, 6, 6)  # [T, B, C, H, W]
    for t, i, j in SPIKES:
        x[t, :, 0, i, j] = 1.0
    return x


def test_hand_computed_two_layer():
    report = count_energy(two_layer_net(), two_layer_input(), num_samples=1)
    first, second = report.layers
    # conv1: T=2, M = 2 ch x 36 px, C = 9, F = 5 non-zeros / 72 inputs; AC because it drives LIF
    assert (first.name, first.kind, first.T, first.M, first.C) == ("0", "AC", 2, 72, 9)
    assert first.F == pytest.approx(5 / 72)
    assert first.ops == pytest.approx(5 * 9 * 2)  # each non-zero reaches 9 taps x 2 channels
    # conv2: spikes at the 5 input non-zeros of channel 0: M = 3 x 36, C = 2 x 9, F = 5 / 144
    assert (second.kind, second.T, second.M, second.C) == ("AC", 2, 108, 18)
    assert second.F == pytest.approx(5 / 144)
    assert second.ops == pytest.approx(5 * 9 * 3)
    assert report.flops_snn == pytest.approx(225) and report.flops_ann == 0
    assert report.energy_J == pytest.approx(225 * 0.9e-12)
    assert report.energy_all_compute_J == pytest.approx(report.energy_J)
    dense = 2 * 72 * 9 + 2 * 108 * 18
    assert report.ratio_vs_ann == pytest.approx(dense * 4.6 / (225 * 0.9))
    lif = report.neurons["1"]
    assert lif.rate == pytest.approx(5 / 144)  # 5 spikes / (2 steps x 2 ch x 36 px)
    assert lif.silent == pytest.approx(1 - 4 / 72)  # 4 distinct neurons ever fired, of 72
    assert report.input_nonzero == {"0": pytest.approx(5 / 72)}


def test_ternary_spikes_count_one_ac_each():
    # the two-layer net with a ternary neuron and conv1 x -4 on the input: channel 0 fires -1
    # exactly where the LIF above fired +1, so every count is the binary net's (one AC per spike)
    net = two_layer_net()
    net[1] = ThresholdLIFNode(None, tau=2.0, learn_threshold=False, spike="ternary")
    with torch.no_grad():
        net[0].weight.neg_()
    report = count_energy(net, two_layer_input(), num_samples=1)
    assert [(l.kind, l.F) for l in report.layers] == [("AC", pytest.approx(5 / 72)), ("AC", pytest.approx(5 / 144))]
    assert report.flops_snn == pytest.approx(225)
    assert report.neurons["1"].rate == pytest.approx(5 / 144)  # |spikes|, not their signed sum
    assert report.neurons["1"].silent == pytest.approx(1 - 4 / 72)


def test_per_video_scaling_and_dense_layers():
    # two identical samples and three views per video: per video = 3 x one sample
    report = count_energy(two_layer_net(), two_layer_input(batch=2), num_samples=2, views=3)
    assert [l.ops for l in report.layers] == pytest.approx([3 * 90, 3 * 135])
    assert report.layers[0].M == 3 * 72
    # the same conv followed by ReLU instead of a spiking neuron is a dense MAC layer
    relu_net = nn.Sequential(two_layer_net()[0], nn.ReLU(), layer.Conv2d(2, 3, 3, padding=1))
    functional.set_step_mode(relu_net, "m")
    rep = count_energy(relu_net, two_layer_input(), num_samples=1)
    assert [l.kind for l in rep.layers] == ["MAC", "MAC"]
    assert [l.ops for l in rep.layers] == [2 * 72 * 9, 2 * 108 * 18]
    assert rep.energy_J == pytest.approx((2 * 72 * 9 + 2 * 108 * 18) * E_MAC)
    assert rep.neurons == {} and rep.input_nonzero == {}


def sj_counts(model: nn.Module, inputs) -> tuple[dict, dict]:
    """SpikingJelly's per-module AC and MAC counts of one forward."""
    ac, mac = ACCounter(), MACCounter()
    functional.reset_net(model)
    with DispatchCounterMode([ac, mac]), torch.no_grad():
        model(inputs)
    return ac.records, mac.records


def test_matches_spikingjelly_on_the_two_layer_net():
    net = two_layer_net().eval()
    ac, mac = sj_counts(net, two_layer_input())
    ours = count_energy(net, two_layer_input(), num_samples=1).layers
    # spikes away from the border: SpikingJelly's exact weight uses equal T * M * C * F
    assert ac["Sequential.2"][aten.convolution.default] == ours[1].ops
    # the 0/1 input looks like spikes to SpikingJelly too (real P-frames do not; see below)
    assert ac["Sequential.0"][aten.convolution.default] == ours[0].ops
    assert mac["Sequential.0"][aten.convolution.default] == 0


@pytest.fixture(scope="module")
def tiny_net_and_batch():
    torch.manual_seed(0)
    net = CSVRNet(5, variant="tiny", img_size=64, num_segments=2).eval()
    for n in net.spiking_layers().values():
        n.threshold.data.fill_(0.1)  # fire often enough that AC counts are not trivially 0
    b, k, t = 2, 2, 3
    moving = (torch.rand(b, k, t, 1, 4, 4) < 0.3).float()  # sparse 16x16 blocks of motion
    moving = moving.repeat_interleave(16, -1).repeat_interleave(16, -2)
    batch = {
        "iframe": torch.randn(b, k, 3, 64, 64),
        "mv": torch.randn(b, k, t, 2, 64, 64) * moving,
        "residual": torch.randn(b, k, t, 3, 64, 64) * (torch.rand(b, k, t, 3, 64, 64) < 0.2),
    }
    return net, batch


def test_csvrnet_matches_spikingjelly_op_counter(tiny_net_and_batch):
    net, batch = tiny_net_and_batch
    report = count_energy(net, batch, views=1)
    ac, mac = sj_counts(net, batch)
    n = 2  # samples in the batch: our rows are per sample, SpikingJelly's per batch
    rows = {l.name: l for l in report.layers}
    conv = aten.convolution.default
    checked_ac = 0
    for name, row in rows.items():
        scope = f"CSVRNet.{name}"
        if row.op == "conv" and row.kind == "MAC":
            assert mac[scope][conv] == pytest.approx(row.ops * n), name
        elif row.op == "conv" and name in report.input_nonzero:  # analog P-frames: SJ says MAC
            assert mac[scope][conv] == pytest.approx(row.dense_macs * n), name
            stream = {"stm_mv": "mv", "stm_residual": "residual"}[part_of_stm(name)]
            assert row.F == pytest.approx(float((batch[stream] != 0).float().mean()))
        elif row.op == "conv":  # spikes in: SJ counts exact weight uses, we use M*C*F (mean
            # field; padding taps and stride-2 coverage make SJ's slightly different)
            assert ac[scope][conv] == pytest.approx(row.ops * n, rel=0.1), name
            assert ac[scope][conv] > 0
            checked_ac += 1
        elif row.op == "linear":
            assert mac[scope][aten.addmm.default] == pytest.approx(row.ops * n), name
    assert checked_ac == 4  # layers 2 and 3 of both STMs
    assert {r.kind for r in rows.values() if r.op != "conv"} == {"MAC"}
    assert set(report.neurons) == set(net.spiking_layers())
    for s in report.neurons.values():
        assert 0 < s.rate < 1 and 0 <= s.silent < 1 and s.T == 3


def part_of_stm(name: str) -> str:
    return name.split(".", 1)[0]


def test_attention_products_counted_from_shapes():
    class Attn(nn.Module):
        def forward(self, x):  # x [B, heads, N, d]
            fused = F.scaled_dot_product_attention(x, x, x)
            manual = torch.softmax(x @ x.transpose(-2, -1), -1) @ x
            return fused + manual

    b, h, n, d = 2, 3, 5, 4
    rows = {l.name: l for l in count_energy(Attn(), torch.randn(b, h, n, d)).layers}
    per_sample = h * n * n * d  # QK^T and AV each, per sample
    assert rows["Attn.qk"].ops == per_sample and rows["Attn.qk"].C == d
    assert rows["Attn.av"].ops == per_sample and rows["Attn.av"].C == n
    # the manual version: two bmm in the module, one row per fan-in (QK^T: d, AV: n)
    assert (rows["Attn:0"].ops, rows["Attn:0"].C) == (per_sample, d)
    assert (rows["Attn:1"].ops, rows["Attn:1"].C) == (per_sample, n)
    assert all(r.op == "attention" and r.kind == "MAC" for r in rows.values())


def test_report_totals_parts_and_memory(tiny_net_and_batch):
    net, batch = tiny_net_and_batch
    report = count_energy(net, batch, views=3, memory=True)
    assert report.energy_J == pytest.approx(report.flops_ann * 4.6e-12 + report.flops_snn * 0.9e-12)
    assert report.energy_all_compute_J > report.energy_J  # linear layers and attention on top
    parts = report.by_part()
    assert tuple(parts) == PART_ORDER
    assert sum(parts.values()) == pytest.approx(report.energy_all_compute_J)
    assert parts["ViT"] > 0 and report.by_part(all_compute=False)["ViT"] == 0  # no convs there
    assert part_of("stm_mv.layers.0.conv") == "STM"
    # SpikingJelly's figure: one forward of 2 samples, scaled to 3 views of one sample
    assert report.energy_with_memory_J == pytest.approx(simple_energy_J(net, batch) * 3 / 2)
    m = report.metrics()
    assert m["energy/total_J"] == report.energy_J and m["energy/ratio_vs_ann"] > 1
    assert m["input_nonzero/stm_mv.layers.0.conv"] == pytest.approx(float((batch["mv"] != 0).float().mean()))


def test_json_document_and_baselines(tiny_net_and_batch):
    net, batch = tiny_net_and_batch
    doc = report_json(count_energy(net, batch))
    assert set(doc) == {"layers", "totals", "parts", "firing", "input_nonzero", "baselines"}
    assert set(doc["layers"][0]) == {"name", "op", "kind", "M", "C", "T", "F", "ops", "energy_J"}
    assert {
        "flops_ann",
        "flops_snn",
        "energy_J",
        "energy_all_compute_J",
        "energy_with_memory_J",
        "views",
        "energy_per_view_J",
    } <= set(doc["totals"])
    rows = {r["name"]: r for r in doc["baselines"]}
    assert {"CoViAR", "DMC-Net", "MFCD-Net", "MM-ViT", "I3D"} <= set(rows)
    assert any(name.startswith("ViViT") for name in rows)
    coviar = rows["CoViAR"]  # (11.3 + 2 x 1.8) GMACs x 25 segments x 10 crops x 4.6 pJ
    assert (coviar["gmacs_per_view"], coviar["views"]) == (14.9, 250)
    assert coviar["energy_J"] == pytest.approx(14.9e9 * 250 * 4.6e-12)
    assert coviar["ratio"] == pytest.approx(coviar["energy_J"] / doc["totals"]["energy_J"])
    assert len(BASELINES) == len(rows) and E_AC < E_MAC and not math.isnan(coviar["ratio"])


class NoDataModule(LightningDataModule):
    """A datamodule whose dataset root is missing: `csvr energy` falls back to synthetic data."""

    def __init__(
        self,
        root: str = "missing",
        num_segments: int = 2,
        test_segments: int = 3,
        test_crops: int = 1,
        num_p: int = 3,
        img_size: int = 64,
    ) -> None:
        super().__init__()
        self.root, self.num_segments, self.test_segments = root, num_segments, test_segments
        self.test_crops, self.num_p, self.img_size = test_crops, num_p, img_size

    @property
    def num_classes(self) -> int:
        return 3

    @property
    def class_names(self) -> list[str]:
        return ["a", "b", "c"]


def test_csvr_energy_main_synthetic(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "seed_everything: 0\n"
        "model:\n  net:\n    class_path: csvr.models.CSVRNet\n    init_args: {variant: tiny}\n"
        f"data:\n  class_path: tests.test_energy.NoDataModule\n"
        f"  init_args: {{root: {tmp_path / 'missing'}}}\n"
    )
    out_json, out_png = tmp_path / "e.json", tmp_path / "e.png"
    rc = energy_main(
        [
            "--config",
            str(config),
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
            "--batches",
            "1",
            "--layers",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "CoViAR" in printed and "stm_mv.layers.1.conv" in printed
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(out_json.read_text())
    convs = [l for l in doc["layers"] if "conv" in l["name"] or "proj" in l["name"]]
    for l in doc["layers"]:  # every row obeys its formula
        f = l["F"] if l["kind"] == "AC" else 1.0
        assert l["ops"] == pytest.approx(l["T"] * l["M"] * l["C"] * f)
    assert doc["totals"]["energy_J"] <= doc["totals"]["energy_all_compute_J"]
    assert doc["totals"]["energy_with_memory_J"] > 0 and len(convs) > 10
    # per video = ceil(3 / K=2) = 2 views of one synthetic video, counted one view at a time:
    # the same as counting the folded [2, K, ...] batch at once, per video
    torch.manual_seed(0)
    net = CSVRNet(3, variant="tiny", img_size=64, num_segments=2)
    batch = synthetic_batch(1, 4, 3, 64, seed=0)
    whole = count_energy(
        net, {k: batch[k].reshape(2, 2, *batch[k].shape[2:]) for k in ("iframe", "mv", "residual")}, num_samples=1
    )
    assert doc["totals"]["energy_J"] == pytest.approx(whole.energy_J, rel=1e-6)
    assert doc["totals"]["flops_snn"] == pytest.approx(whole.flops_snn, rel=1e-6)


def test_synthetic_batch_sparsity_and_views():
    b = synthetic_batch(2, 6, 4, 64, seed=1, moving=0.3)
    assert b["mv"].shape == (2, 6, 4, 2, 64, 64) and b["residual"].shape == (2, 6, 4, 3, 64, 64)
    moving = (b["mv"] != 0).float().mean()
    assert 0.2 < moving < 0.4  # 30 % of 16x16 blocks move
    assert bool((b["mv"][..., :16, :16] == b["mv"][..., :1, :1]).all())  # block-constant
    assert views_per_video(NoDataModule(test_segments=25, num_segments=3), 3) == 9
    assert views_per_video(NoDataModule(test_segments=25, test_crops=3), 3) == 27
