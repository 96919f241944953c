"""The training system end to end (every config: tests/test_configs.py): resume, W&B offline files, test metrics,
predict on a raw video, bad configs, corrupt videos, NaN losses. Real Lightning, real
SpikingJelly, real MPEG-4 files; W&B offline (never the network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csvr.cli import main
from csvr.lit_module import fold_views, warmup_cosine
from tests.conftest import REPO, SHARED, TINY_ARGS, free_port, synthetic_args


def _ckpt_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


FAST = [
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.logger=false",
    "--model.warmup_epochs=0",
    "--model.min_lr_ratio=1.0",
    "--data.batch_size=4",
]


def test_resume_iterator_restart_warns_without_lightnings_internals() -> None:
    """The resume fix reads Lightning internals; a Lightning without them gets a warning, not a crash."""
    from types import SimpleNamespace

    from csvr.lit_module import _restart_train_iterator

    with pytest.warns(UserWarning, match="data order may differ"):
        _restart_train_iterator(SimpleNamespace(fit_loop=SimpleNamespace(epoch_progress=None)))


@pytest.mark.slow
def test_resume_continues_exactly(tiny_synthetic: Path, tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch, then `--ckpt_path last` for the second (same weights)."""
    base = ["fit", *synthetic_args(tiny_synthetic), *FAST]
    assert main([*base, "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path / 'straight'}"]) == 0
    split = tmp_path / "split"
    assert main([*base, "--trainer.max_epochs=1", f"--trainer.default_root_dir={split}"]) == 0
    first = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["epoch"] == 0 and first["global_step"] == 2
    shutil.copy(split / "checkpoints" / "last.ckpt", tmp_path / "epoch0.ckpt")
    assert main([*base, "--trainer.max_epochs=2", f"--trainer.default_root_dir={split}", "--ckpt_path=last"]) == 0
    resumed = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 4
    straight = _ckpt_state(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    for name, value in resumed["state_dict"].items():
        assert torch.equal(value, straight[name]), f"{name} differs after resume"
    # val/acc_best carries over the resume: the best of both epochs, as the straight run's; and a
    # resumed epoch without validation keeps the first epoch's best
    want = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["val_acc_best"]
    assert resumed["val_acc_best"] == want >= first["val_acc_best"]
    noval = tmp_path / "noval"
    args = [*base, "--trainer.max_epochs=2", "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={noval}"]
    assert main([*args, f"--ckpt_path={tmp_path / 'epoch0.ckpt'}"]) == 0
    assert torch.load(noval / "checkpoints" / "last.ckpt", weights_only=True)["val_acc_best"] == first["val_acc_best"]


def test_wandb_offline_run_holds_logged_keys(tiny_synthetic: Path, tmp_path: Path) -> None:
    """A short real run (fast_dev_run turns loggers off) writes an offline W&B run file under
    default_root_dir holding the metric keys, firing rates and energy."""
    import wandb

    args = [
        "fit",
        *synthetic_args(tiny_synthetic),
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    try:
        assert main(args) == 0
    finally:
        wandb.finish()
    keys = (b"train/loss_step", b"val/acc", b"val/acc_best", b"lr-AdamW", b"firing_rate/", b"energy/total_J")
    # wandb.finish() returns once the run is handed to the W&B service, which may write the
    # file a little later on a loaded machine: poll for the keys (bounded), never sleep blindly.
    deadline, data = time.monotonic() + 60, b""
    while True:
        runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
        data = b"".join(r.read_bytes() for r in runs)
        if all(k in data for k in keys) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert runs, f"no offline W&B run under {tmp_path}"
    for key in keys:
        assert key in data, f"{key!r} not logged to W&B (waited 60 s for the W&B service to flush)"
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()  # checkpoints beside the run, not in ./csvr


def test_test_writes_metrics_and_predict_names_classes(tiny_synthetic: Path, tmp_path: Path, capsys) -> None:
    base = synthetic_args(tiny_synthetic)
    root = f"--trainer.default_root_dir={tmp_path}"
    assert main(["fit", *base, *FAST, "--trainer.max_epochs=1", root]) == 0
    assert main(["test", *base, "--trainer.logger=false", root, "--ckpt_path=best"]) == 0
    out = json.loads((tmp_path / "test_metrics.json").read_text())
    names = ["move_left", "move_right", "move_up", "move_down", "rotate", "zoom"]
    assert set(out["class_names"]) == set(names) and len(out["confusion_matrix"]) == 6
    n_test = sum(map(sum, out["confusion_matrix"]))
    correct = sum(out["confusion_matrix"][i][i] for i in range(6))
    assert n_test == 6  # one test video per class in the tiny set
    assert out["metrics"]["test/acc"] == pytest.approx(correct / n_test)

    video = SHARED / "videos" / "Megamind.avi"
    if not video.exists():
        pytest.skip(f"{video} absent")
    capsys.readouterr()
    assert (
        main(["predict", *base, "--trainer.logger=false", root, "--ckpt_path=best", f"--data.predict_paths=[{video}]"])
        == 0
    )
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert len(preds) == 1 and preds[0]["label"] in out["class_names"]
    assert sum(preds[0]["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert preds[0]["label"] in capsys.readouterr().out


@pytest.mark.slow
def test_bad_config_gives_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs" / "synthetic.yaml").read_text().replace("variant: tiny", "variantt: tiny"))
    proc = subprocess.run(
        [sys.executable, "-m", "csvr", "fit", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "variantt" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_dataset_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "UCF-101"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "csvr",
            "fit",
            "--config",
            "configs/ucf101.yaml",
            *TINY_ARGS,
            f"--data.root={missing}",
            "--trainer.fast_dev_run=1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode != 0
    assert str(missing.parent) in proc.stderr + proc.stdout


def test_corrupt_video_does_not_kill_the_epoch(tiny_synthetic: Path, tmp_path: Path) -> None:
    """skip_corrupt: a damaged file inside a prepared tree is skipped and reported by name."""
    root = tmp_path / "synthetic"
    shutil.copytree(tiny_synthetic, root)
    victim = sorted(root.glob("*/*.avi"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated: header only
    args = [
        "fit",
        *synthetic_args(root),
        "--data.skip_corrupt=true",
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    with pytest.warns(UserWarning, match=victim.name):
        assert main(args) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_nan_loss_stops_with_a_clear_message(tiny_synthetic: Path, tmp_path: Path) -> None:
    args = [
        "fit",
        *synthetic_args(tiny_synthetic),
        *FAST,
        "--trainer.max_epochs=3",
        "--trainer.gradient_clip_val=null",
        "--model.optimizer.init_args.lr=1e30",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    with pytest.raises(FloatingPointError, match="learning rate"):
        main(args)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny_synthetic: Path, tmp_path: Path) -> None:
    """Real DDP: 2 processes on gloo, launched as the user would (not from inside pytest)."""
    env = {**os.environ, "MASTER_PORT": str(free_port()), "MASTER_ADDR": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "csvr",
        "fit",
        *synthetic_args(tiny_synthetic),
        "--config",
        str(REPO / "configs" / "trainer" / "ddp_cpu2.yaml"),
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log
    assert "GLOBAL_RANK: 1" in log or "Starting with 2 processes" in log or "world_size=2" in log.replace(" ", "")


def test_fold_views_groups_segments_by_view() -> None:
    """[B, V*K, ...] view-major -> [B*V, K, ...]: element (b, v*K+k) lands at (b*V+v, k)."""
    b, v, k = 2, 3, 2
    x = torch.arange(b * v * k, dtype=torch.float32).reshape(b, v * k, 1)
    folded, views = fold_views({"iframe": x}, k)
    assert views == 3
    assert folded["iframe"][1 * v + 2, 1].item() == x[1, 2 * k + 1].item() == 11.0


def test_warmup_cosine_schedule_values() -> None:
    assert warmup_cosine(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.0) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)


@pytest.mark.slow
def test_real_slice_fit_then_test_writes_metrics(ucf_mini: tuple[Path, Path], tmp_path: Path) -> None:
    """The real-data path of `make real` on 2 clips per class of the UCF-101 slice: prepare
    (170x128, as configs/ucf101_3cls.yaml), a 1-epoch fit (no validation: it comes every 5
    epochs), then `test` on the last checkpoint, as scripts/real.py does."""
    root, lists = ucf_mini
    args = [
        "--config",
        str(REPO / "configs" / "ucf101_3cls.yaml"),
        f"--data.root={root}",
        f"--data.split_dir={lists}",
        *TINY_ARGS,
        "--data.batch_size=3",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(["fit", *args, "--trainer.max_epochs=1"]) == 0
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert main(["test", *args, "--ckpt_path=last"]) == 0
    out = json.loads((tmp_path / "test_metrics.json").read_text())
    assert out["class_names"] == ["BabyCrawling", "Punch", "PushUps"]
    assert sum(map(sum, out["confusion_matrix"])) == 3  # one test clip per class
    assert 0.0 <= out["metrics"]["test/acc"] <= 1.0


def test_real_script_tests_and_counts_the_newest_last_checkpoint(tmp_path: Path) -> None:
    """A rerun of scripts/real.py into the same directory makes Lightning write last-v1.ckpt
    beside the old last.ckpt; test and energy must both read the newest (it used to count the
    energy of the stale last.ckpt)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_script", REPO / "scripts" / "real.py")
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for age, name in ((300, "last.ckpt"), (100, "last-v2.ckpt"), (200, "last-v1.ckpt"), (0, "best-epoch000.ckpt")):
        (ckpts / name).write_bytes(b"")
        os.utime(ckpts / name, (time.time() - age, time.time() - age))
    assert real.last_checkpoint(tmp_path) == ckpts / "last-v2.ckpt"
    with pytest.raises(SystemExit, match="no last"):
        real.last_checkpoint(tmp_path / "elsewhere")


def test_no_weight_decay_on_thresholds_norms_biases_and_positions() -> None:
    from csvr.lit_module import param_groups
    from csvr.models import CSVRNet

    net = CSVRNet(3, variant="tiny", img_size=32)
    decay, no_decay = (set(map(id, g["params"])) for g in param_groups(net))
    names = dict(net.named_parameters())
    assert id(names["stm_mv.layers.0.neuron.threshold"]) in no_decay
    assert id(names["transformer.pos_temporal"]) in no_decay
    assert id(names["stm_mv.layers.0.conv.weight"]) in decay
    assert decay.isdisjoint(no_decay) and len(decay) + len(no_decay) == len(names)
