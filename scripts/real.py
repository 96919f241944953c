"""Real video: fit and test on the three-class UCF-101 slice on CPU (`make real`), or the
ablation table (`make real-ablation`): I-frame only, LIF, ConvGRU, conv and a plain-CNN
reference (late fusion of one 2D CNN per modality), 3 seeds each.

    python scripts/real.py                          # row "lif", seed 0: fit, test, energy, report
    python scripts/real.py --ablation               # every row x seeds 0 1 2 -> outputs/real/ablation.{json,md}

The table gives mean +- sd of test top-1 over the seeds, per-class accuracy (mean over seeds),
energy per video and fit wall time with the machine's 1-minute load average at the start and
end of each fit ("idle" only if both were below 0.5 x the CPU count).

Each run is a plain `csvr fit` then `csvr test` of its last checkpoint in a subprocess (so
every row is reproducible by hand with the printed command), then `csvr energy` on the tested
checkpoint (the newest last*.ckpt: a rerun into the same directory makes Lightning write
last-v1.ckpt beside the old last.ckpt). `last`, not `best`: UCF-101 has no validation split,
so `val` is the test list and choosing the checkpoint on it would select on the test set. Preparing the slice happens once, in the first fit, into $CSVR_CACHE.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/ucf101_3cls.yaml"
ROWS = {
    "iframe_only": ["--config", "configs/experiment/iframe_only.yaml"],
    "lif": [],
    "convgru": ["--config", "configs/experiment/temporal_convgru.yaml"],
    "conv": ["--config", "configs/experiment/temporal_conv.yaml"],
    "cnn_baseline": ["--config", "configs/experiment/baseline_cnn.yaml"],
}
ABLATION_SEEDS = [0, 1, 2]
console = Console()
SHARED_SLICE = REPO.parent / "shared" / "data" / "ucf101_3cls"


def slice_dir(given: Path | None) -> Path:
    """The slice folder (UCF-101/ + ucfTrainTestlist/): --data, else $UCF3_ROOT, else the
    ../shared slice; exits with how to build one when none is there."""
    env = os.environ.get("UCF3_ROOT")
    path = given or (Path(env) if env else SHARED_SLICE)
    if not (path / "UCF-101").is_dir() or not (path / "ucfTrainTestlist").is_dir():
        sys.exit(
            f"make real: no three-class UCF-101 slice at {path} (needs UCF-101/ and ucfTrainTestlist/).\n"
            "Build one from your UCF-101 download (README, 'Getting the data'):\n"
            "  csvr make-slice --ucf-root UCF-101 --lists ucfTrainTestlist --out data/ucf101_3cls\n"
            "then: UCF3_ROOT=data/ucf101_3cls make real"
        )
    return path.resolve()


def csvr(*args: str) -> None:
    cmd = [sys.executable, "-m", "csvr", *args]
    console.print("[bold]$ csvr " + " ".join(args))
    subprocess.run(cmd, cwd=REPO, check=True)


def last_checkpoint(root: Path) -> Path:
    """The `last` checkpoint of the fit that just ran in `root`: the newest last*.ckpt, as
    Lightning's `--ckpt_path last` picks it (a rerun into the same directory writes
    last-v1.ckpt, last-v2.ckpt, ... beside the old last.ckpt)."""
    found = sorted((root / "checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{root}/checkpoints holds no last*.ckpt: did the fit finish?")
    return found[-1]


def run_row(row: str, seed: int, out: Path, extra: list[str]) -> dict:
    """fit + test + energy of one (row, seed); returns its measured numbers."""
    root = out / f"{row}_seed{seed}"
    cfg = [
        "--config",
        CONFIG,
        *ROWS[row],
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.name=ucf101-3cls-{row}-seed{seed}",
        *extra,
    ]
    load_start, t0 = os.getloadavg()[0], time.perf_counter()
    csvr("fit", *cfg)
    fit_s, load_end = time.perf_counter() - t0, os.getloadavg()[0]
    ckpt = last_checkpoint(root)
    csvr("test", *cfg, f"--ckpt_path={ckpt}")
    metrics = json.loads((root / "test_metrics.json").read_text())
    csvr(
        "energy",
        *cfg,
        "--ckpt_path",
        str(ckpt),
        "--json",
        str(root / "energy.json"),
        "--batches",
        "2",
    )
    energy = json.loads((root / "energy.json").read_text())["totals"]
    result = {
        "row": row,
        "seed": seed,
        "test_acc": metrics["metrics"]["test/acc"],
        "per_class_acc": metrics["per_class_acc"],
        "confusion_matrix": metrics["confusion_matrix"],
        "class_names": metrics["class_names"],
        "energy_J": energy["energy_J"],
        "energy_all_compute_J": energy["energy_all_compute_J"],
        "fit_seconds": fit_s,
        "load_avg_1min": [load_start, load_end],
        "idle": max(load_start, load_end) < 0.5 * (os.cpu_count() or 1),
    }
    (root / "result.json").write_text(json.dumps(result, indent=2))
    return result


def report_one(r: dict) -> None:
    table = Table(title=f"UCF-101 3-class slice, {r['row']} (seed {r['seed']}): test top-1 {r['test_acc']:.3f}")
    table.add_column("true \\ predicted")
    for name in r["class_names"]:
        table.add_column(name, justify="right")
    table.add_column("accuracy", justify="right")
    for name, row in zip(r["class_names"], r["confusion_matrix"]):
        table.add_row(name, *map(str, row), f"{r['per_class_acc'][name]:.3f}")
    console.print(table)
    console.print(
        f"energy per video: {r['energy_J']:.3e} J (paper convention), "
        f"{r['energy_all_compute_J']:.3e} J (all compute); fit {r['fit_seconds']:.0f} s "
        f"({'idle' if r.get('idle') else 'loaded'}, load {r.get('load_avg_1min')})"
    )


def summarise(out: Path) -> str:
    """The table over every finished run under `out` (runs may come from several invocations)."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    names = next((r["class_names"] for r in results), [])
    lines = [
        "| row | test top-1 (mean ± sd) | seeds | "
        + " | ".join(names)
        + " | energy / video (paper conv.) | all compute | fit time | machine |",
        "|---|---|---|" + "---|" * len(names) + "---|---|---|---|",
    ]
    for row in ROWS:
        rs = [r for r in results if r["row"] == row]
        if not rs:
            continue
        accs = [r["test_acc"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        per_class = [statistics.mean(r["per_class_acc"][n] for r in rs) for n in names]
        loads = [x for r in rs for x in r.get("load_avg_1min", [])]
        machine = ("idle" if all(r.get("idle") for r in rs) else "loaded") + (
            f" (load {min(loads):.1f}-{max(loads):.1f})" if loads else ""
        )
        lines.append(
            f"| {row} | {statistics.mean(accs):.3f} ± {sd:.3f} | {len(rs)} | "
            + " | ".join(f"{a:.3f}" for a in per_class)
            + f" | {statistics.mean(r['energy_J'] for r in rs):.3e} J | "
            f"{statistics.mean(r['energy_all_compute_J'] for r in rs):.3e} J | "
            f"{statistics.mean(r['fit_seconds'] for r in rs):.0f} s | {machine} |"
        )
    md = "\n".join(lines)
    (out / "ablation.json").write_text(json.dumps(results, indent=2))
    (out / "ablation.md").write_text(md + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--ablation", action="store_true", help=f"all rows ({', '.join(ROWS)}), seeds {ABLATION_SEEDS} unless --seeds"
    )
    ap.add_argument("--rows", nargs="*", choices=list(ROWS), help="rows to run (default: lif, or all with --ablation)")
    ap.add_argument("--seeds", nargs="*", type=int, help="default: 0, or 0 1 2 with --ablation")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "real")
    ap.add_argument("--data", type=Path, default=None, help="the slice (default: $UCF3_ROOT, else ../shared's)")
    args, extra = ap.parse_known_args(argv)
    data = slice_dir(args.data)
    extra = [f"--data.root={data / 'UCF-101'}", f"--data.split_dir={data / 'ucfTrainTestlist'}", *extra]
    rows = args.rows or (list(ROWS) if args.ablation else ["lif"])
    seeds = args.seeds if args.seeds else (ABLATION_SEEDS if args.ablation else [0])
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for row in rows:
            report_one(run_row(row, seed, args.out, extra))
            summarise(args.out)
    console.print(summarise(args.out))
    console.print(f"wrote {args.out / 'ablation.json'} and {args.out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
