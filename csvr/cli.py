"""`csvr`: LightningCLI for fit/validate/test/predict, plus the project's own subcommands.

    csvr fit --config configs/ucf101.yaml            # train (W&B offline unless WANDB_MODE=online)
    csvr fit --config configs/ucf101.yaml --ckpt_path last   # resume
    csvr test --config configs/ucf101.yaml --ckpt_path best
    csvr predict --config configs/ucf101.yaml --ckpt_path best --data.predict_paths '[clip.avi]'
    csvr prepare SRC DST                             # re-encode videos for the compressed domain
    csvr energy --config configs/ucf101.yaml         # per-layer energy table
    csvr summary --config configs/ucf101.yaml        # parameter counts per part
    csvr lif-response --out lif.png                  # LIF temporal sensitivity figure
    csvr experiment noise --config configs/noise.yaml
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

# W&B stays offline unless the user asks for it (WANDB_MODE=online); `wandb sync` uploads later.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# subcommand -> "module:function" taking argv and returning an exit status
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("csvr.data.prepare:main", "re-encode a video tree to MPEG-4 Part 2, GOP 12, no B-frames"),
    "energy": ("csvr.energy_cli:main", "per-layer SNN/ANN energy table of a config's model"),
    "summary": ("csvr.cli:summary_main", "parameter counts of a config's model, per part"),
    "lif-response": ("csvr.evidence.lif_response:main", "LIF temporal-sensitivity figure"),
    "experiment": ("csvr.evidence.noise:main", "experiments: `csvr experiment noise --config ...`"),
    "make-slice": ("csvr.data.slice:main", "a few UCF-101 classes, split by group, in the official layout"),
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _cli_class():
    """Build the LightningCLI subclass lazily: importing Lightning costs seconds."""
    from lightning.pytorch.cli import LightningCLI

    from csvr.lit_module import CSVRLitModule
    from csvr.trainer_callbacks import BestAndLastCheckpoint

    class CSVRCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val/acc",
                    "checkpoint.mode": "max",
                    "checkpoint.save_last": True,
                    "checkpoint.filename": "best-epoch{epoch:03d}",
                    "checkpoint.auto_insert_metric_name": False,
                }
            )
            # data -> model links: the model is sized by the data it will see.
            parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
            parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
            parser.link_arguments("data.img_size", "model.net.init_args.img_size", apply_on="instantiate")
            parser.link_arguments("data.num_segments", "model.net.init_args.num_segments", apply_on="instantiate")

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            root = cfg.trainer.default_root_dir or "outputs/default"
            cfg.trainer.default_root_dir = root
            if not cfg.checkpoint.dirpath:
                cfg.checkpoint.dirpath = str(Path(root) / "checkpoints")
            # a rich progress bar unless the user turned bars off or chose another one
            callbacks = cfg.trainer.callbacks or []
            if cfg.trainer.enable_progress_bar is not False and not any(
                "ProgressBar" in getattr(c, "class_path", type(c).__name__) for c in callbacks
            ):
                from jsonargparse import Namespace

                cfg.trainer.callbacks = [*callbacks, Namespace(class_path="lightning.pytorch.callbacks.RichProgressBar")]
            # WandbLogger saves under "." by default: keep the run inside default_root_dir.
            loggers = cfg.trainer.logger
            for lg in loggers if isinstance(loggers, list) else [loggers]:
                if getattr(lg, "class_path", "").endswith("WandbLogger"):
                    if lg.init_args.get("save_dir") in (None, "."):
                        lg.init_args["save_dir"] = root

        def before_test(self) -> None:
            self._resolve_best()

        def before_validate(self) -> None:
            self._resolve_best()

        def before_predict(self) -> None:
            self._resolve_best()

        def _resolve_best(self) -> None:
            cfg = self.config_init[self.subcommand]
            if cfg.get("ckpt_path") == "best":
                cfg.ckpt_path = str(find_best_checkpoint(Path(self.config[self.subcommand].checkpoint.dirpath)))

        def after_test(self) -> None:
            write_test_metrics(self.trainer, self.model)

        def after_predict(self) -> None:
            print_predictions(self.trainer)

    return CSVRCLI, CSVRLitModule


def trainer_defaults() -> dict[str, Any]:
    """Logger (W&B, configurable) and persistent callbacks (LR monitor)."""
    from csvr.trainer_callbacks import OptionalLearningRateMonitor

    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": "csvr", "log_model": False},
        },
        "callbacks": [OptionalLearningRateMonitor(logging_interval="step")],
    }


def make_cli(args: list[str] | None = None, run: bool = True):
    """Instantiate the LightningCLI (`run=False`: build model, data and trainer only)."""
    cli_cls, lit_cls = _cli_class()
    return cli_cls(
        model_class=lit_cls,
        datamodule_class=None,  # any LightningDataModule subclass, from `data.class_path`
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
        args=args,
        run=run,
    )


def load_config_objects(config_paths: list[str], overrides: list[str] | None = None):
    """Instantiate `(LightningModule, LightningDataModule)` from fit configs, as `csvr fit` would."""
    args: list[str] = []
    for p in config_paths:
        args += ["--config", str(p)]
    args += list(overrides or [])
    args += ["--trainer.logger=false"]
    # `args` is the whole command line: hide the caller's argv (LightningCLI warns about both).
    # Only here: a training run must keep sys.argv, which DDP re-launches for the other ranks.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = make_cli(args, run=False)
    finally:
        sys.argv = argv
    return cli.model, cli.datamodule


def find_best_checkpoint(dirpath: Path) -> Path:
    """The best checkpoint of a finished fit in `dirpath` (as recorded in `last.ckpt`)."""
    from csvr.checkpoint import load_checkpoint

    last = dirpath / "last.ckpt"
    if last.exists():
        ckpt = load_checkpoint(last, "--ckpt_path best")
        for key, state in ckpt.get("callbacks", {}).items():
            best = key.startswith("ModelCheckpoint") and state.get("best_model_path")
            if best and Path(best).exists():
                return Path(best)
    found = sorted(dirpath.glob("best-*.ckpt"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"--ckpt_path best: no best checkpoint found in {dirpath} (fit with the same config first, "
        "or pass the path of a .ckpt file)"
    )


def write_test_metrics(trainer, model) -> Path | None:
    """Write `<default_root_dir>/test_metrics.json`: logged test metrics, per-class accuracy and
    the confusion matrix (rank 0 only)."""
    if not trainer.is_global_zero:
        return None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    cm = model.test_confusion_matrix().cpu() if hasattr(model, "test_confusion_matrix") else None
    out: dict[str, Any] = {"metrics": metrics}
    if cm is not None:
        names = model.class_names or [str(i) for i in range(cm.shape[0])]
        per_class = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
        out["class_names"] = names
        out["per_class_acc"] = dict(zip(names, per_class))
        out["confusion_matrix"] = cm.tolist()
        _log_confusion(trainer, names, cm)
    path = Path(trainer.default_root_dir) / "test_metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(path)
    return path


def _log_confusion(trainer, names: list[str], cm) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            rows = [[t, p, int(cm[i, j])] for i, t in enumerate(names) for j, p in enumerate(names)]
            lg.log_table("test/confusion_matrix", columns=["true", "predicted", "count"], data=rows)


def print_predictions(trainer) -> None:
    from rich.console import Console
    from rich.table import Table

    preds = [p for batch in (trainer.predict_loop.predictions or []) for p in batch]
    if not trainer.is_global_zero:
        return
    table = Table(title="csvr predictions")
    for col in ("video", "prediction", "probability"):
        table.add_column(col)
    for p in preds:
        table.add_row(p["video_id"], p["label"], f"{p['probs'][p['label']]:.3f}")
    Console().print(table)
    path = Path(trainer.default_root_dir) / "predictions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(preds, indent=2))


def summary_main(argv: list[str] | None = None) -> int:
    """`csvr summary --config CFG [overrides]`: parameter counts of the model, per part."""
    import argparse

    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(prog="csvr summary", description=summary_main.__doc__)
    ap.add_argument("--config", action="append", required=True, help="fit config(s), as for csvr fit")
    ns, rest = ap.parse_known_args(argv)
    model, _ = load_config_objects(ns.config, rest)
    net = model.net
    table = Table(title=f"csvr summary: {', '.join(ns.config)}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for name, child in net.named_children():
        table.add_row(name, f"{sum(p.numel() for p in child.parameters()):,}")
    table.add_row("total", f"{sum(p.numel() for p in net.parameters()):,}", style="bold")
    Console().print(table)
    return 0


def _load(target: str) -> Callable[[list[str]], int]:
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def _usage() -> str:
    lines = ["usage: csvr {fit,validate,test,predict,%s} ..." % ",".join(SUBCOMMANDS), ""]
    lines.append("Lightning subcommands (csvr fit --help for every option):")
    for s in LIGHTNING_SUBCOMMANDS:
        lines.append(f"  {s:14s} {s} a model from a YAML config (--config configs/*.yaml)")
    lines.append("csvr subcommands:")
    for s, (_, desc) in SUBCOMMANDS.items():
        lines.append(f"  {s:14s} {desc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; a bad value or a missing file (ValueError, FileNotFoundError, a refused
    checkpoint) prints its one-line message and exits 2 (1 for files), no traceback unless
    CSVR_DEBUG=1."""
    import pickle

    try:
        return _dispatch(argv)
    except (ValueError, FileNotFoundError, pickle.UnpicklingError) as e:
        if os.environ.get("CSVR_DEBUG", "") not in ("", "0"):
            raise
        print(f"csvr: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, FileNotFoundError) else 2


def _dispatch(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + _usage())
        return 0 if argv else 2
    if argv[0] in SUBCOMMANDS:
        return int(_load(SUBCOMMANDS[argv[0]][0])(argv[1:]) or 0)
    if argv[0] not in LIGHTNING_SUBCOMMANDS and not argv[0].startswith("-"):
        print(f"csvr: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    make_cli(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
