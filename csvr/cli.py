"""`csvr`: dispatches to LightningCLI (fit/validate/test/predict, built in `csvr/lightning_cli.py`)
or to the project's own subcommands (`SUBCOMMANDS`).

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
import os
import sys
from collections.abc import Callable

# subcommand -> "module:function" taking argv and returning an exit status
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("csvr.data.prepare:main", "re-encode a video tree to MPEG-4 Part 2, GOP 12, no B-frames"),
    "energy": ("csvr.energy_cli:main", "per-layer SNN/ANN energy table of a config's model"),
    "summary": ("csvr.summary:summary_main", "parameter counts of a config's model, per part"),
    "lif-response": ("csvr.evidence.lif_response:main", "LIF temporal-sensitivity figure"),
    "experiment": ("csvr.evidence.noise:main", "experiments: `csvr experiment noise --config ...`"),
    "make-slice": ("csvr.data.slice:main", "a few UCF-101 classes, split by group, in the official layout"),
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _load(target: str) -> Callable[[list[str]], int]:
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def _usage() -> str:
    lines = [f"usage: csvr {{{','.join([*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS])}}} ...", ""]
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
    from csvr.lightning_cli import make_cli  # imports Lightning: seconds

    make_cli(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
