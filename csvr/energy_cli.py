"""``csvr energy``: operations and energy per view and per video of a config's model.

    csvr energy --config configs/ucf101.yaml [--ckpt_path last.ckpt] [--calibrate-bn 8]
                [--json out.json] [--plot energy.png] [--batches 2] [--variant-compare]
                [--model.x=... --data.x=... overrides]

Runs the model on a few test batches of the config's datamodule (real prepared clips; synthetic
batches with the contract shapes when the dataset is missing), each video with the test
protocol's views (ceil(test_segments / K) x test_crops inferences of K segments), and prints
per-layer counts, the breakdown per part, totals per view and per video, and the comparison
with prior art at the same protocol. Conventions: ``csvr.energy``.

Weights: ``--ckpt_path`` (loaded with ``weights_only=True``: a checkpoint holding pickled code
is refused). Without one the weights are untrained; ``--calibrate-bn N`` then re-estimates the
BatchNorm statistics on N real training batches first (precise-BN), so the LIF layers see
inputs scaled like real data and their firing rates are measured, not zero by construction.
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

from csvr.energy import (
    PAPER_ENERGY_J,
    PART_ORDER,
    EnergyReport,
    Protocol,
    calibrate_bn,
    comparison_rows,
    count_energy,
    report_json,
)


def views_per_video(datamodule: Any, k: int) -> int:
    """Inferences per video at test time: ceil(test_segments / K) x test_crops."""
    segments = int(getattr(datamodule, "test_segments", k) or k)
    return math.ceil(segments / k) * int(getattr(datamodule, "test_crops", 1) or 1)


def synthetic_batch(
    videos: int,
    segments: int,
    num_p: int,
    img_size: int,
    seed: int = 0,
    moving: float = 0.7,
    residual: float = 0.7,
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
        on = (torch.rand(n, s, t, 1, nb, nb, generator=g) < p) * torch.randn(n, s, t, ch, nb, nb, generator=g) * scale
        return on.repeat_interleave(16, -1).repeat_interleave(16, -2)[..., :h, :h]

    residual_on = blocks(residual, 1, 1.0) != 0
    return {
        "iframe": torch.randn(n, s, 3, h, h, generator=g),
        "mv": blocks(moving, 2, 2.0) / MV_SCALE,
        "residual": torch.randn(n, s, t, 3, h, h, generator=g) * 6.0 * residual_on / RESIDUAL_SCALE,
        "label": torch.zeros(n, dtype=torch.long),
        "video_id": [f"synthetic{i}" for i in range(n)],
    }


def protocol_of(datamodule: Any, k: int) -> Protocol:
    """The datamodule's test protocol (test_segments x test_crops)."""
    segments = int(getattr(datamodule, "test_segments", k) or k)
    return Protocol(segments, int(getattr(datamodule, "test_crops", 1) or 1))


def has_data(datamodule: Any) -> bool:
    root = getattr(datamodule, "root", None)
    return not getattr(datamodule, "missing_data", False) and root is not None and Path(root).exists()


def energy_batches(datamodule: Any, net: torch.nn.Module, num_batches: int) -> tuple[list, str]:
    """``num_batches`` test batches of videos spread evenly over the test list (so every class
    is seen), or synthetic ones when the dataset is missing."""
    root = getattr(datamodule, "root", None)
    if has_data(datamodule):
        datamodule.prepare_data()  # as Lightning's test would (e.g. re-encodes into the cache)
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
        per_batch = loader.batch_size or 1
        n = len(loader.dataset)
        want = min(n, num_batches * per_batch)  # videos spread evenly over the (class-sorted) list
        idx = sorted({round(i * (n - 1) / max(1, want - 1)) for i in range(want)})
        sub = torch.utils.data.DataLoader(
            torch.utils.data.Subset(loader.dataset, idx), batch_size=per_batch, collate_fn=loader.collate_fn
        )
        batches = [b for b in sub if b["label"].numel()]
        if batches:
            ids = [v for b in batches for v in b["video_id"]]
            return batches, (
                f"{len(ids)} test video(s) of {root} (prepared copy "
                f"{getattr(datamodule, 'data_root', '?')}): {', '.join(map(str, ids))}"
            )
    k = int(net.num_segments)
    segments = views_per_video(datamodule, k) * k
    num_p = int(getattr(datamodule, "num_p", 11) or 11)
    batches = [synthetic_batch(1, segments, num_p, int(net.img_size), seed=i) for i in range(num_batches)]
    return batches, (
        f"SYNTHETIC batches: dataset {root!s} not found; {num_batches} random "
        f"video(s) with codec-like sparsity ({segments} segments, T={num_p})"
    )


def train_batches(datamodule: Any, num_batches: int) -> tuple[list, str]:
    """``num_batches`` training batches (K segments, training augmentation) for ``calibrate_bn``."""
    if not has_data(datamodule):
        raise FileNotFoundError(
            f"--calibrate-bn needs real training clips but the dataset "
            f"{getattr(datamodule, 'root', None)} is missing: point --data.root/--data.split_dir "
            "at a dataset, or drop --calibrate-bn"
        )
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append({k: v for k, v in batch.items() if k in ("iframe", "mv", "residual")})
        if len(batches) == num_batches:
            break
    n = sum(int(b[next(iter(b))].shape[0]) for b in batches)
    return batches, f"{len(batches)} training batch(es), {n} clips, of {datamodule.root}"


def measure_videos(net: torch.nn.Module, batches: list[dict], memory: bool = True) -> EnergyReport:
    """Energy per video: every view of every video, one inference (K segments) at a time.

    The report's ``views`` is the number of inferences per video (so ``energy_per_view_J`` is
    one inference).
    """
    from csvr.data.batch import STREAMS as streams
    from csvr.data.batch import fold_views

    k, chunks, videos = int(net.num_segments), [], 0
    for batch in batches:
        folded, _ = fold_views(batch, k)
        videos += int(batch["label"].shape[0])
        n = next(folded[s] for s in streams if s in folded).shape[0]
        chunks += [{s: folded[s][i : i + 1] for s in streams if s in folded} for i in range(n)]
    report = count_energy(net, chunks, num_samples=videos, memory=memory)
    report.views = len(chunks) // videos
    return report


def variant_net(net: torch.nn.Module, variant: str) -> torch.nn.Module:
    """``net`` if it is that variant, else a fresh (untrained) CSVRNet of the same setup."""
    from csvr.models import CSVRNet

    if getattr(net, "variant", None) == variant:
        return net
    return CSVRNet(
        net.num_classes,
        variant=variant,
        temporal=net.temporal,
        img_size=net.img_size,
        num_segments=net.num_segments,
        modalities=net.modalities,
    )


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a Lightning checkpoint's ``state_dict`` safely (tensors and plain data only).

    Raises ValueError with a message naming the file when it is not a csvr checkpoint or holds
    pickled objects (which could run code on load).
    """
    import pickle

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"refused to load {path}: it holds pickled Python objects besides tensors, which "
            f"could run code when loaded (csvr loads weights only). Only load checkpoints you "
            f"trust; csvr's own (`csvr fit`) load fine. Detail: {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'): give the "
            "last.ckpt or best-*.ckpt that `csvr fit` wrote"
        )
    module.load_state_dict(ckpt["state_dict"])


def _fmt(x: float) -> str:
    return f"{x:.4g}" if isinstance(x, float) and not float(x).is_integer() else f"{int(x):,}"


def layer_table(report: EnergyReport, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("layer", "op", "kind", "M", "C", "T", "F", "ops", "energy (J)"):
        table.add_column(col, justify="left" if col in ("layer", "op", "kind") else "right")
    for l in report.layers:
        style = None if l.op == "conv" else "dim"  # not in the paper's convention
        table.add_row(
            l.name,
            l.op,
            l.kind,
            _fmt(l.M),
            str(l.C),
            str(l.T),
            f"{l.F:.3f}",
            f"{l.ops:.3e}",
            f"{l.energy_J:.3e}",
            style=style,
        )
    return table


def totals_table(reports: dict[str, EnergyReport], protocol: Protocol, k: int) -> Table:
    table = Table(title=f"Totals (test protocol {protocol} = {protocol.views(k)} views of K={k})")
    table.add_column("")
    for name in reports:
        table.add_column(f"{name} / view", justify="right")
        table.add_column(f"{name} / video", justify="right")

    def both(fn):
        return [c for r in reports.values() for c in (fn(r) / r.views, fn(r))]

    rows = [
        ("MACs, convolutions (FLOPs_ANN)", lambda r: r.flops_ann, "{:.4e}"),
        ("ACs, convolutions (FLOPs_SNN)", lambda r: r.flops_snn, "{:.4e}"),
        ("energy, paper convention (J)", lambda r: r.energy_J, "{:.4g}"),
        ("  of which SNN (ACs) (J)", lambda r: r.snn_J, "{:.3g}"),
        ("energy, all compute (J)", lambda r: r.energy_all_compute_J, "{:.4g}"),
        ("same convs as dense MACs (J)", lambda r: r.dense_ann_J, "{:.4g}"),
    ]
    for label, fn, fmt in rows:
        table.add_row(label, *(fmt.format(v) for v in both(fn)))
    table.add_row(
        "energy, SpikingJelly simple + memory (J)",
        *(
            "-" if r.energy_with_memory_J is None else f"{v:.4g}"
            for r in reports.values()
            for v in ((r.energy_with_memory_J or 0) / r.views, r.energy_with_memory_J or 0)
        ),
    )
    table.add_row(
        "ratio vs the same net as dense ANN", *(f"{r.ratio_vs_ann:.2f}x" for r in reports.values() for _ in (0, 1))
    )
    return table


def parts_table(reports: dict[str, EnergyReport]) -> Table:
    table = Table(title="Energy per part, J per video (share of the total)")
    table.add_column("part")
    for name in reports:
        table.add_column(f"{name}: paper conv.", justify="right")
        table.add_column(f"{name}: all compute", justify="right")
    per = {n: (r.by_part(False), r.by_part(True)) for n, r in reports.items()}
    for part in PART_ORDER:
        cells = []
        for n, r in reports.items():
            paper, allc = per[n]
            cells.append(f"{paper[part]:.3g} ({100 * paper[part] / r.energy_J:.1f}%)")
            cells.append(f"{allc[part]:.3g} ({100 * allc[part] / r.energy_all_compute_J:.1f}%)")
        table.add_row(part, *cells)
    table.add_row(
        "total", *(f"{v:.4g}" for r in reports.values() for v in (r.energy_J, r.energy_all_compute_J)), style="bold"
    )
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


def baseline_table(report: EnergyReport, name: str, k: int, protocol: Protocol) -> Table:
    table = Table(
        title=f"Prior art vs csvr {name} (dense MACs x 4.6 pJ; sources in "
        "csvr/energy.py; * = unverified, not in the headline)"
    )
    for col in (
        "model",
        "protocol",
        "GMACs/view",
        "J/view",
        "J/video",
        "csvr J/video, same protocol",
        "ratio, same protocol",
        f"ratio vs csvr at {protocol}",
    ):
        table.add_column(col, justify="left" if col in ("model", "protocol") else "right")
    table.add_row(
        f"csvr {name}",
        f"{protocol} (K={k})",
        "-",
        f"{report.energy_per_view_J:.3g}",
        f"{report.energy_J:.3g}",
        "-",
        "-",
        "-",
        style="bold",
    )
    for r in comparison_rows(report.energy_per_view_J, k, protocol):
        table.add_row(
            r["name"] + ("" if r["verified"] else " *"),
            r["protocol"],
            f"{r['gmacs_per_view']:g}",
            f"{r['energy_per_view_J']:.3g}",
            f"{r['energy_J']:.3g}",
            "-" if r["csvr_same_J"] is None else f"{r['csvr_same_J']:.3g}",
            "-" if r["ratio_same"] is None else f"{r['ratio_same']:.1f}x",
            f"{r['ratio_mixed']:.1f}x",
        )
    return table


def headline(report: EnergyReport, name: str, k: int, protocol: Protocol) -> str:
    """One sentence: the verified same-protocol ratio, and the mixed-protocol one beside it."""
    rows = [r for r in comparison_rows(report.energy_per_view_J, k, protocol) if r["verified"] and r["ratio_same"]]
    text = (
        f"csvr {name}: {report.energy_per_view_J:.3g} J per view, {report.energy_J:.3g} J per "
        f"video at {protocol} (paper convention; the paper reports {PAPER_ENERGY_J} J/video)."
    )
    for r in rows:
        text += (
            f" {r['name']} at its own protocol ({r['protocol']}) costs {r['energy_J']:.3g} J, "
            f"csvr at that same protocol {r['csvr_same_J']:.3g} J: {r['ratio_same']:.1f}x "
            f"(against csvr at {protocol}, mixed protocols: {r['ratio_mixed']:.1f}x)."
        )
    return text


def plot(reports: dict[str, EnergyReport], path: Path, k: int, protocol: Protocol) -> None:
    """Share of each part (paper convention and all compute), and prior art vs csvr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
    cols = [(n, conv) for n in reports for conv in (False, True)]
    colors = plt.get_cmap("tab10").colors
    for j, (n, allc) in enumerate(cols):
        r = reports[n]
        parts, total = r.by_part(allc), (r.energy_all_compute_J if allc else r.energy_J)
        bottom = 0.0
        for i, p in enumerate(PART_ORDER):
            share = 100 * parts[p] / total
            ax1.bar(j, share, bottom=bottom, color=colors[i], label=p if j == 0 else None)
            if share >= 3:
                ax1.text(j, bottom + share / 2, f"{p} {share:.0f}%", ha="center", va="center", fontsize=7)
            elif p == "STM":  # the share the paper calls negligible: always written out
                ax1.annotate(
                    f"STM {share:.2f}%",
                    (j + 0.4, bottom + share / 2),
                    xytext=(j + 0.42, bottom + 6),
                    fontsize=7,
                    color="tab:orange",
                    arrowprops={"arrowstyle": "-", "color": "tab:orange"},
                )
            bottom += share
        ax1.text(j, 101, f"{total:.3g} J", ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(range(len(cols)), [f"{n}\n{'all compute' if a else 'paper conv.'}" for n, a in cols], fontsize=8)
    ax1.set_ylim(0, 110)
    ax1.set_ylabel("% of energy per video")
    ax1.set_title(f"csvr: where the energy goes ({protocol}, K={k})")
    ax1.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    rows = comparison_rows(next(iter(reports.values())).energy_per_view_J, k, protocol)
    names = [r["name"] + ("" if r["verified"] else " *") for r in rows]
    values = [r["energy_J"] for r in rows]
    hatches = ["" if r["verified"] else "//" for r in rows]
    for n, r in reports.items():
        names.append(f"csvr {n}\n{protocol}")
        values.append(r.energy_J)
        hatches.append("")
        same = [c for c in comparison_rows(r.energy_per_view_J, k, protocol) if c["verified"]]
        for c in same:
            names.append(f"csvr {n}\n{c['protocol']}")
            values.append(c["csvr_same_J"])
            hatches.append("")
    bars = ax2.bar(range(len(names)), values, color=["tab:gray"] * len(rows) + ["tab:blue"] * (len(names) - len(rows)))
    for b, h in zip(bars, hatches):
        b.set_hatch(h)
    ax2.axhline(PAPER_ENERGY_J, color="tab:red", ls="--", lw=1)
    ax2.text(
        len(names) - 0.5,
        PAPER_ENERGY_J,
        f"paper {PAPER_ENERGY_J} J",
        color="tab:red",
        ha="right",
        va="bottom",
        fontsize=7,
    )
    ax2.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
    ax2.set_yscale("log")
    ax2.set_ylabel("J per video (compute, 45 nm; paper conv.)")
    ax2.set_title("Prior art (own protocol; * unverified) vs csvr")
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
    p = argparse.ArgumentParser(
        prog="csvr energy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--config", action="append", required=True, help="fit config YAML (repeatable)")
    p.add_argument("--ckpt_path", help="checkpoint whose weights to count (default: untrained)")
    p.add_argument(
        "--calibrate-bn",
        type=int,
        default=0,
        metavar="N",
        help="re-estimate BatchNorm statistics on N real training batches first "
        "(precise-BN; for untrained weights; needs the dataset)",
    )
    p.add_argument("--json", type=Path, help="write layers, parts, totals and prior art as JSON")
    p.add_argument("--plot", type=Path, help="write the breakdown and prior-art chart (PNG)")
    p.add_argument("--batches", type=int, default=2, help="test batches to run (default 2)")
    p.add_argument(
        "--no-memory", action="store_true", help="skip SpikingJelly's memory-inclusive estimate (one forward less)"
    )
    p.add_argument("--layers", action="store_true", help="print the per-layer table")
    p.add_argument(
        "--variant-compare",
        action="store_true",
        help="also count the base and L variants (untrained unless the config's)",
    )
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    from csvr.summary import load_objects

    console = Console() if sys.stdout.isatty() else Console(width=160)  # no wrapping in logs
    if args.ckpt_path and not Path(args.ckpt_path).is_file():
        console.print(
            f"[red]checkpoint {args.ckpt_path} not found: give the path of a .ckpt "
            "file (e.g. outputs/<run>/checkpoints/last.ckpt)[/red]"
        )
        return 2
    module, datamodule, note = load_objects(args.config, overrides)
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    seed = torch.initial_seed()
    weights = f"untrained (seed {seed})"
    if args.ckpt_path:
        try:
            load_weights(module, Path(args.ckpt_path))
        except ValueError as err:
            console.print(f"[red]{err}[/red]")
            return 2
        weights = f"checkpoint {args.ckpt_path}"
    net = module.net
    k = int(net.num_segments)
    protocol = protocol_of(datamodule, k)
    nets = {str(getattr(net, "variant", type(net).__name__)): net}
    if args.variant_compare:
        for v in ("base", "L"):
            nets.setdefault(v, variant_net(net, v))
    bn_note = "BatchNorm statistics as in the weights"
    if args.calibrate_bn:
        try:
            calib, calib_src = train_batches(datamodule, args.calibrate_bn)
        except FileNotFoundError as err:
            console.print(f"[red]{err}[/red]")
            return 2
        for n in nets.values():
            calibrate_bn(n, calib)
        bn_note = f"BatchNorm statistics re-estimated (precise-BN) on {calib_src}"
    batches, source = energy_batches(datamodule, net, args.batches)
    console.print(f"[bold]weights:[/bold] {weights}; {bn_note}")
    console.print(
        f"[bold]data:[/bold] {source}; protocol {protocol} = {views_per_video(datamodule, k)} views of K={k} per video"
    )
    reports = {n: measure_videos(m, batches, memory=not args.no_memory) for n, m in nets.items()}
    name, report = next(iter(reports.items()))
    if args.layers:
        console.print(
            layer_table(report, f"{name}: operations per video (dim rows: not in the paper's convolutions-only figure)")
        )
    console.print(firing_table(report))
    console.print(parts_table(reports))
    console.print(totals_table(reports, protocol, k))
    console.print(baseline_table(report, name, k, protocol))
    console.print(headline(report, name, k, protocol))
    meta = {
        "weights": weights,
        "batchnorm": bn_note,
        "data": source,
        "config": args.config,
        "overrides": overrides,
        "variant": name,
        "img_size": int(net.img_size),
    }
    if args.json:
        doc = report_json(report, k=k, protocol=protocol, meta=meta)
        if len(reports) > 1:
            doc["variants"] = {n: report_json(r, k=k, protocol=protocol) for n, r in reports.items() if n != name}
        write_json(doc, args.json)
        console.print(f"wrote {args.json}")
    if args.plot:
        plot(reports, args.plot, k, protocol)
        console.print(f"wrote {args.plot}")
    return 0
