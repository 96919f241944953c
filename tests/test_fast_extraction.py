"""The compiled GOP extraction (csvr/data/kernels.py, codec.fast_gop, read_windows) against the
numpy reference (codec.reference_gop, warp, accumulate_mv, transforms.apply_crop + normalize):
bit-identical outputs on videos encoded here (odd sizes, short GOPs, flips, crops)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from csvr.data import kernels
from csvr.data.codec import CompressedVideo, _rgb, accumulate_mv, mv_field, warp
from csvr.data.datasets import WORKER_CONTEXT, CompressedVideoDataset, collate
from csvr.data.encode import encode_video
from csvr.data.sampling import sample_test, sample_train
from csvr.data.transforms import (
    Crop,
    apply_crop,
    crop_window,
    iframe_at,
    normalize,
    random_crop_params,
    three_crop_params,
)
from tests.videos_util import UCF, make_moving_square_video, moving_square_frames

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """340x256 (a partial last block column), 25 frames: GOPs of 12, 12 and 1 (no P-frame)."""
    return make_moving_square_video(
        tmp_path_factory.mktemp("odd") / "odd.avi", shift=(3, -1), n_frames=25, start=(120, 100)
    ).path


@pytest.fixture(scope="module")
def qpel(tmp_path_factory):
    """Quarter-pel vectors and 8x8 blocks (four_mv): the reader falls back to the reference."""
    path = tmp_path_factory.mktemp("qpel") / "qpel.avi"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt, s.time_base = 200, 120, "yuv420p", Fraction(1, 25)
        s.codec_context.gop_size, s.codec_context.max_b_frames = 12, 0
        s.codec_context.flags |= av.codec.context.Flags.qpel | av.codec.context.Flags.four_mv
        for t, rgb in enumerate(
            moving_square_frames(shift=(3, 1), n_frames=24, size=(200, 120), square=48, start=(20, 20))
        ):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            f.pts = t
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def real_clips(tmp_path_factory):
    """Two UCF-101 clips of ../shared re-encoded at 340x256 and 170x128 (skip without them)."""
    clips = sorted((UCF / "UCF-101").glob("*/*.avi"))[::97][:2] if UCF.exists() else []
    if not clips:
        pytest.skip(f"UCF slice absent: {UCF}")
    out, tmp = [], tmp_path_factory.mktemp("real")
    for n, clip in enumerate(clips):
        with av.open(str(clip)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in itertools.islice(c.decode(video=0), 36)]
        for w, h in ((340, 256), (170, 128)):
            encode_video(frames, tmp / f"{n}_{w}.avi", width=w, height=h)
            out.append(tmp / f"{n}_{w}.avi")
    return out


def assert_gops_equal(a, b):
    np.testing.assert_array_equal(a.iframe, b.iframe)
    np.testing.assert_array_equal(a.mv, b.mv)
    np.testing.assert_array_equal(a.residual, b.residual)


def check_video(path, crops_per_gop=2, size=37, seed=0):
    """fast == reference for every GOP, mode and T; read_windows == apply_crop + normalize."""
    rng = np.random.default_rng(seed)
    with CompressedVideo(path) as v:
        h, w = v.height, v.width
        for i, accumulate, num_p in itertools.product(range(v.num_gops), (False, True), (None, 4, 15)):
            ref = v.read_gop(i, num_p, accumulate, reference=True)
            assert_gops_equal(v.read_gop(i, num_p, accumulate), ref)
            crops = [random_crop_params(h, w, rng, flip_p=0.5) for _ in range(crops_per_gop)]
            crops += [Crop(0, 0, w, h, flip=True), *three_crop_params(h, w)]
            t = ref.mv.shape[0]
            outs = [
                (np.full((t, 2, size, size), np.nan, np.float32), np.full((t, 3, size, size), np.nan, np.float32))
                for _ in crops
            ]
            windows = [crop_window(c, size) for c in crops]
            packed = v.read_windows(i, num_p, accumulate, windows, outs)
            for c, win, (mv, res) in zip(crops, windows, outs):
                want = normalize(*apply_crop(ref.iframe, ref.mv, ref.residual, c, size))
                got_i = np.empty((3, size, size), np.float32)
                iframe_at(packed, win, got_i)
                np.testing.assert_array_equal(got_i, want[0].numpy())
                np.testing.assert_array_equal(mv, want[1].numpy())
                np.testing.assert_array_equal(res, want[2].numpy())


def test_fast_equals_reference_odd_size_short_gop(odd):
    with CompressedVideo(odd) as v:
        assert v.gop_lengths == [12, 12, 1] and (v.width, v.height) == (340, 256)
    check_video(odd)


@pytest.mark.parametrize("accumulate", [False, True])
def test_kept_frames_are_the_decoded_rgb(odd, accumulate):
    """The frames `_decode` keeps (packed, or views of swscale's rgb24 planes for accumulated
    P-frames) still hold their own pixels after more GOPs were decoded and converted: PyAV's
    `to_ndarray(format="rgb24")` of an independent decode."""
    with CompressedVideo(odd) as v:
        frames = v._decode(0, 4, accumulate)[0]
        v._decode(1, 4, accumulate)
        assert {f.dtype for n, f in frames.items() if n > 0} == (
            {np.dtype(np.uint8)} if accumulate else {np.dtype(np.uint32)}
        )
        width = v.width
    with av.open(str(odd)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f, _ in zip(c.decode(video=0), range(12))]
    for n, f in frames.items():
        np.testing.assert_array_equal(_rgb(f, width), decoded[n])


def test_fallback_for_quarter_pel_and_8x8_blocks(qpel):
    with CompressedVideo(qpel) as v:
        assert any(v._decode(i, None, False)[2] is None for i in range(v.num_gops))  # the reference path runs
    check_video(qpel, crops_per_gop=1, size=24)


def test_fast_equals_reference_real_clips(tmp_path_factory):
    for path in real_clips(tmp_path_factory):
        check_video(path, crops_per_gop=1, size=64)


# -- the kernels alone ------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(48, 80), (37, 51)])
def test_accumulate_step_equals_accumulate_mv(h, w):
    rng = np.random.default_rng(h)
    gh, gw = -(-h // 16), -(-w // 16)
    acc_ref = np.zeros((2, h, w), np.float32)
    acc = np.full((gh * 16, gw * 16), kernels.ZERO_FIELD)
    for step in range(5):
        grid = rng.integers(-40, 41, (2, gh, gw)).astype(np.int32)  # up to 20 px, some off-frame
        mv = grid.repeat(16, 1).repeat(16, 2)[:, :h, :w].astype(np.float32) / 2
        acc_ref = accumulate_mv(acc_ref, mv)
        nxt = np.empty_like(acc)
        kernels.accumulate_step(acc, kernels.pack_field(grid), nxt, h, w)
        acc = nxt
        np.testing.assert_array_equal(kernels.unpack_field(acc)[:, :h, :w] / 2, acc_ref)
        if step == 0:  # the first step as fast_gop takes it: the block vectors expanded
            first = np.empty_like(acc)
            kernels.expand_grid(kernels.pack_field(grid), first)
            np.testing.assert_array_equal(kernels.unpack_field(first)[:, :h, :w] / 2, acc_ref)


def test_packed_field_lanes():
    """Both lanes of a packed vector, by hand: (2 dx, 2 dy) = (-3, 5) is (2^31 - 3) | (2^31 + 5) << 32,
    and adding (0, 0)-relative deltas modulo 2^64 adds per lane, negative values included."""
    v = kernels.pack_field(np.array([[[-3]], [[5]]]))
    assert int(v[0, 0]) == (2**31 - 3) | (2**31 + 5) << 32
    delta = kernels.pack_field(np.array([[[7]], [[-9]]])) - kernels.ZERO_FIELD
    np.testing.assert_array_equal(kernels.unpack_field(v + delta)[:, 0, 0], [4, -4])


def packed(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] uint32 R | G << 8 | B << 16, by numpy (not `kernels.pack_rgb`)."""
    return rgb[..., 0].astype(np.uint32) | rgb[..., 1].astype(np.uint32) << 8 | rgb[..., 2].astype(np.uint32) << 16


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 9, 170])
def test_pack_rgb_reads_padded_rows(width):
    rng = np.random.default_rng(width)
    rgb = rng.integers(0, 256, (3, width, 3), dtype=np.uint8)
    rows = np.zeros((3, -(-3 * width // 32) * 32), np.uint8)  # rows padded like FFmpeg's planes
    rows[:, : 3 * width] = rgb.reshape(3, -1)
    out = np.empty((3, width), np.uint32)
    kernels.pack_rgb(rows.view(np.uint32), width, out)
    np.testing.assert_array_equal(out, packed(rgb))


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("window", ["full", "picked"])
def test_residual_at_equals_warp(shift, window):
    """Every path of the kernel (full rows of block vectors, frame edges, picked pixels, repeated
    rows) against the numpy warp, with vectors up to 15 px, many pointing outside the frame."""
    rng = np.random.default_rng(shift)
    h, w = 37, 83  # partial last block row and column
    cur, ref = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
    if shift == 4:
        grid = rng.integers(-30, 31, (2, 3, 6)).astype(np.int32)
        grid[:, rng.random((3, 6)) < 0.3] = 0  # some blocks in place: the contiguous path
        field, m2 = kernels.pack_field(grid), grid.repeat(16, 1).repeat(16, 2)[:, :h, :w]
    else:
        m2 = rng.integers(-30, 31, (2, h, w)).astype(np.int32)
        field = kernels.pack_field(m2)
    if window == "full":
        rows, cols = np.arange(h), np.arange(w)
    else:
        rows, cols = np.sort(rng.integers(0, h, 9)), rng.integers(0, w, 11)
    mv, res = np.zeros((2, len(rows), len(cols)), np.float32), np.zeros((3, len(rows), len(cols)), np.float32)
    kernels.residual_at(
        packed(cur), packed(ref), field, shift, rows, cols, np.float32(0.5), np.float32(0.5), np.float32(0.25), mv, res
    )
    want = (cur - warp(ref, m2 / np.float32(2))).transpose(2, 0, 1)
    np.testing.assert_array_equal(res, want[:, rows][:, :, cols])
    np.testing.assert_array_equal(mv, (m2 / np.float32(2))[:, rows][:, :, cols])


# -- the dataset: one crop-aware path, same samples as the reference --------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory, odd):
    root = tmp_path_factory.mktemp("tree")
    for rel in ("a/x.avi", "b/y.avi"):
        (root / rel).parent.mkdir()
        (root / rel).symlink_to(odd)
    return root, [("a/x.avi", 0), ("b/y.avi", 1)]


def reference_sample(path, idx, crops, size, num_p, accumulate):
    with CompressedVideo(path) as v:
        gops = {i: v.read_gop(i, num_p, accumulate, reference=True) for i in set(idx)}
    parts = [apply_crop(gops[i].iframe, gops[i].mv, gops[i].residual, c, size) for c in crops for i in idx]
    return normalize(*(np.stack([p[s] for p in parts]) for s in range(3)))


@pytest.mark.parametrize("accumulate", [False, True])
def test_dataset_samples_equal_reference(tree, accumulate):
    root, items = tree
    kw = dict(num_segments=4, num_p=4, accumulate=accumulate, img_size=33)
    train = CompressedVideoDataset(root, items, train=True, **kw)
    for seed in (3, 11):
        s = train[(0, seed)]
        rng = np.random.default_rng(seed)
        idx = sample_train(3, 4, rng)  # 3 GOPs, K=4: one GOP twice
        crop = random_crop_params(256, 340, rng)
        for got, want in zip(
            (s["iframe"], s["mv"], s["residual"]), reference_sample(root / items[0][0], idx, [crop], 33, 4, accumulate)
        ):
            assert torch.equal(got, want)
    test = CompressedVideoDataset(root, items, train=False, test_views=2, test_crops=3, **kw)
    s = test[1]
    want = reference_sample(root / items[1][0], sample_test(3, 4, 2), three_crop_params(256, 340), 33, 4, accumulate)
    for got, w in zip((s["iframe"], s["mv"], s["residual"]), want):
        assert torch.equal(got, w)


def test_spawned_worker_gives_the_same_batches(tree):
    root, items = tree
    ds = CompressedVideoDataset(root, items, num_segments=2, num_p=3, accumulate=True, img_size=32, train=False)
    loader = lambda n: torch.utils.data.DataLoader(  # noqa: E731
        ds, batch_size=2, num_workers=n, collate_fn=collate, multiprocessing_context=WORKER_CONTEXT if n else None
    )
    a, b = next(iter(loader(0))), next(iter(loader(1)))
    for key in ("iframe", "mv", "residual"):
        assert torch.equal(a[key], b[key])


def test_kernels_cached_and_fork_safe(tree):
    """A fresh process loads the compiled kernels from numba's disk cache (no compiling), and a
    forked DataLoader worker runs them."""
    root, items = tree
    kernels.warm_up()  # writes the cache if this checkout has none yet
    script = f"""
import torch
from csvr.data import kernels
from csvr.data.datasets import CompressedVideoDataset, collate
ds = CompressedVideoDataset({str(root)!r}, {items!r}, num_segments=2, num_p=3, accumulate=False, img_size=16, train=False)
print("misses", sum(sum(k.stats.cache_misses.values()) for k in (kernels.residual_at, kernels.accumulate_step, kernels.expand_grid)))
batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate,
                                              multiprocessing_context="fork")))
print("shape", tuple(batch["mv"].shape))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "misses 0" in out.stdout and "shape (2, 2, 3, 2, 16, 16)" in out.stdout, out.stdout


def test_parse_vectors_equals_mv_field():
    rng = np.random.default_rng(2)
    h, w = 40, 70  # 3 x 5 blocks, partial last row and column
    rec = np.zeros(30, kernels.MV_DTYPE)
    rec["w"] = rec["h"] = 16
    rec["dst_x"] = rng.integers(-1, 6, 30) * 16 + 8  # some blocks outside the frame
    rec["dst_y"] = rng.integers(-1, 4, 30) * 16 + 8  # negative ones too: signed fields
    rec["motion_x"], rec["motion_y"] = rng.integers(-9, 10, 30), rng.integers(-9, 10, 30)
    rec["motion_scale"] = rng.choice([1, 2], 30)
    grid = np.empty((3, 5), np.uint64)
    assert kernels.parse_vectors(kernels.record_words(rec), grid) == 0
    m2 = kernels.unpack_field(grid)
    np.testing.assert_array_equal(m2.repeat(16, 1).repeat(16, 2)[:, :h, :w] / np.float32(2), mv_field(rec, h, w))
    rec["w"][3] = 8
    assert kernels.parse_vectors(kernels.record_words(rec), grid) == 1  # not a 16x16 block: the reference reads it
    rec["source"][5] = 1
    assert kernels.parse_vectors(kernels.record_words(rec), grid) == 2  # a forward reference: B-frames


def test_gop_grids_equal_mv_field_frame_by_frame():
    """`CompressedVideo._grids` parses a GOP's records in one call (frames of different record
    counts, frames without side data); each grid must be that frame's `mv_field`."""
    from types import SimpleNamespace

    from csvr.data.codec import UnsupportedVideoError

    rng = np.random.default_rng(3)
    h, w = 40, 70
    video = SimpleNamespace(height=h, width=w, path="clip.avi")

    def records(n):
        rec = np.zeros(n, kernels.MV_DTYPE)
        rec["w"] = rec["h"] = 16
        rec["dst_x"], rec["dst_y"] = rng.integers(0, 5, n) * 16 + 8, rng.integers(0, 3, n) * 16 + 8
        rec["motion_x"], rec["motion_y"] = rng.integers(-9, 10, n), rng.integers(-9, 10, n)
        rec["motion_scale"] = 2
        return rec

    recs = [records(7), None, records(15), records(0), records(1)]
    raw = [None if r is None else r.tobytes() for r in recs]
    grids = CompressedVideo._grids(video, raw)
    assert grids.shape == (5, 3, 5)
    for grid, rec in zip(grids, recs):
        m2 = kernels.unpack_field(grid).repeat(16, 1).repeat(16, 2)[:, :h, :w] / np.float32(2)
        np.testing.assert_array_equal(m2, mv_field(rec, h, w))
    recs[2]["w"][0] = 8  # one 8x8 block in one frame: only the reference reads the GOP
    assert CompressedVideo._grids(video, [None if r is None else r.tobytes() for r in recs]) is None
    recs[4]["source"][0] = 1  # a forward reference in another frame: B-frames, whatever else
    with pytest.raises(UnsupportedVideoError, match=r"clip.avi: B-frames \(forward references\)"):
        CompressedVideo._grids(video, [None if r is None else r.tobytes() for r in recs])
