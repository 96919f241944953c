"""What `csvr test` and `csvr predict` write and print after Lightning's loop has run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_test_metrics(trainer, model) -> Path | None:
    """Write `<default_root_dir>/test_metrics.json`: logged test metrics, per-class accuracy and
    the confusion matrix (rank 0 only); the matrix also goes to W&B as a table."""
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
    """Print `csvr predict`'s table (video, class, probability) and write
    `<default_root_dir>/predictions.json` (rank 0 only)."""
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
