"""`csvr experiment noise`: accuracy of the tiny model vs the rate of spurious background motion.

For every seed, noise level and temporal module (lif | convgru | conv) the same config
(`configs/noise.yaml`) is built by the same LightningCLI as `csvr fit` (`csvr.lightning_cli`)
with `--data.init_args.noise.rate=<level>` (train and test both noisy),
`--model.net.init_args.temporal=<module>` and `--seed_everything=<seed>` (the same budget for
every run: the config's `trainer:`), trained, then tested (top-1 on the synthetic test split).
The experiment adds only `RUN_TRAINER` (no validation, no checkpoints, a CSV log per run in
--out/logs/<run>/ beside the run's config.yaml). On one test batch it also measures the activity of
each STM's first layer (LIF: spike rate; conv: mean ReLU output; convgru: mean |hidden
state|) in three regions, found by comparing the noisy batch with the clean one:

- ``noise_events``: pixel-frames where the noise transform added motion on background
  (no real motion at that pixel in any frame);
- ``clean_background``: pixel-frames of pixels with no motion at all (no real motion, no
  noise in any frame);
- ``foreground``: pixel-frames with real (codec) motion.

Outputs in --out: results.json, results.md (table) and noise_robustness.png, rewritten
after every run so a cut-short experiment still leaves its partial results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from csvr.models.stm import TEMPORAL

REGIONS = ("noise_events", "clean_background", "foreground")
PASS_THROUGH = ("--model.", "--data.", "--trainer.", "--seed_everything")  # config overrides
QUICK_LEVELS = (0.0, 0.4)
QUICK = (
    "--data.init_args.num_classes=3",
    "--data.init_args.videos_per_class=4",
    "--data.init_args.batch_size=4",
    "--data.init_args.img_size=32",
    "--data.init_args.num_p=2",
    "--data.init_args.num_workers=0",
    "--data.init_args.prepare.workers=1",
    "--trainer.max_epochs=1",
    "--trainer.max_steps=2",
    "--trainer.limit_test_batches=1",
    "--trainer.log_every_n_steps=1",
)


def run_trainer(out: Path, name: str) -> list[str]:
    """What the experiment changes in every run's trainer: train, then test; no validation,
    no checkpoints, no bars; a CSV log (and the run's config.yaml) in `out/logs/<name>/`."""
    return [
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={out}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.logger.init_args.name=logs",
        f"--trainer.logger.init_args.version={name}",
    ]


# ---------------------------------------------------------------------------- regions
def region_masks(noisy_mv: torch.Tensor, clean_mv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masks [B, S, T, H, W] (bool) of `REGIONS` from the MV tensors [B, S, T, 2, H, W] of the
    same videos with and without noise."""
    if noisy_mv.shape != clean_mv.shape:
        raise ValueError(f"noisy and clean MVs differ in shape: {tuple(noisy_mv.shape)} vs {tuple(clean_mv.shape)}")
    noise = (noisy_mv - clean_mv).abs().sum(3) > 0
    moving = clean_mv.abs().sum(3) > 0
    still = ~moving.any(2, keepdim=True)  # no real motion at this pixel in any frame
    return {
        "noise_events": noise & still,
        "clean_background": (still & ~noise.any(2, keepdim=True)).expand_as(noise),
        "foreground": moving,
    }


def _to_layer(mask: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """[B, S, T, H, W] -> [T, B*S, 1, h, w]; "any" keeps a cell touched by the mask, "all"
    only a cell wholly inside it."""
    m = mask.permute(2, 0, 1, 3, 4).flatten(1, 2).unsqueeze(2).float()
    t, n = m.shape[:2]
    m = m.flatten(0, 1)
    m = F.adaptive_max_pool2d(m, size) if mode == "any" else -F.adaptive_max_pool2d(-m, size)
    return m.view(t, n, 1, *size) > 0.5


@torch.no_grad()
def layer1_activity(
    net: torch.nn.Module, batch: dict[str, Any], masks: dict[str, torch.Tensor]
) -> dict[str, dict[str, float | None]]:
    """stream -> region -> mean |output| of the STM's first layer (the LIF spike rate) over
    the region's pixel-frames and channels (None where the region is empty)."""
    from csvr.data.batch import fold_views

    k = int(net.num_segments)
    folded, _ = fold_views(batch, k)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        stm.layers[0].register_forward_hook(lambda mod, args, out, s=stream: seen.__setitem__(s, out.detach().abs()))
        for stream, stm in net.stms().items()  # CSVRNet names its STMs; a net without any has none
    ]
    was_training = net.training
    net.eval()
    try:
        net(folded)
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
        from spikingjelly.activation_based import functional

        functional.reset_net(net)
    out: dict[str, dict[str, float | None]] = {}
    for stream, act in seen.items():  # act [T, B*S, C, h, w]
        out[stream] = {}
        for region, mask in masks.items():
            m = _to_layer(mask, act.shape[-2:], "all" if region == "clean_background" else "any")
            n = int(m.sum()) * act.shape[2]
            out[stream][region] = float((act * m).sum() / n) if n else None
    return out


# ---------------------------------------------------------------------------- runs
def first_test_batch(datamodule) -> dict[str, Any]:
    datamodule.prepare_data()
    datamodule.setup("test")
    return next(iter(datamodule.test_dataloader()))


def run_point(
    config: list[str],
    level: float,
    temporal: str,
    seed: int,
    overrides: list[str],
    out: Path,
    clean_batch: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and test one (noise level, temporal module, seed); returns its record and the
    run's trainer settings (as parsed from the config and overrides)."""
    import lightning as L

    from csvr.lightning_cli import instantiate

    name = f"{temporal}_noise{level:g}_seed{seed}"
    cli = instantiate(
        config,
        [
            *overrides,
            f"--model.net.init_args.temporal={temporal}",
            f"--data.init_args.noise.rate={level}",
            f"--seed_everything={seed}",
            *run_trainer(out, name),
        ],
    )
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    L.seed_everything(seed, verbose=False)  # the same shuffles for every module
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    record: dict[str, Any] = {
        "level": level,
        "temporal": temporal,
        "seed": seed,
        "test_acc": float(metrics["test/acc"]),
        "test_loss": float(metrics["test/loss"]),
        "train_seconds": round(seconds, 1),
        "steps": int(trainer.global_step),
    }
    if clean_batch is not None:
        noisy = first_test_batch(dm)
        if list(noisy["video_id"]) != list(clean_batch["video_id"]):
            raise RuntimeError("the noisy and clean test batches hold different videos; cannot compare regions")
        masks = region_masks(noisy["mv"], clean_batch["mv"])
        record["region_pixels"] = {r: int(m.sum()) for r, m in masks.items()}
        record["layer1_activity"] = layer1_activity(model.net, noisy, masks)
    settings = {
        k: v
        for k, v in cli.config.trainer.items()
        if isinstance(v, (int, float, str, bool)) and "." not in k and k != "default_root_dir"
    }
    return record, settings


# ---------------------------------------------------------------------------- reports
def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """level -> temporal -> {"mean", "std", "n"} of test top-1 over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in sorted(runs, key=lambda r: r["level"]):
        out.setdefault(f"{r['level']:g}", {}).setdefault(r["temporal"], []).append(r["test_acc"])  # type: ignore[arg-type]
    for mods in out.values():
        for t, accs in mods.items():
            mods[t] = {
                "mean": statistics.fmean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "n": len(accs),
            }
    return out


def markdown(runs: list[dict[str, Any]], temporal: list[str]) -> str:
    summary = summarise(runs)
    lines = [
        "Test top-1 on the synthetic motion set (mean ± std over seeds where n > 1).",
        "",
        "| noise rate | " + " | ".join(temporal) + " |",
        "|---|" + "---|" * len(temporal),
    ]
    for lev, mods in summary.items():
        cells = []
        for t in temporal:
            s = mods.get(t)
            spread = f" ± {s['std']:.3f} (n={s['n']})" if s is not None and s["n"] > 1 else ""
            cells.append("" if s is None else f"{s['mean']:.3f}{spread}")
        lines.append(f"| {lev} | " + " | ".join(cells) + " |")
    act = sorted((r for r in runs if "layer1_activity" in r), key=lambda r: r["level"])
    if act:
        lines += [
            "",
            "STM first-layer activity on one test batch (LIF: spike rate; conv: mean ReLU output; "
            "convgru: mean |hidden|), per region:",
            "",
            "| noise rate | module | stream | " + " | ".join(REGIONS) + " | noise/clean | noise/foreground |",
            "|" + "---|" * (5 + len(REGIONS)),
        ]
        for r in act:
            for stream, vals in r["layer1_activity"].items():
                cells = ["–" if vals[g] is None else f"{vals[g]:.4f}" for g in REGIONS]
                ne = vals["noise_events"]
                ratios = [
                    "–" if ne is None or not vals[g] else f"{ne / vals[g]:.2f}"
                    for g in ("clean_background", "foreground")
                ]
                lines.append(f"| {r['level']:g} | {r['temporal']} | {stream} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], temporal: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(runs)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for t in temporal:
        pts = [(float(lev), m[t]) for lev, m in summary.items() if t in m]
        if pts:
            pts.sort()
            ax.errorbar(
                [p[0] for p in pts],
                [p[1]["mean"] for p in pts],
                yerr=[p[1]["std"] for p in pts],
                marker="o",
                capsize=3,
                label=t,
            )
    ax.set_xlabel("spurious motion rate (fraction of 16x16 blocks per GOP)")
    ax.set_ylabel("test top-1")
    ax.set_ylim(0, 1.02)
    ax.set_title("Noise robustness: temporal module of the STM (tiny model, synthetic)")
    ax.grid(alpha=0.3)
    ax.legend(title="temporal")
    fig.tight_layout()
    path = out / "noise_robustness.png"
    fig.savefig(path.with_name(".noise_robustness.tmp.png"), dpi=120)
    plt.close(fig)
    path.with_name(".noise_robustness.tmp.png").replace(path)
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_results(out: Path, meta: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    temporal = meta["temporal"]
    _write(out / "results.json", json.dumps({**meta, "summary": summarise(runs), "runs": runs}, indent=2))
    _write(out / "results.md", markdown(runs, temporal))
    plot(runs, temporal, out)


# ---------------------------------------------------------------------------- CLI
def _quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec).*")


def main(argv: list[str] | None = None) -> int:
    """`csvr experiment noise --config configs/noise.yaml`: test top-1 vs spurious-motion
    rate for the LIF, ConvGRU and conv STMs (extra `--model.*`, `--data.*`, `--trainer.*`
    arguments are passed to the config as overrides, as `csvr fit` takes them)."""
    ap = argparse.ArgumentParser(prog="csvr experiment", description=main.__doc__)
    ap.add_argument("experiment", choices=("noise",), help="which experiment")
    ap.add_argument("--config", action="append", default=None, help="fit config(s) (default configs/noise.yaml)")
    ap.add_argument("--out", default="outputs/noise", help="output folder")
    ap.add_argument("--levels", type=float, nargs="+", default=None, help="noise rates (default 0 0.05 0.1 0.2 0.4)")
    ap.add_argument("--temporal", nargs="+", choices=TEMPORAL, default=list(TEMPORAL))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-epochs", type=int, default=None, help="override the config's trainer.max_epochs")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="2 levels, a tiny dataset and 2 steps per run (tests)")
    ap.add_argument("--no-activity", action="store_true", help="skip the per-region STM activity")
    a, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") and not o.startswith(PASS_THROUGH)]
    if bad:
        ap.error(f"unknown arguments {bad} (only --model.* / --data.* / --trainer.* config overrides pass through)")
    for path in a.config or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config {path} not found (e.g. --config configs/noise.yaml)")

    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        return _run(a, overrides, ap)
    finally:
        torch.set_num_threads(threads)


def _run(a: argparse.Namespace, overrides: list[str], ap: argparse.ArgumentParser) -> int:
    from rich.console import Console

    _quiet()
    console = Console()
    config = a.config or ["configs/noise.yaml"]
    levels = a.levels or ([*QUICK_LEVELS] if a.quick else [0.0, 0.05, 0.1, 0.2, 0.4])
    if any(not 0.0 <= lev <= 1.0 for lev in levels):
        ap.error(f"noise levels must be in [0, 1], got {levels}")
    if a.quick:
        overrides = [*QUICK, *overrides]
    if a.max_epochs is not None:
        overrides = [*overrides, f"--trainer.max_epochs={a.max_epochs}"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "config": config,
        "overrides": overrides,
        "trainer": None,
        "levels": levels,
        "temporal": a.temporal,
        "seeds": a.seeds,
        "quick": a.quick,
        "activity": "STM layer-1 mean |output| per region (LIF: spike rate)",
    }

    clean_batch = None
    if not a.no_activity:
        from csvr.lightning_cli import load_config_objects

        _, clean_dm = load_config_objects(config, [*overrides, "--data.init_args.noise.rate=0.0"])
        clean_batch = first_test_batch(clean_dm)
    runs: list[dict[str, Any]] = []
    total = len(a.seeds) * len(levels) * len(a.temporal)
    started = time.perf_counter()
    for seed in a.seeds:
        for level in levels:
            for temporal in a.temporal:
                i = len(runs) + 1
                console.print(f"[bold][{i}/{total}][/] temporal={temporal} noise={level:g} seed={seed} ...")
                rec, meta["trainer"] = run_point(config, level, temporal, seed, overrides, out, clean_batch)
                runs.append(rec)
                write_results(out, meta, runs)
                act = rec.get("layer1_activity", {}).get("mv", {})
                extra = (
                    ""
                    if not act
                    else "  mv layer-1 activity noise/clean/fg: "
                    + "/".join("–" if act[g] is None else f"{act[g]:.3f}" for g in REGIONS)
                )
                eta = (time.perf_counter() - started) / i * (total - i)
                console.print(
                    f"    test top-1 [bold]{rec['test_acc']:.3f}[/] (train {rec['train_seconds']:.0f} s, "
                    f"{rec['steps']} steps){extra}; about {eta / 60:.0f} min left"
                )
    console.print(markdown(runs, a.temporal))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'noise_robustness.png'}")
    return 0 if all(math.isfinite(r["test_acc"]) for r in runs) else 1
