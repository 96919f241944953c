"""`make bench`: run every benchmark module in one process, print a table and write
bench/results.json. Every number is a ratio against a baseline measured in the same run
(absolute times are printed for context only: they depend on the machine).

    python bench/run.py                 # all
    python bench/run.py --only data model
"""

from __future__ import annotations

import argparse
import importlib
import json
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
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = Table(title=f"csvr bench ({meta['machine']}, {meta['threads']} threads) -> {args.out}")
    for col in ("benchmark", "value", "unit", "aim"):
        table.add_column(col)
    for name, row in results.items():
        v = row["value"]
        table.add_row(name, f"{v:.3f}" if isinstance(v, float) else str(v), row.get("unit", ""), str(row.get("aim", "")))
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
