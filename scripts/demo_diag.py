"""Diagnose the synthetic demo: fit with overrides, then per-class confusion on train (eval
transforms), val and test, and train/val accuracy per epoch.

    python scripts/demo_diag.py [csvr fit overrides]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from csvr.data.datasets import collate  # noqa: E402
from csvr.lightning_cli import make_cli  # noqa: E402

CONFIG = str(REPO / "configs" / "synthetic.yaml")


def confusion(model, dm, items, views=1, crops=1) -> torch.Tensor:
    ds = dm._dataset(items, train=False, views=views, crops=crops)
    n = len(dm.class_names)
    cm = torch.zeros(n, n, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(ds), 16):
            b = collate([ds[j] for j in range(i, min(len(ds), i + 16))])
            pred = model(b).argmax(-1)
            for t, p in zip(b["label"].tolist(), pred.tolist()):
                cm[t, p] += 1
    return cm


def main(argv: list[str]) -> None:
    out = REPO / "outputs" / "diag"
    t0 = time.perf_counter()
    cli = make_cli(
        ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(out), "--trainer.logger", "false", *argv]
    )
    fit_s = time.perf_counter() - t0
    dm, model = cli.datamodule, cli.model
    res = {"fit_s": fit_s, "argv": argv}
    for sub in ("train", "val", "test"):
        cm = confusion(model, dm, dm.items(sub))
        res[sub] = (cm.diag().sum() / cm.sum()).item()
        res[f"{sub}_cm"] = cm.tolist()
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("_cm")}))
    print("classes", dm.class_names)
    for sub in ("train", "val", "test"):
        print(sub, res[sub])
        print(torch.tensor(res[f"{sub}_cm"]))
    print("RESULT", json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
