"""csvr's LightningCLI and the one way to turn configs into objects.

`csvr fit|validate|test|predict` (`csvr/cli.py`), `csvr energy`, `csvr summary` and
`csvr experiment noise` all build through `make_cli`, so a config means the same everywhere.

Configs compose. A config file may start with `base: <file>` (or a list of files), paths
relative to the file that names them; `expand_configs` turns `--config configs/ucf101_L.yaml`
into `--config configs/ucf101.yaml --config <the rest of ucf101_L.yaml>`, so the file holds
only what changes and `csvr fit --config configs/ucf101_L.yaml` stays a single flag. Later
`--config` files and `--key value` overrides apply on top, in command-line order.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningCLI

from csvr.lit_module import CSVRLitModule
from csvr.reports import print_predictions, write_test_metrics
from csvr.trainer_callbacks import BestAndLastCheckpoint, OptionalLearningRateMonitor

BASE_KEY = "base"


# ---------------------------------------------------------------------------- config files
def expand_configs(args: list[str]) -> list[str]:
    """`args` with every `--config FILE` (`-c`, `--config=FILE`) whose file has a top-level
    `base:` replaced by its bases (recursively) followed by the file's own text minus `base:`."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += _expand(args[i + 1], ())
            i += 2
        elif arg.startswith("--config="):
            out += _expand(arg.split("=", 1)[1], ())
            i += 1
        else:
            out.append(arg)
            i += 1
    return out


def _expand(value: str, chain: tuple[Path, ...]) -> list[str]:
    path = Path(value)
    if not path.is_file():  # a YAML string, or a missing file jsonargparse will name
        return ["--config", value]
    text = path.read_text()
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or BASE_KEY not in doc:
        return ["--config", value]
    here = path.resolve()
    if here in chain:
        loop = " -> ".join(str(p) for p in (*chain, here))
        raise ValueError(f"config {path}: `{BASE_KEY}:` files form a loop ({loop})")
    bases = doc[BASE_KEY]
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"config {path}: `{BASE_KEY}:` must be a file name or a list of them, got {bases!r}")
    out: list[str] = []
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(
                f"config {path}: its `{BASE_KEY}: {base}` was not found at {base_path} "
                f"(`{BASE_KEY}:` paths are relative to the file that names them)"
            )
        out += _expand(str(base_path), (*chain, here))
    rest = _without_base(text)
    if yaml.safe_load(rest):
        out += ["--config", rest]  # jsonargparse reads it exactly as it would read the file
    return out


def _without_base(text: str) -> str:
    """The YAML text minus its top-level `base:` entry (the key line and its indented or
    `- ` continuation lines); everything else is passed on verbatim."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if re.match(rf"{BASE_KEY}\s*:", ln))
    end = start + 1
    while end < len(lines) and lines[end].startswith((" ", "\t", "-")):
        end += 1
    return "".join(lines[:start] + lines[end:])


# ---------------------------------------------------------------------------- the CLI
class CSVRCLI(LightningCLI):
    """LightningCLI with csvr's checkpointing (best on val/acc + last), data -> model links,
    runs kept under `trainer.default_root_dir`, `--ckpt_path best`, and the test/predict reports."""

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
        limit_cpu_threads(cfg)
        # WandbLogger saves under "." by default: keep the run inside default_root_dir.
        loggers = cfg.trainer.logger
        for lg in loggers if isinstance(loggers, list) else [loggers]:
            if getattr(lg, "class_path", "").endswith("WandbLogger") and lg.init_args.get("save_dir") in (None, "."):
                lg.init_args["save_dir"] = root

    def instantiate_trainer(self, **kwargs: Any):
        """As LightningCLI's, except that `--trainer.enable_checkpointing false` also drops the
        `checkpoint` callback (Lightning refuses a ModelCheckpoint when checkpointing is off)."""
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        keys = self._parser(self.subcommand).callback_keys
        if config.get("enable_checkpointing") is False:
            keys = [k for k in keys if k != "checkpoint"]
        return self._instantiate_trainer(config, [self._get(self.config_init, k) for k in keys])

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


def limit_cpu_threads(cfg: Any) -> int | None:
    """On CPU, give torch the cores the DataLoader workers leave: torch's default (all cores)
    plus decoding workers oversubscribe a small machine (measured on 2 cores with 1 worker:
    training steps 6x slower). Skipped when OMP_NUM_THREADS is set or a GPU trains.
    Returns the thread count set, or None."""
    import torch

    accel = str(cfg.trainer.get("accelerator") or "auto")
    if (
        "OMP_NUM_THREADS" in os.environ
        or accel in ("gpu", "cuda", "mps")
        or (accel == "auto" and torch.cuda.is_available())
    ):
        return None
    data = cfg.get("data")
    init = getattr(data, "init_args", None) or {}
    workers = int(init.get("num_workers") or 0) if hasattr(init, "get") else 0
    devices = cfg.trainer.get("devices")
    procs = devices if isinstance(devices, int) and devices > 0 else 1
    threads = max(1, (os.cpu_count() or 1) // procs - workers)
    torch.set_num_threads(threads)
    return threads


def find_best_checkpoint(dirpath: Path) -> Path:
    """`--ckpt_path best`: the best checkpoint of a finished fit in `dirpath` (as recorded in
    `last.ckpt` by BestAndLastCheckpoint)."""
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


def trainer_defaults() -> dict[str, Any]:
    """Logger (W&B, configurable) and persistent callbacks (LR monitor)."""
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": "csvr", "log_model": False},
        },
        "callbacks": [OptionalLearningRateMonitor(logging_interval="step")],
    }


def make_cli(args: list[str] | None = None, run: bool = True) -> CSVRCLI:
    """The csvr LightningCLI over `args` (default: the command line); `run=False` builds model,
    datamodule and trainer (`cli.model`, `cli.datamodule`, `cli.trainer`) and runs nothing.

    W&B stays offline unless the user asks for it (WANDB_MODE=online); `wandb sync` uploads later.
    This is the one place that default is set."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    # csvr always passes its (expanded) command line as `args`; Lightning warns when sys.argv
    # holds arguments too, which for csvr is the normal case.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run")
    return CSVRCLI(
        model_class=CSVRLitModule,
        datamodule_class=None,  # any LightningDataModule subclass, from `data.class_path`
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
        args=expand_configs(list(sys.argv[1:] if args is None else args)),
        run=run,
    )


def instantiate(config_paths: list[str | Path], overrides: list[str] | None = None) -> CSVRCLI:
    """Model, datamodule and trainer of fit configs (stacked in order, then `overrides`), built
    exactly as `csvr fit` builds them; nothing runs."""
    args = [a for p in config_paths for a in ("--config", str(p))]
    return make_cli([*args, *(overrides or [])], run=False)


def load_config_objects(config_paths: list[str | Path], overrides: list[str] | None = None):
    """`(LightningModule, LightningDataModule)` of fit configs, as `csvr fit` would build them
    (no logger)."""
    cli = instantiate(config_paths, [*(overrides or []), "--trainer.logger=false"])
    return cli.model, cli.datamodule
