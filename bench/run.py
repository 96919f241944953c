"""`make bench`: run every benchmark module in one process, print a table and write
bench/results.json. Every number is a ratio against a baseline measured in the same run
(absolute times are printed for context only: they depend on the machine). Data ratios are CPU
time (`time.process_time`), with the wall-time ratio beside them; the 1-minute load average
before and after is recorded, so a reader can tell an idle run from a loaded one.

    python bench/run.py                 # all
    python bench/run.py --only data model
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MODULES = {"data": "bench_data", "loader": "bench_loader", "model": "bench_model"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=sorted(MODULES), help="run only these benchmarks")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    results: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    for key in args.only or MODULES:
        t0 = time.perf_counter()
        mod = importlib.import_module(MODULES[key])
        for name, row in mod.run().items():
            results[name if name.startswith(f"{key}/") else f"{key}/{name}"] = row
        print(f"[bench] {key}: {time.perf_counter() - t0:.1f} s", flush=True)
    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    load = meta["load_1min_before_after"]
    table = Table(
        title=f"csvr bench ({meta['machine']}, {meta['cpus']} CPUs, load {load[0]} -> {load[1]}) -> {args.out}"
    )
    for col in ("benchmark", "value", "unit", "wall ratio", "aim"):
        table.add_column(col, no_wrap=col == "benchmark")
    for name, row in results.items():
        v = row["value"]
        table.add_row(
            name,
            f"{v:.3f}" if isinstance(v, float) else str(v),
            row.get("unit", ""),
            str(row.get("wall_ratio", "")),
            str(row.get("aim", "")),
        )
    Console(width=150).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
