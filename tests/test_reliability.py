"""Reliability: exact resume after Ctrl-C, crafted checkpoints refused by every command,
atomic checkpoint writes on a full disk, the SLURM log folder. Real subprocesses, real
Lightning; the full disk is simulated at the os.write level."""

from __future__ import annotations

import errno
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csvr.checkpoint import UnsafeCheckpointError, load_checkpoint
from csvr.cli import main
from tests.conftest import REPO, synthetic_args
from tests.signals_util import terminal_signals

RESUME = [
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=1",
    "--data.batch_size=1",
    "--data.num_workers=2",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
]


def _csvr(*args: str) -> list[str]:
    return [sys.executable, "-m", "csvr", *args]


def run_csvr(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m csvr ARGS` in the repo, output captured as text, bounded by `timeout` seconds."""
    return subprocess.run(_csvr(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_interrupted_fit_resumes_bit_identical(tiny_synthetic: Path, tmp_path: Path) -> None:
    """SIGINT as soon as epoch 1's last.ckpt exists, `--ckpt_path last`: the final weights
    equal an uninterrupted run's exactly (loader workers on: they prefetch before the resume)."""
    base = ["fit", *synthetic_args(tiny_synthetic), *RESUME]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = run_csvr(*base, f"--trainer.default_root_dir={tmp_path / 'straight'}", env=env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = tmp_path / "split"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        _csvr(*base, f"--trainer.default_root_dir={run}"),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=terminal_signals,
    )
    try:
        while proc.poll() is None and not last.exists():
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # at once: epoch 1 of 3 has just begun
        proc.wait(timeout=300)
    finally:
        proc.kill()
    ckpt = torch.load(last, weights_only=True)
    if ckpt["global_step"] == 12:
        pytest.skip("the run finished before the interrupt landed")
    resumed = run_csvr(*base, f"--trainer.default_root_dir={run}", "--ckpt_path=last", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), f"{name} differs after interrupt + resume"


class _Marker:
    """Unpickling this runs `Path(marker).touch()`: code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture()
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Marker(marker)}, ckpt)
    assert not marker.exists()
    return ckpt, marker


def test_load_checkpoint_refuses_code(crafted: tuple[Path, Path]) -> None:
    ckpt, marker = crafted
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        load_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError, match="--ckpt_path"):
        load_checkpoint(ckpt.with_name("nope.ckpt"))
    assert not marker.exists()


@pytest.mark.parametrize("command", ["lif-response", "energy", "fit", "test", "predict"])
def test_every_command_refuses_a_crafted_checkpoint(
    command: str, crafted: tuple[Path, Path], tiny_synthetic: Path, tmp_path: Path
) -> None:
    ckpt, marker = crafted
    cfg = synthetic_args(tiny_synthetic)
    args = {
        "lif-response": ["lif-response", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "lif.png")],
        "energy": ["energy", *cfg, "--ckpt_path", str(ckpt), "--batches", "1"],
        "fit": ["fit", *cfg, "--trainer.logger=false", "--trainer.max_epochs=1", f"--ckpt_path={ckpt}"],
        "test": ["test", *cfg, "--trainer.logger=false", f"--ckpt_path={ckpt}"],
        "predict": ["predict", *cfg, "--trainer.logger=false", f"--ckpt_path={ckpt}"],
    }[command]
    args += [f"--trainer.default_root_dir={tmp_path / 'run'}"] if command in ("fit", "test", "predict") else []
    try:
        rc = main(args)
    except pickle.UnpicklingError:
        rc = "raised"
    assert rc != 0
    assert not marker.exists(), f"csvr {command} ran code from a checkpoint"


def test_full_disk_leaves_the_previous_last_ckpt(
    tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails midway (ENOSPC) while saving epoch 2 leaves epoch 1's last.ckpt whole."""
    base = [
        "fit",
        *synthetic_args(tiny_synthetic),
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main([*base, "--trainer.max_epochs=1"]) == 0
    ckdir = tmp_path / "checkpoints"
    before = (ckdir / "last.ckpt").read_bytes()
    real_write = os.write

    def full_disk(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(ckdir)):
            real_write(fd, bytes(data[:1000]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        main([*base, "--trainer.max_epochs=2", "--ckpt_path=last"])
    monkeypatch.undo()
    assert (ckdir / "last.ckpt").read_bytes() == before
    assert load_checkpoint(ckdir / "last.ckpt")["epoch"] == 0
    assert not [p.name for p in ckdir.iterdir() if p.name.endswith(".tmp")], "temporary checkpoint left behind"


def test_slurm_log_goes_to_an_existing_folder(tmp_path: Path) -> None:
    """fit.sbatch logs to the submit directory (SLURM opens it before the script runs); submit.sh
    creates outputs/slurm before calling sbatch with --output there."""
    sbatch, submit = REPO / "scripts/slurm/fit.sbatch", REPO / "scripts/slurm/submit.sh"
    for script in (sbatch, submit):
        subprocess.run(["bash", "-n", str(script)], check=True)
    outputs = re.findall(r"^#SBATCH --output=(\S+)", sbatch.read_text(), re.M)
    assert outputs and all("/" not in o for o in outputs), outputs
    fake = tmp_path / "sbatch"  # stands in for SLURM's sbatch: records whether the log folder exists
    fake.write_text(
        '#!/bin/bash\nfor a; do case $a in --output=*) d=$(dirname "${a#--output=}"); '
        '[ -d "$d" ] && echo "ok $d";; esac; done\n'
    )
    fake.chmod(0o755)
    proc = subprocess.run(
        [str(submit), "configs/ucf101.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "SBATCH": str(fake)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok outputs/slurm" and (tmp_path / "outputs" / "slurm").is_dir()


@pytest.mark.parametrize("option", ["--data.num_p=0", "--data.test_crops=2"])
def test_bad_number_is_one_clean_line(option: str, tiny_synthetic: Path, tmp_path: Path) -> None:
    """A bad value stops the run before training with one line naming the option, no traceback."""
    fit = ["fit", *synthetic_args(tiny_synthetic), "--trainer.logger=false", option, "--trainer.fast_dev_run=1"]
    proc = run_csvr(*fit, f"--trainer.default_root_dir={tmp_path}", timeout=300)
    name = option.split("=")[0].split(".")[-1]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and name in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]


def test_make_slice_builds_the_official_layout(tmp_path: Path) -> None:
    """`csvr make-slice` on a generated download: clips by group, classInd/trainlist/testlist
    in the official format with CRLF, classes renumbered in the given order."""
    from tests.videos_util import UCF_MINI_TEST, UCF_MINI_TRAIN, make_ucf_download

    download = make_ucf_download(tmp_path / "dl", n_frames=2)
    lists_in = tmp_path / "dl" / "ucfTrainTestlist"
    lists_in.mkdir()
    (lists_in / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n8 BabyCrawling\r\n71 Punch\r\n72 PushUps\r\n")
    out = tmp_path / "slice"
    assert (
        main(
            [
                "make-slice",
                "--ucf-root",
                str(download),
                "--lists",
                str(lists_in),
                "--out",
                str(out),
                "--classes",
                "BabyCrawling",
                "Punch",
                "PushUps",
                "--train-groups",
                "15-25",
                "--test-groups",
                "8-14",
            ]
        )
        == 0
    )
    lists = out / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_bytes() == b"1 BabyCrawling\r\n2 Punch\r\n3 PushUps\r\n"
    assert (lists / "trainlist01.txt").read_bytes() == b"".join(
        f"{r} {i + 1}\r\n".encode() for i, r in enumerate(UCF_MINI_TRAIN)
    )
    assert (lists / "testlist01.txt").read_bytes() == b"".join(f"{r}\r\n".encode() for r in UCF_MINI_TEST)
    clips = sorted(str(p.relative_to(out / "UCF-101")) for p in (out / "UCF-101").glob("*/*.avi"))
    assert clips == sorted(UCF_MINI_TRAIN + UCF_MINI_TEST)  # group 3 is in neither split
    from csvr.data.splits import read_ucf101_split, ucf101_classes  # the reader accepts it

    assert ucf101_classes(lists) == ["BabyCrawling", "Punch", "PushUps"]
    assert read_ucf101_split(lists, 1, "train") == [(r, i) for i, r in enumerate(UCF_MINI_TRAIN)]
    assert [r for r, _ in read_ucf101_split(lists, 1, "test")] == UCF_MINI_TEST


def test_make_slice_errors_name_the_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["make-slice", "--ucf-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "--ucf-root" in capsys.readouterr().err
    assert (
        main(["make-slice", "--ucf-root", str(tmp_path), "--out", str(tmp_path / "o"), "--train-groups", "8-14"]) == 2
    )
    assert "overlap" in capsys.readouterr().err
