"""``csvr energy``: per-layer operations and energy per video for a config's model.

    csvr energy --config configs/ucf101.yaml [--ckpt_path best.ckpt] [--json out.json]
                [--plot energy.png] [--batches 2] [--variant-compare] [--model.x=... overrides]

Runs the model on a few test batches of the config's datamodule (synthetic batches with the
contract shapes when its dataset root is missing), each video with the test protocol's views
(ceil(test_segments / K) x test_crops inferences of K segments), and prints per-layer counts,
totals in joules per video and the comparison with prior compressed-video models. Conventions:
``csvr.energy``. Without a checkpoint the weights, and so the firing rates, are untrained.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from csvr.energy import BASELINES, EnergyReport, count_energy, report_json

PART_ORDER = ("STM", "stems", "encoders", "transformer", "decoder", "RRDB", "head")


def views_per_video(datamodule: Any, k: int) -> int:
    """Inferences per video at test time: ceil(test_segments / K) x test_crops."""
    segments = int(getattr(datamodule, "test_segments", k) or k)
    return math.ceil(segments / k) * int(getattr(datamodule, "test_crops", 1) or 1)


def synthetic_batch(
    videos: int, segments: int, num_p: int, img_size: int, seed: int = 0,
    moving: float = 0.7, residual: float = 0.7,
) -> dict:
    """Contract-shaped batch [videos, segments, ...] with codec-like sparsity.

    I-frames: N(0, 1) (normalised). Motion vectors: constant over 16x16 blocks, ``moving`` of the
    blocks with N(0, 2 px) vectors, the rest exactly zero. Residuals: N(0, 6 px) in ``residual``
    of the blocks, zero elsewhere. Scaled like the data side (MV_SCALE, RESIDUAL_SCALE). The
    default fractions are the medians measured on five UCF-101 clips re-encoded by
    ``encode_video`` (accumulated MVs: 0.31-0.94 of values non-zero, median 0.73; residuals
    0.56-0.91, median 0.71).
    """
    from csvr.data.transforms import MV_SCALE, RESIDUAL_SCALE

    g = torch.Generator().manual_seed(seed)
    n, s, t, h = videos, segments, num_p, img_size
    nb = -(-h // 16)

    def blocks(p: float, ch: int, scale: float) -> torch.Tensor:
        on = (torch.rand(n, s, t, 1, nb, nb, generator=g) < p) * torch.randn(
            n, s, t, ch, nb, nb, generator=g) * scale
        return on.repeat_interleave(16, -1).repeat_interleave(16, -2)[..., :h, :h]

    residual_on = blocks(residual, 1, 1.0) != 0
    return {
        "iframe": torch.randn(n, s, 3, h, h, generator=g),
        "mv": blocks(moving, 2, 2.0) / MV_SCALE,
        "residual": torch.randn(n, s, t, 3, h, h, generator=g) * 6.0 * residual_on / RESIDUAL_SCALE,
        "label": torch.zeros(n, dtype=torch.long),
        "video_id": [f"synthetic{i}" for i in range(n)],
    }


def energy_batches(datamodule: Any, net: torch.nn.Module, num_batches: int) -> tuple[list, str]:
    """Up to ``num_batches`` test batches, or synthetic ones when the dataset root is missing."""
    root = getattr(datamodule, "root", None)
    if root is not None and Path(root).exists():
        datamodule.prepare_data()  # as Lightning's test would (e.g. re-encodes into the cache)
        datamodule.setup("test")
        batches = []
        for batch in datamodule.test_dataloader():
            if batch["label"].numel():
                batches.append(batch)
            if len(batches) == num_batches:
                break
        if batches:
            return batches, f"{len(batches)} test batch(es) from {root}"
    k = int(net.num_segments)
    segments = views_per_video(datamodule, k) * k
    num_p = int(getattr(datamodule, "num_p", 11) or 11)
    batches = [synthetic_batch(1, segments, num_p, int(net.img_size), seed=i)
               for i in range(num_batches)]
    return batches, (f"SYNTHETIC batches: dataset root {root!s} not found; {num_batches} random "
                     f"video(s) with codec-like sparsity ({segments} segments, T={num_p})")


def measure_videos(net: torch.nn.Module, batches: list[dict], memory: bool = True) -> EnergyReport:
    """Energy per video: every view of every video, one inference (K segments) at a time."""
    from csvr.lit_module import fold_views

    k, chunks, videos = int(net.num_segments), [], 0
    streams = ("iframe", "mv", "residual")
    for batch in batches:
        folded, _ = fold_views(batch, k)
        videos += int(batch["label"].shape[0])
        n = next(folded[s] for s in streams if s in folded).shape[0]
        chunks += [{s: folded[s][i:i + 1] for s in streams if s in folded} for i in range(n)]
    return count_energy(net, chunks, num_samples=videos, memory=memory)


def variant_net(net: torch.nn.Module, variant: str) -> torch.nn.Module:
    """``net`` if it is that variant, else a fresh (untrained) CSVRNet of the same setup."""
    from csvr.models import CSVRNet

    if getattr(net, "variant", None) == variant:
        return net
    return CSVRNet(net.num_classes, variant=variant, temporal=net.temporal,
                   img_size=net.img_size, num_segments=net.num_segments, modalities=net.modalities)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if isinstance(x, float) and not float(x).is_integer() else f"{int(x):,}"


def layer_table(report: EnergyReport, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("layer", "op", "kind", "M", "C", "T", "F", "ops", "energy (J)"):
        table.add_column(col, justify="left" if col in ("layer", "op", "kind") else "right")
    for l in report.layers:
        style = None if l.op == "conv" else "dim"  # not in the paper's convention
        table.add_row(l.name, l.op, l.kind, _fmt(l.M), str(l.C), str(l.T), f"{l.F:.3f}",
                      f"{l.ops:.3e}", f"{l.energy_J:.3e}", style=style)
    return table


def totals_table(reports: dict[str, EnergyReport]) -> Table:
    table = Table(title="Totals per video")
    table.add_column("")
    for name in reports:
        table.add_column(name, justify="right")
    rows = [
        ("MACs, convolutions (FLOPs_ANN)", lambda r: f"{r.flops_ann:.4e}"),
        ("ACs, convolutions (FLOPs_SNN)", lambda r: f"{r.flops_snn:.4e}"),
        ("energy, paper convention (J)", lambda r: f"{r.energy_J:.4g}"),
        ("  of which SNN / ANN (J)", lambda r: f"{r.snn_J:.3g} / {r.ann_J:.3g}"),
        ("energy, all compute (J)", lambda r: f"{r.energy_all_compute_J:.4g}"),
        ("energy, SpikingJelly simple + memory (J)",
         lambda r: "-" if r.energy_with_memory_J is None else f"{r.energy_with_memory_J:.4g}"),
        ("same convs as dense MACs (J)", lambda r: f"{r.dense_ann_J:.4g}"),
        ("ratio vs ANN", lambda r: f"{r.ratio_vs_ann:.2f}x"),
    ]
    for label, fn in rows:
        table.add_row(label, *(fn(r) for r in reports.values()))
    return table


def firing_table(report: EnergyReport) -> Table:
    table = Table(title="Spiking layers (measured)")
    for col in ("layer", "firing rate", "silent fraction"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for name, s in report.neurons.items():
        table.add_row(name, f"{s.rate:.4f}", f"{s.silent:.4f}")
    for name, f in report.input_nonzero.items():
        table.add_row(f"{name} (input non-zero)", f"{f:.4f}", "")
    return table


def baseline_table(reports: dict[str, EnergyReport]) -> Table:
    table = Table(title="Prior art (dense MACs x 4.6 pJ; sources in csvr/energy.py)")
    for col in ("model", "GMACs/view", "views", "energy (J/video)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name in reports:
        table.add_column(f"x {name}", justify="right")
    for b in BASELINES:
        table.add_row(b.name, f"{b.gmacs_per_view:g}", str(b.views), f"{b.energy_J:.4g}",
                      *(f"{b.energy_J / r.energy_J:.1f}" for r in reports.values()))
    return table


def plot(reports: dict[str, EnergyReport], path: Path) -> None:
    """Energy per part (all compute) per variant, and prior art vs csvr, log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(reports)
    for i, (name, r) in enumerate(reports.items()):
        parts = r.by_part()
        ax1.bar([j + i * width for j in range(len(PART_ORDER))],
                [max(parts.get(p, 0.0), 1e-12) for p in PART_ORDER], width, label=f"csvr {name}")
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(PART_ORDER))], PART_ORDER)
    ax1.tick_params(axis="x", rotation=30)
    ax1.set_yscale("log")
    ax1.set_ylabel("J per video (all compute)")
    ax1.set_title("csvr energy per part")
    ax1.legend()
    names = [b.name for b in BASELINES] + [f"csvr {n}" for n in reports]
    values = [b.energy_J for b in BASELINES] + [r.energy_J for r in reports.values()]
    colors = ["tab:gray"] * len(BASELINES) + ["tab:blue", "tab:orange", "tab:green"][:len(reports)]
    ax2.bar(names, values, color=colors)
    ax2.set_yscale("log")
    ax2.set_ylabel("J per video (compute, 45 nm)")
    ax2.set_title("Prior art vs csvr (paper convention)")
    ax2.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_json(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="csvr energy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config", action="append", required=True, help="fit config YAML (repeatable)")
    p.add_argument("--ckpt_path", help="checkpoint whose weights to count (default: untrained)")
    p.add_argument("--json", type=Path, help="write layers, totals and baselines as JSON")
    p.add_argument("--plot", type=Path,
                   help="write a bar chart (PNG): energy per part and prior art (with "
                        "--variant-compare: base and L side by side)")
    p.add_argument("--batches", type=int, default=2, help="test batches to run (default 2)")
    p.add_argument("--variant-compare", action="store_true",
                   help="also count the base and L variants (untrained unless the config's)")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    from csvr.cli import load_config_objects

    console = Console() if sys.stdout.isatty() else Console(width=150)  # no wrapping in logs
    module, datamodule = load_config_objects(args.config, overrides)
    if args.ckpt_path:
        ckpt = Path(args.ckpt_path)
        if not ckpt.is_file():
            console.print(f"[red]checkpoint {ckpt} not found: give the path of a .ckpt file[/red]")
            return 2
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    net = module.net
    batches, source = energy_batches(datamodule, net, args.batches)
    console.print(f"[bold]data:[/bold] {source}; views per video: "
                  f"{views_per_video(datamodule, int(net.num_segments))}")
    report = measure_videos(net, batches)
    name = str(getattr(net, "variant", type(net).__name__))
    reports = {name: report}
    if args.variant_compare:
        for v in ("base", "L"):
            if v != name:
                reports[v] = measure_videos(variant_net(net, v), batches)
    console.print(layer_table(report, f"{name}: operations per video (dim rows: not in the "
                                      "paper's convolutions-only figure)"))
    console.print(firing_table(report))
    console.print(totals_table(reports))
    console.print(baseline_table(reports))
    if args.json:
        write_json(report_json(report), args.json)
        console.print(f"wrote {args.json}")
    if args.plot:
        plot(reports, args.plot)
        console.print(f"wrote {args.plot}")
    return 0
