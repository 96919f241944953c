"""``csvr summary``: parameters per part of a config's model, with or without its dataset.

    csvr summary --config configs/ucf101.yaml [--model.x=... overrides]

Neither ``csvr summary`` nor ``csvr energy`` needs a video: when the config's dataset (its root
or split lists) is missing, the model is built from the config's shapes alone
(``load_objects``: a ``ShapesOnlyDataModule`` stands in for the data, with the class count
of the config's dataset), and ``csvr energy`` runs on synthetic batches.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from csvr.data.datamodules import CompressedVideoDataModule

# classes of the datasets a config may name, for building the model without their split lists
KNOWN_CLASSES = {"UCF101DataModule": 101, "HMDB51DataModule": 51}


class ShapesOnlyDataModule(CompressedVideoDataModule):
    """A stand-in with a real DataModule's arguments (K, T, img_size, test protocol) and no data.

    ``num_classes``: the head size (default 101, UCF-101). It has no dataloaders: callers that
    need batches make synthetic ones (``csvr.energy_cli.synthetic_batch``).
    """

    def __init__(self, num_classes: int = 101, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._num_classes = num_classes
        self.missing_data = True

    @property
    def class_names(self) -> list[str]:
        return [f"class{i}" for i in range(self._num_classes)]

    def items(self, subset: str) -> list[tuple[str, int]]:
        raise FileNotFoundError("ShapesOnlyDataModule holds no videos (the config's dataset is missing)")


def _config_data_class(configs: list[str], overrides: list[str]) -> str:
    """The data class_path the configs (and overrides) name, '' when none."""
    from csvr.lightning_cli import expand_configs

    args = expand_configs([a for c in configs for a in ("--config", str(c))])
    name = ""
    for c in args[1::2]:  # the configs with their `base:` files first
        try:
            doc = yaml.safe_load(Path(c).read_text() if Path(c).is_file() else c) or {}
        except (OSError, ValueError, yaml.YAMLError):
            continue
        name = (doc.get("data") or {}).get("class_path", name) if isinstance(doc, dict) else name
    for o in overrides:
        if o.startswith("--data.class_path="):
            name = o.split("=", 1)[1]
    return name


def load_objects(configs: list[str], overrides: list[str] | None = None):
    """``(LightningModule, DataModule, note)`` of fit configs, with or without the dataset.

    As ``csvr.lightning_cli.load_config_objects``; when the datamodule cannot be built because its files
    are missing (FileNotFoundError: no split folder, no root), the data is replaced by a
    ``ShapesOnlyDataModule`` with the same arguments and ``note`` says so (else None). An
    override ``--data.num_classes=N`` sizes the head of that stand-in only (default: the
    config's dataset's class count); with the dataset present its classes decide.
    """
    from csvr.lightning_cli import load_config_objects

    overrides = list(overrides or [])
    head = [o for o in overrides if o.split("=")[0] in ("--data.num_classes", "--data.init_args.num_classes")]
    overrides = [o for o in overrides if o not in head]  # only the stand-in takes num_classes
    try:
        module, dm = load_config_objects(configs, overrides)
        return module, dm, None
    except (FileNotFoundError, ValueError) as err:  # jsonargparse wraps the data's error
        lines = [ln.strip(" -") for ln in str(err).splitlines() if "not found" in ln]
        if not isinstance(err, FileNotFoundError) and not lines:
            raise
        reason = (lines[0] if lines else str(err)).split(";")[0]
    cls = _config_data_class(configs, overrides).rsplit(".", 1)[-1]
    n = KNOWN_CLASSES.get(cls, 101)
    given = bool(head)
    extra = ["--data.class_path=csvr.summary.ShapesOnlyDataModule", *(head or [f"--data.init_args.num_classes={n}"])]
    module, dm = load_config_objects(configs, overrides + extra)
    as_ = "" if given else f", as {cls or 'UCF-101'}"
    note = f"dataset not found ({reason}): model built from the config's shapes alone ({dm.num_classes} classes{as_})"
    return module, dm, note


def summary_main(argv: list[str] | None = None) -> int:
    """`csvr summary --config CFG [overrides]`: parameter counts of the model, per part."""
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(prog="csvr summary", description=summary_main.__doc__)
    ap.add_argument("--config", action="append", required=True, help="fit config(s), as for csvr fit")
    ns, rest = ap.parse_known_args(argv)
    model, _, note = load_objects(ns.config, rest)
    net = model.net
    console = Console()
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    table = Table(title=f"csvr summary: {', '.join(ns.config)}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for name, child in net.named_children():
        table.add_row(name, f"{sum(p.numel() for p in child.parameters()):,}")
    table.add_row("total", f"{sum(p.numel() for p in net.parameters()):,}", style="bold")
    console.print(table)
    return 0
