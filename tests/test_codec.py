"""encode_video and CompressedVideo on real MPEG-4 files made here with PyAV.

Sign convention under test (csvr/data/codec.py): mv = displacement of content from the
reference frame to the current frame, so a square moving +dx, +dy per frame has mv = (dx, dy).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from csvr.data.codec import CompressedVideo, CorruptVideoError, UnsupportedVideoError, _warp_bilinear, warp
from csvr.data.encode import TMP_MARK, encode_video
from csvr.data.transforms import Crop, crop_window
from tests.videos_util import (
    UCF,
    VIDEOS,
    flip_bytes_copy,
    make_all_intra,
    make_h264,
    make_moving_square_video,
    make_mpeg4_with_bframes,
    truncate_copy,
    write_empty,
    write_random_bytes,
)


def decode_all(path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"flags2": "+export_mvs"}
        return list(c.decode(s))


def read_all(path) -> None:
    """Every GOP through both entry points (full frames, and crop windows as the dataset reads)."""
    with CompressedVideo(path) as v:
        win = crop_window(Crop(0, 0, v.width, v.height, flip=True), 16)
        for i in range(v.num_gops):
            out = np.empty((v.nominal_p, 2, 16, 16), np.float32), np.empty((v.nominal_p, 3, 16, 16), np.float32)
            v.read_windows(i, None, True, [win], [out])
            v.read_gop(i)


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    return make_moving_square_video(tmp_path_factory.mktemp("sq") / "sq.avi", shift=(4, 2), n_frames=24)


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory):
    """36 frames (3 GOPs) of a real clip, re-encoded with csvr's settings."""
    src = VIDEOS / "Megamind.avi"
    if not src.exists():
        pytest.skip(f"shared videos absent: {VIDEOS}")
    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in itertools.islice(c.decode(video=0), 100, 136)]
    path = tmp_path_factory.mktemp("real") / "megamind36.avi"
    encode_video(frames, path)
    return path


# -- encode_video ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix,fmt", [(".avi", "avi"), (".mp4", "mp4"), (".mkv", "matroska")])
def test_encode_video_structure(tmp_path, suffix, fmt):
    frames = [np.full((120, 160, 3), 8 * t, np.uint8) for t in range(30)]
    path = tmp_path / f"v{suffix}"
    assert encode_video(frames, path, width=176, height=144, gop_size=10) == 30
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    decoded = decode_all(path)
    assert len(decoded) == 30
    assert [f.pict_type for f in decoded] == ([1] + [2] * 9) * 3
    assert (decoded[0].width, decoded[0].height) == (176, 144)
    with av.open(str(path)) as c:
        assert fmt in c.format.name and c.streams.video[0].codec_context.name == "mpeg4"


def test_encode_video_empty_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        encode_video([], tmp_path / "empty.avi")
    assert list(tmp_path.iterdir()) == []


def test_encode_video_error_midway_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((64, 64, 3), np.uint8)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        encode_video(frames(), tmp_path / "x.avi")
    assert not any(p.name.endswith(TMP_MARK) or p.suffix == ".avi" for p in tmp_path.iterdir())


# -- motion vectors -------------------------------------------------------------------------
def inner_blocks(box, width, height):
    """Centres (y, x) of 16x16 blocks entirely inside box = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    xs = [bx * 16 + 8 for bx in range(-(-x0 // 16), x1 // 16) if bx * 16 + 16 <= min(x1, width)]
    ys = [by * 16 + 8 for by in range(-(-y0 // 16), y1 // 16) if by * 16 + 16 <= min(y1, height)]
    return [(y, x) for y in ys for x in xs]


@pytest.mark.parametrize("shift", [(4, 2), (-3, 1)])
def test_mv_known_shift(tmp_path, shift):
    start = (64, 48) if shift[0] > 0 else (200, 48)
    vid = make_moving_square_video(tmp_path / "s.avi", shift=shift, n_frames=12, start=start)
    with CompressedVideo(vid.path) as v:
        g = v.read_gop(0)
    assert g.mv.shape == (11, 2, 256, 340)
    for t in range(11):  # P-frame t is frame t + 1
        x0, y0, x1, y1 = vid.box(t + 1)
        # blocks whose content comes from inside the square in the previous frame too
        inner = inner_blocks((x0 + abs(shift[0]), y0 + abs(shift[1]), x1 - abs(shift[0]), y1 - abs(shift[1])), 340, 256)
        vals = np.array([g.mv[t, :, y, x] for y, x in inner])
        assert len(inner) >= 9
        assert (vals == shift).all(axis=1).mean() >= 0.9, (t, vals)
        bg = np.ones((256, 340), bool)
        bg[max(y0 - 32, 0) : y1 + 32, max(x0 - 32, 0) : x1 + 32] = False
        assert (g.mv[t][:, bg] == 0).mean() >= 0.99


def test_mv_field_matches_loop_reading(real_clip):
    """The vectorised block-grid fill equals a plain loop over PyAV's side data."""
    frames = decode_all(real_clip)
    with CompressedVideo(real_clip) as v:
        gops = [v.read_gop(i) for i in range(v.num_gops)]
        h, w = v.height, v.width
    nonzero = 0
    for n, frame in enumerate(frames):
        if n % 12 == 0:
            assert frame.side_data.get("MOTION_VECTORS") is None
            continue
        expected = np.zeros((2, h, w), np.float32)
        for mv in frame.side_data.get("MOTION_VECTORS") or []:
            x0, y0 = mv.dst_x - mv.w // 2, mv.dst_y - mv.h // 2
            expected[0, max(y0, 0) : y0 + mv.h, max(x0, 0) : x0 + mv.w] = -mv.motion_x / mv.motion_scale
            expected[1, max(y0, 0) : y0 + mv.h, max(x0, 0) : x0 + mv.w] = -mv.motion_y / mv.motion_scale
        np.testing.assert_array_equal(gops[n // 12].mv[n % 12 - 1], expected)
        nonzero += int(np.count_nonzero(expected))
    assert nonzero > 0


def test_motion_vectors_equal_the_public_side_data_api(real_clip, monkeypatch):
    """`codec._motion_vectors` (PyAV's container class, no cycle on the frame) gives the bytes of
    `frame.side_data`, and the public-API fallback reads the same GOPs."""
    from csvr.data import codec

    frames = decode_all(real_clip)
    for frame in frames:
        public = frame.side_data.get("MOTION_VECTORS")
        ours = codec._motion_vectors(frame)
        assert (ours is None) == (public is None) and (ours is None or bytes(ours) == bytes(public))
    assert codec._PRIVATE_SIDE_DATA is True
    with CompressedVideo(real_clip) as v:
        fast = [v.read_gop(i, accumulate=True) for i in range(v.num_gops)]
        monkeypatch.setattr(codec, "_PRIVATE_SIDE_DATA", False)
        for i, g in enumerate(fast):
            np.testing.assert_array_equal(v.read_gop(i, accumulate=True).mv, g.mv)


# -- residuals ------------------------------------------------------------------------------
def test_warp_hand_values():
    ref = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    mv = np.zeros((2, 4, 6), np.float32)
    mv[0] = 1.0  # content moved right by 1: out[y, x] = ref[y, x - 1], x = 0 clamps
    out = warp(ref, mv)
    np.testing.assert_array_equal(out[:, 1:], ref[:, :-1])
    np.testing.assert_array_equal(out[:, 0], ref[:, 0])
    mv[0], mv[1] = 0.5, -0.5  # half-pel: mean of ref[y, x-1], ref[y, x], ref[y+1, x-1], ref[y+1, x]
    out = warp(ref, mv)
    r = ref.astype(np.float32)
    np.testing.assert_allclose(out[1, 2], (r[1, 1] + r[1, 2] + r[2, 1] + r[2, 2]) / 4)


def test_warp_fast_path_matches_generic_bilinear():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mv = rng.integers(-12, 13, (2, 40, 56)).astype(np.float32) / 2  # half-pel, some off-frame
    np.testing.assert_allclose(warp(ref, mv), _warp_bilinear(ref, mv), atol=1e-3)


@pytest.mark.parametrize("accumulate", [False, True])
def test_warp_plus_residual_is_frame(real_clip, accumulate):
    """Consistency only (holds by construction): warp(reference, mv) + residual == frame."""
    frames = [f.to_ndarray(format="rgb24") for f in decode_all(real_clip)]
    with CompressedVideo(real_clip) as v:
        g = v.read_gop(1, accumulate=accumulate)
    np.testing.assert_array_equal(g.iframe, frames[12].transpose(2, 0, 1))
    for t in range(11):
        ref = frames[12] if accumulate else frames[12 + t]
        rebuilt = warp(ref, g.mv[t]) + g.residual[t].transpose(1, 2, 0)
        np.testing.assert_allclose(rebuilt, frames[13 + t], atol=1e-3)


def test_residual_energy_below_frame_difference(tmp_path):
    """Independent check on a real clip: motion compensation explains most of the change."""
    clip = sorted((UCF / "UCF-101" / "Punch").glob("*.avi")) if UCF.exists() else []
    if not clip:
        pytest.skip(f"UCF slice absent: {UCF}")
    with av.open(str(clip[0])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in itertools.islice(c.decode(video=0), 24)]
    path = tmp_path / "punch.avi"
    encode_video(frames, path)
    decoded = [f.to_ndarray(format="rgb24").astype(np.float32) for f in decode_all(path)]
    with CompressedVideo(path) as v:
        g = v.read_gop(1)
    res = np.abs(g.residual).mean()
    diff = np.mean([np.abs(decoded[13 + t] - decoded[12 + t]).mean() for t in range(11)])
    assert res < 0.6 * diff, (res, diff)


def test_accumulate_known_shift(square):
    with CompressedVideo(square.path) as v:
        g = v.read_gop(0, accumulate=True)
    for t in range(11):
        x0, y0, _, _ = square.box(t + 1)
        # content points 16..79 px inside the square lie in fully-inside blocks in every frame
        acc = g.mv[t][:, y0 + 16 : y0 + 80, x0 + 16 : x0 + 80].reshape(2, -1)
        expected = np.array([[4 * (t + 1)], [2 * (t + 1)]])
        assert (acc == expected).all(axis=0).mean() >= 0.95, (t, np.unique(acc, axis=1))
    assert np.abs(g.mv[:, :, :16, 250:]).max() == 0  # static background


# -- GOP structure, seeking, T --------------------------------------------------------------
def test_gops_from_packets_match_decoding_and_seek_reads_one_gop(tmp_path):
    vid = make_moving_square_video(
        tmp_path / "long.avi", shift=(1, 0), n_frames=124, gop_size=12, size=(160, 128), square=32, start=(4, 40)
    )
    frames = decode_all(vid.path)
    keys = [n for n, f in enumerate(frames) if f.pict_type == 1]
    with CompressedVideo(vid.path) as v:
        assert v.num_gops == len(keys) == 11
        assert v.gop_lengths == list(np.diff(keys + [len(frames)]))  # [12] * 10 + [4]
        assert v.gop_lengths[-1] == 4 and (v.width, v.height) == (160, 128)
        g = v.read_gop(9)
        assert v.frames_decoded <= 12 + 2  # only GOP 9, not the 108 frames before it
        np.testing.assert_array_equal(g.iframe, frames[108].to_ndarray(format="rgb24").transpose(2, 0, 1))
        before = v.frames_decoded
        last = v.read_gop(10)  # 1 I + 3 P: zero-padded to T = 11
        assert v.frames_decoded - before <= 4 + 2
        assert last.mv.shape == (11, 2, 128, 160)
        assert np.abs(last.mv[:3]).max() > 0
        assert not last.mv[3:].any() and not last.residual[3:].any()


@pytest.mark.parametrize("accumulate", [False, True])
def test_num_p_subsamples_evenly_and_pads(square, accumulate):
    with CompressedVideo(square.path) as v:
        full = v.read_gop(1, accumulate=accumulate)
        four = v.read_gop(1, num_p=4, accumulate=accumulate)
        long = v.read_gop(1, num_p=15, accumulate=accumulate)
    picks = [0, 3, 7, 10]  # round(linspace(0, 10, 4))
    np.testing.assert_array_equal(four.mv, full.mv[picks])
    np.testing.assert_allclose(four.residual, full.residual[picks])
    np.testing.assert_array_equal(long.mv[:11], full.mv)
    assert long.mv.shape[0] == 15 and not long.mv[11:].any() and not long.residual[11:].any()


# -- errors ---------------------------------------------------------------------------------
def _shared(name):
    path = VIDEOS / name
    if not path.exists():
        pytest.skip(f"shared videos absent: {VIDEOS}")
    return path


UNSUPPORTED = {
    "bframes.avi": lambda d: make_mpeg4_with_bframes(d / "bframes.avi"),
    "bframes.mp4": lambda d: make_mpeg4_with_bframes(d / "bframes.mp4"),
    "h264.mp4": lambda d: make_h264(d / "h264.mp4"),
    "intra.avi": lambda d: make_all_intra(d / "intra.avi"),
    "Megamind.avi": lambda d: _shared("Megamind.avi"),
    "tree.avi": lambda d: _shared("tree.avi"),
    "box.mp4": lambda d: _shared("box.mp4"),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_videos(tmp_path, name):
    path = UNSUPPORTED[name](tmp_path)
    with pytest.raises(UnsupportedVideoError) as info:
        read_all(path)
    assert str(path) in str(info.value) and "csvr prepare SRC DST" in str(info.value)


@pytest.fixture(scope="module")
def good48(tmp_path_factory):
    return make_moving_square_video(tmp_path_factory.mktemp("g") / "good.avi", n_frames=48).path


CORRUPT = {
    "truncated.avi": lambda d, good: truncate_copy(good, d / "truncated.avi", 0.5),
    "truncated.mp4": lambda d, good: truncate_copy(
        encode_video((f.to_ndarray(format="rgb24") for f in decode_all(good)), d / "g.mp4") and d / "g.mp4",
        d / "truncated.mp4",
        0.5,
    ),
    "flipped.avi": lambda d, good: flip_bytes_copy(good, d / "flipped.avi"),
    "random.avi": lambda d, good: write_random_bytes(d / "random.avi"),
    "empty.avi": lambda d, good: write_empty(d / "empty.avi"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_videos(tmp_path, good48, name):
    read_all(good48)  # the undamaged original reads fine
    path = CORRUPT[name](tmp_path, good48)
    with pytest.raises(CorruptVideoError) as info:
        read_all(path)
    assert str(path) in str(info.value)


def test_packet_table_cache_sees_a_replaced_file(tmp_path, good48):
    """The per-process packet table cache must not hide a file changed at the same path."""
    path = tmp_path / "v.avi"
    path.write_bytes(Path(good48).read_bytes())
    read_all(path)  # its table is cached now
    truncate_copy(good48, path, 0.5)  # rewritten in place: same path, another size
    with pytest.raises(CorruptVideoError, match="truncated"):
        read_all(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.avi"):
        CompressedVideo(tmp_path / "nope.avi")
