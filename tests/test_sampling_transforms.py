from __future__ import annotations

import numpy as np
import pytest

from csvr.data.sampling import num_views, sample_test, sample_train
from csvr.data.transforms import (
    IFRAME_MEAN,
    IFRAME_STD,
    MV_SCALE,
    RESIDUAL_SCALE,
    Crop,
    SpuriousMotion,
    apply_crop,
    normalize,
    random_crop_params,
    three_crop_params,
)


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize(
    "n,K,views,expected",
    [
        (10, 3, 1, [1, 5, 8]),  # centres of [0,3.33), [3.33,6.67), [6.67,10)
        (12, 3, 2, [1, 5, 9, 3, 7, 11]),  # view-major: view 0 = 1,5,9; view 1 = 3,7,11
        (2, 3, 1, [0, 1, 1]),  # fewer GOPs than segments: repeats
        (1, 3, 2, [0] * 6),
    ],
)
def test_sample_test_hand_computed(n: int, K: int, views: int, expected: list[int]) -> None:
    assert sample_test(n, K, views) == expected


def test_sample_test_views_span_video() -> None:
    idx = sample_test(30, 3, 5)  # 15 slots of 2 GOPs: centres 1, 3, ..., 29
    assert sorted(idx) == list(range(1, 30, 2))
    for v in range(5):
        view = idx[v * 3 : v * 3 + 3]
        assert view[0] < 10 <= view[1] < 20 <= view[2]  # one GOP in each third
    assert num_views(25, 3) == 9 and num_views(3, 3) == 1


def test_sample_train_segments() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([sample_train(10, 3, rng) for _ in range(2000)])
    for k, (lo, hi) in enumerate([(0, 3), (3, 6), (6, 10)]):
        assert set(draws[:, k].tolist()) == set(range(lo, hi))
    few = np.array([sample_train(2, 3, rng) for _ in range(500)])
    assert set(few[:, 0].tolist()) == {0} and set(few[:, 1].tolist()) == {0, 1} and set(few[:, 2].tolist()) == {1}
    with pytest.raises(ValueError, match="at least one GOP"):
        sample_train(0, 3, rng)


# ---------------------------------------------------------------- transforms
def _streams(h: int, w: int):
    cols = np.arange(w, dtype=np.float32)[None, :].repeat(h, 0)
    rows = np.arange(h, dtype=np.float32)[:, None].repeat(w, 1)
    iframe = np.stack([rows, cols, rows * 0 + 7]).astype(np.uint8)  # [3,H,W]
    mv = np.stack([cols + 1, rows * 0 + 5])[None]  # [T=1,2,H,W]: dx = col+1, dy = 5
    res = np.stack([cols, rows, -cols])[None]  # [1,3,H,W]
    return iframe, mv.astype(np.float32), res.astype(np.float32)


def test_flip_mirrors_and_negates_dx() -> None:
    iframe, mv, res = _streams(8, 8)
    i2, m2, r2 = apply_crop(iframe, mv, res, Crop(0, 0, 8, 8, flip=True), 8)
    j = np.arange(8)
    np.testing.assert_array_equal(i2[1, 0], 7 - j)  # mirrored columns
    np.testing.assert_array_equal(i2[0, :, 0], j)  # rows unchanged
    np.testing.assert_array_equal(m2[0, 0, 3], -(8 - j))  # dx mirrored and negated
    np.testing.assert_array_equal(m2[0, 1], np.full((8, 8), 5.0))  # dy unchanged
    np.testing.assert_array_equal(r2[0, 0, 0], 7 - j)  # residual mirrored, not negated


def test_crop_resize_scales_mv() -> None:
    iframe, mv, res = _streams(4, 8)
    i2, m2, r2 = apply_crop(iframe, mv, res, Crop(2, 1, 4, 2), 8)  # 4x2 box -> 8x8
    rows = 1 + np.arange(8) // 4  # hand-computed nearest sampling
    cols = 2 + np.arange(8) // 2
    np.testing.assert_array_equal(i2[0, :, 0], rows)
    np.testing.assert_array_equal(i2[1, 0], cols)
    np.testing.assert_array_equal(m2[0, 0, 0], (cols + 1) * 2.0)  # dx * 8/4
    np.testing.assert_array_equal(m2[0, 1], np.full((8, 8), 5.0 * 4.0))  # dy * 8/2
    np.testing.assert_array_equal(r2[0, 1, :, 0], rows)
    assert i2.dtype == np.uint8 and m2.dtype == np.float32


def test_one_block_resized_to_model_size() -> None:
    # a 340x256 frame with a single 16x16 block moving 4 px right, centre crop to 224
    mv = np.zeros((2, 2, 256, 340), np.float32)
    mv[:, 0, 128:144, 160:176] = 4.0
    crop = three_crop_params(256, 340)[1]
    assert crop == Crop(42, 0, 256, 256)
    _, m2, _ = apply_crop(np.zeros((3, 256, 340), np.uint8), mv, np.zeros((2, 3, 256, 340), np.float32), crop, 224)
    assert m2.shape == (2, 2, 224, 224)
    assert np.isclose(m2[:, 0].max(), 4.0 * 224 / 256) and m2[:, 1].max() == 0
    assert abs((m2[0, 0] > 0).sum() - 14 * 14) <= 2 * 15  # the block shrinks to ~14x14


def test_crop_params() -> None:
    assert [c.x0 for c in three_crop_params(256, 340)] == [0, 42, 84]
    assert [c.y0 for c in three_crop_params(340, 256, 0.5)] == [0, 106, 212]
    rng = np.random.default_rng(1)
    crops = [random_crop_params(256, 340, rng) for _ in range(300)]
    for c in crops:
        assert 0 <= c.x0 and c.x0 + c.w <= 340 and 0 <= c.y0 and c.y0 + c.h <= 256
        assert 0.5 * 256 * 340 <= c.w * c.h <= 256 * 340
    assert 0.3 < np.mean([c.flip for c in crops]) < 0.7


def test_normalize_constants() -> None:
    i, m, r = normalize(np.full((1, 3, 2, 2), 255, np.uint8), np.full((1, 2, 2, 2), 32.0), np.full((1, 3, 2, 2), -64.0))
    assert np.allclose(i.numpy(), (1 - IFRAME_MEAN[0]) / IFRAME_STD[0])
    assert np.allclose(m.numpy(), 32.0 / MV_SCALE) and np.allclose(r.numpy(), -64.0 / RESIDUAL_SCALE)


# ---------------------------------------------------------------- noise
def test_noise_rate_zero_is_identity() -> None:
    mv = np.random.default_rng(0).normal(size=(11, 2, 64, 80)).astype(np.float32)
    res = np.ones((11, 3, 64, 80), np.float32)
    m2, r2 = SpuriousMotion(0.0, seed=3)(mv, res, "a/b.avi", 0)
    np.testing.assert_array_equal(m2, mv)
    np.testing.assert_array_equal(r2, res)


def test_noise_statistics_and_determinism() -> None:
    t, h, w = 11, 256, 340
    noise = SpuriousMotion(0.1, seed=7)
    zeros_mv, zeros_res = np.zeros((t, 2, h, w), np.float32), np.zeros((t, 3, h, w), np.float32)
    fractions, per_pixel = [], []
    for gop in range(8):
        m, r = noise(zeros_mv, zeros_res, "Class/v_1.avi", gop)
        active = np.abs(m).sum(1) > 0  # [T, H, W]
        blocks = active[:, ::16, ::16].any(0)  # 16 x 22 blocks
        fractions.append(blocks.mean())
        counts = active.sum(0)[active.any(0)]  # frames with noise, per noisy pixel
        per_pixel.append(counts)
        assert ((np.abs(r).sum(1) > 0) == active).all()  # residual blobs where the vectors are
    assert abs(np.mean(fractions) - 0.1) < 0.03
    counts = np.concatenate(per_pixel)
    assert counts.max() <= 2 and 1.0 <= counts.mean() < 1.4  # low temporal rate
    a = noise(zeros_mv, zeros_res, "Class/v_1.avi", 3)[0]
    np.testing.assert_array_equal(a, noise(zeros_mv, zeros_res, "Class/v_1.avi", 3)[0])
    np.testing.assert_array_equal(a, SpuriousMotion(0.1, seed=7)(zeros_mv, zeros_res, "Class/v_1.avi", 3)[0])
    assert not np.array_equal(a, noise(zeros_mv, zeros_res, "Class/v_1.avi", 4)[0])
    assert not np.array_equal(a, SpuriousMotion(0.1, seed=8)(zeros_mv, zeros_res, "Class/v_1.avi", 3)[0])
    # the noise adds to the codec's vectors
    base = np.full((t, 2, h, w), 3.0, np.float32)
    np.testing.assert_allclose(noise(base, zeros_res, "Class/v_1.avi", 3)[0], a + 3.0)
