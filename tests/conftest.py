"""Session fixtures for the end-to-end tests: tiny datasets made once per test session.

Every video here is a real MPEG-4 file encoded by PyAV (or an original UCF-101 clip from
../shared, prepared by csvr); nothing is downloaded.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from tests.videos_util import make_ucf_mini

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / (
    "shared-hidden" if os.environ.get("CSVR_NO_SHARED") else "shared"
)  # CSVR_NO_SHARED=1: fresh clone
UCF_SLICE = SHARED / "data" / "ucf101_3cls"

# The tiny synthetic set every training test uses (overrides of configs/synthetic.yaml).
SYNTH = dict(num_classes=6, videos_per_class=3, frames=24, frame_width=64, frame_height=48)
SYNTH_ARGS = [f"--data.{k}={v}" for k, v in SYNTH.items()]
# Shrink any config to a CPU test size: tiny network, small crops, few P-frames.
TINY_ARGS = [
    "--model.net.init_args.variant=tiny",
    "--data.img_size=32",
    "--data.num_p=2",
    "--data.num_workers=0",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.precision=32-true",
]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CSVR_CACHE for the session, so prepared trees are shared between tests."""
    path = tmp_path_factory.mktemp("csvr_cache")
    old = os.environ.get("CSVR_CACHE")
    os.environ["CSVR_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CSVR_CACHE", None)
    else:
        os.environ["CSVR_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_synthetic(session_cache: Path) -> Path:
    """The synthetic motion set at test size (6 classes x 3 videos), generated once."""
    from csvr.data.synthetic import SyntheticMotionConfig, generate_synthetic

    cfg = SyntheticMotionConfig(
        num_classes=SYNTH["num_classes"],
        videos_per_class=SYNTH["videos_per_class"],
        frames=SYNTH["frames"],
        width=SYNTH["frame_width"],
        height=SYNTH["frame_height"],
        seed=0,
    )
    root = session_cache / "tiny_synthetic"
    generate_synthetic(root, config=cfg, workers=2)
    return root


def synthetic_args(root: Path) -> list[str]:
    return ["--config", str(REPO / "configs" / "synthetic.yaml"), f"--data.root={root}", *SYNTH_ARGS, *TINY_ARGS]


@pytest.fixture(scope="session")
def ucf_mini(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> tuple[Path, Path]:
    """2 clips per class in the UCF-101 layout (official CRLF lists): real clips of the shared
    slice when present, else generated and cut by `csvr make-slice` (tests/videos_util.py).
    Returns (root, split_dir); prepared into the session cache by the DataModule."""
    return make_ucf_mini(tmp_path_factory.mktemp("ucf_mini"))


@pytest.fixture(scope="session")
def hmdb_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-class HMDB-51-shaped tree with official-format split files: (root, split_dir)."""
    from csvr.data.encode import encode_video

    base = tmp_path_factory.mktemp("hmdb_tiny")
    root, lists = base / "videos", base / "testTrainMulti_7030_splits"
    lists.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for ci, cls in enumerate(["brush_hair", "kick_ball"]):
        lines = []
        for vi in range(3):
            name = f"{cls}_clip{vi}.avi"
            frames = []
            bg = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for t in range(24):
                f = bg.copy()
                x = 8 + (2 * t if ci == 0 else -t + 30)
                f[16:32, x : x + 16] = 255
                frames.append(f)
            encode_video(frames, root / cls / name, width=64, height=48)
            lines.append(f"{name} {1 if vi < 2 else 2} \n")  # trailing space, as the official files
        for k in (1, 2, 3):
            (lists / f"{cls}_test_split{k}.txt").write_text("".join(lines))
    return root, lists


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
