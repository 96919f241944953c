from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from csvr.data.codec import CodecError, CompressedVideo
from csvr.data.datasets import CompressedVideoDataset, collate
from csvr.data.prepare import MANIFEST_NAME, read_manifest
from csvr.data.sampling import sample_test
from csvr.data.synthetic import SyntheticMotionConfig, generate_synthetic, read_synthetic_splits
from csvr.data.transforms import IFRAME_MEAN, IFRAME_STD, MV_SCALE, SpuriousMotion
from tests.videos_util import truncate_copy

TINY = SyntheticMotionConfig(num_classes=2, videos_per_class=3, frames=24, width=64, height=48, seed=1)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-class x 3-video synthetic tree (move_left / move_right, 2 GOPs of 64x48)."""
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "tiny", config=TINY, progress=False, workers=1)


def _ds(root: Path, items, **kw) -> CompressedVideoDataset:
    args = dict(num_segments=2, num_p=3, accumulate=True, img_size=32, train=False)
    return CompressedVideoDataset(root, items, **{**args, **kw})


def test_synthetic_tree(tiny_root: Path) -> None:
    splits = read_synthetic_splits(tiny_root)
    assert splits["classes"] == ["move_left", "move_right"]
    assert sum(len(splits[s]) for s in ("train", "val", "test")) == 6
    assert read_manifest(tiny_root)["files"] == 6 and (tiny_root / MANIFEST_NAME).is_file()
    for rel, label in splits["train"]:
        assert rel.startswith(splits["classes"][label] + "/")
        with CompressedVideo(tiny_root / rel) as v:
            assert (v.width, v.height, v.num_gops, v.gop_lengths) == (64, 48, 2, [12, 12])
    # the same settings are found in the cache, a different config at the same root is refused
    assert generate_synthetic(tiny_root, config=TINY) == tiny_root
    with pytest.raises(FileExistsError, match="different synthetic dataset"):
        generate_synthetic(tiny_root, config=SyntheticMotionConfig(num_classes=3, videos_per_class=3))


def test_sample_contract_and_motion_direction(tiny_root: Path) -> None:
    items = read_synthetic_splits(tiny_root)["train"]
    torch.manual_seed(0)
    s = _ds(tiny_root, items, train=True)[0]
    assert s["iframe"].shape == (2, 3, 32, 32) and s["iframe"].dtype == torch.float32
    assert s["mv"].shape == (2, 3, 2, 32, 32) and s["residual"].shape == (2, 3, 3, 32, 32)
    assert s["label"] == items[0][1] and s["video_id"] == items[0][0]
    # test mode: no flip, so the mean horizontal motion has the class's sign
    ds = _ds(tiny_root, items)
    for i, (rel, label) in enumerate(items):
        dx = ds[i]["mv"][:, :, 0]
        mean_dx = dx[dx != 0].mean().item()
        assert (mean_dx > 0.5 / MV_SCALE) if label == 1 else (mean_dx < -0.5 / MV_SCALE), (rel, mean_dx)


def test_test_views_are_view_major(tiny_root: Path) -> None:
    rel, label = read_synthetic_splits(tiny_root)["test"][0]
    ds = _ds(tiny_root, [(rel, label)], num_segments=2, test_views=2, test_crops=3)
    s = ds[0]
    assert s["iframe"].shape == (12, 3, 32, 32) and s["mv"].shape == (12, 3, 2, 32, 32)
    with CompressedVideo(tiny_root / rel) as v:
        frames = {i: v.read_gop(i).iframe for i in range(v.num_gops)}
    idx = sample_test(2, 2, 2)  # 2 GOPs, K=2, V=2: [0, 1, 0, 1]
    rows = (np.arange(32) + 0.5) * 48 / 32  # 48x48 square crops, nearest
    for c, x0 in enumerate([0, 8, 16]):  # left, centre, right of a 64x48 frame
        for j, gop in enumerate(idx):
            ref = frames[gop][:, rows.astype(int)][:, :, x0 + rows.astype(int)]
            ref = (ref / 255.0 - IFRAME_MEAN[0]) / IFRAME_STD[0]
            np.testing.assert_allclose(s["iframe"][c * 4 + j].numpy(), ref, atol=1e-5)


def test_noise_in_dataset_is_seeded(tiny_root: Path) -> None:
    items = read_synthetic_splits(tiny_root)["val"]
    clean = _ds(tiny_root, items)[0]["mv"]
    noisy = _ds(tiny_root, items, noise=SpuriousMotion(0.5, seed=2))
    a, b = noisy[0]["mv"], noisy[0]["mv"]
    assert torch.equal(a, b) and not torch.equal(a, clean)


def test_corrupt_file_skipped_or_named(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(tiny_root, root)
    items = read_synthetic_splits(root)["train"][:2]
    bad = items[1][0]
    truncate_copy(tiny_root / bad, root / bad, fraction=0.4)
    with pytest.raises(CodecError, match=Path(bad).name):
        _ds(root, items)[1]
    ds = _ds(root, items, skip_corrupt=True)
    with pytest.warns(UserWarning, match=Path(bad).name):
        batch = collate([ds[0], ds[1]])
    assert batch["video_id"] == [items[0][0]] and batch["skipped"] == [bad]
    assert batch["mv"].shape == (1, 2, 3, 2, 32, 32) and batch["label"].tolist() == [items[0][1]]
    empty = collate([ds[1]])
    assert empty["label"].shape == (0,) and empty["skipped"] == [bad]


def test_missing_files(tiny_root: Path) -> None:
    items = read_synthetic_splits(tiny_root)["train"]
    listed = items + [("move_left/gone_1.avi", 0), ("move_right/gone_2.avi", 1)]
    with pytest.raises(FileNotFoundError, match=r"2 of 4 listed videos are missing.*gone_1\.avi.*skip_missing"):
        _ds(tiny_root, listed)
    with pytest.warns(UserWarning, match="2 of 4"):
        ds = _ds(tiny_root, listed, skip_missing=True)
    assert ds.items == items
