"""`make demo`: train the tiny LIF model on the synthetic motion set on CPU, then print
validation/test top-1, per-layer firing rates and the energy per video, and write
outputs/demo/metrics.json.

    python scripts/demo.py [extra csvr fit overrides, e.g. --trainer.max_epochs 4]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from csvr.energy_cli import main as energy_main  # noqa: E402
from csvr.lightning_cli import make_cli  # noqa: E402

CONFIG = str(REPO / "configs" / "synthetic.yaml")
OUT = REPO / "outputs" / "demo"


def main(argv: list[str]) -> int:
    import wandb

    console = Console()
    t0 = time.perf_counter()
    args = ["--config", CONFIG, "--trainer.default_root_dir", str(OUT), *argv]
    cli = make_cli(["fit", *args])
    fit_s = time.perf_counter() - t0
    fit_metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    best = cli.trainer.checkpoint_callback.best_model_path
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)
    test_metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    wandb.finish()

    energy_json = OUT / "energy.json"
    energy_main(["--config", CONFIG, *args, "--ckpt_path", best, "--json", str(energy_json), "--batches", "1"])
    energy = json.loads(energy_json.read_text())

    rates = {k.split("/", 1)[1]: v for k, v in fit_metrics.items() if k.startswith("firing_rate/")}
    table = Table(title="csvr demo: synthetic motion, tiny model, LIF STM (CPU)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("val top-1 (best epoch)", f"{fit_metrics.get('val/acc_best', float('nan')):.3f}")
    table.add_row("test top-1 (best checkpoint)", f"{test_metrics.get('test/acc', float('nan')):.3f}")
    for layer, rate in rates.items():
        table.add_row(f"firing rate {layer}", f"{rate:.4f}")
    table.add_row("energy per video, paper convention", f"{energy['totals']['energy_J']:.3e} J")
    table.add_row("energy per video, all compute", f"{energy['totals']['energy_all_compute_J']:.3e} J")
    table.add_row("fit wall time", f"{fit_s:.0f} s")
    console.print(table)
    summary = {
        "val_acc_best": fit_metrics.get("val/acc_best"),
        "test": test_metrics,
        "firing_rate": rates,
        "energy_totals": energy["totals"],
        "fit_seconds": fit_s,
        "best_checkpoint": best,
    }
    (OUT / "metrics.json").write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {OUT / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
