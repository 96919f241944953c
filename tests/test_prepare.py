"""`csvr prepare` on the real shared clips, UCF clips and damaged files made here."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest

from csvr.data.codec import CompressedVideo
from csvr.data.encode import TMP_MARK, encode_video, temp_path_for
from csvr.data.prepare import (
    FAILURES_NAME,
    MANIFEST_NAME,
    PrepareError,
    check_output,
    ensure_prepared,
    main,
    prepare_tree,
)
from tests.videos_util import (
    UCF,
    VIDEOS,
    make_all_intra,
    make_moving_square_video,
    make_mpeg4_with_bframes,
    textured,
    truncate_copy,
    write_random_bytes,
)

REPO = Path(__file__).resolve().parents[1]


def structure(path: Path) -> tuple[int, int, list[int]]:
    """(width, height, pict types of every frame) by decoding."""
    with av.open(str(path)) as c:
        types = [f.pict_type for f in c.decode(video=0)]
        cc = c.streams.video[0].codec_context
        return cc.width, cc.height, types


def files(root: Path) -> dict[str, float]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory):
    """src: the 4 shared clips (symlinked) in two folders + a truncated one; prepared once."""
    if not VIDEOS.exists():
        pytest.skip(f"shared videos absent: {VIDEOS}")
    base = tmp_path_factory.mktemp("real")
    src, dst = base / "src", base / "dst"
    for rel, name in [
        ("a/Megamind.avi", "Megamind.avi"),
        ("a/Megamind_bugy.avi", "Megamind_bugy.avi"),
        ("b/tree.avi", "tree.avi"),
        ("b/box.mp4", "box.mp4"),
    ]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).symlink_to((VIDEOS / name).resolve())
    truncate_copy(VIDEOS / "Megamind.avi", src / "b" / "damaged.avi", 0.4)
    (src / "notes.txt").write_text("not a video")
    report = prepare_tree(src, dst, workers=2, progress=False)
    return src, dst, report


@pytest.mark.slow
def test_prepare_real_clips(real_tree):
    src, dst, report = real_tree
    assert sorted(report.written) == ["a/Megamind.avi", "a/Megamind_bugy.avi", "b/box.mp4", "b/tree.avi"]
    assert list(report.failed) == ["b/damaged.avi"] and "damaged.avi" in report.failed["b/damaged.avi"]
    lines = (dst / FAILURES_NAME).read_text().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["b/damaged.avi"]
    assert not (dst / "b" / "damaged.avi").exists() and not (dst / "notes.txt").exists()
    assert not [p for p in dst.rglob("*") if p.name.endswith(TMP_MARK)]
    manifest = json.loads((dst / MANIFEST_NAME).read_text())
    assert manifest["files"] == 4 and manifest["settings"]["gop_size"] == 12
    frames = {"a/Megamind.avi": 270, "b/tree.avi": 68}  # tree.avi declares 444, holds 68
    for rel in report.written:
        w, h, types = structure(dst / rel)
        assert (w, h) == (340, 256)
        assert types == [1 if n % 12 == 0 else 2 for n in range(len(types))]  # GOP 12, no B
        if rel in frames:
            assert len(types) == frames[rel]
        with CompressedVideo(dst / rel) as v:
            g = v.read_gop(v.num_gops // 2)
            assert g.mv.shape == (11, 2, 256, 340)
    with av.open(str(dst / "b" / "box.mp4")) as c:
        assert "mp4" in c.format.name  # container follows the suffix


def test_second_run_skips_and_exit_status(real_tree, capsys):
    src, dst, _ = real_tree
    before = files(dst)
    code = main([str(src), str(dst), "--workers", "1", "--no-progress"])
    assert code == 1  # the damaged file still fails
    assert "damaged.avi" in capsys.readouterr().err
    after = files(dst)
    for rel in ["a/Megamind.avi", "a/Megamind_bugy.avi", "b/box.mp4", "b/tree.avi"]:
        assert after[rel] == before[rel]  # not rewritten


def small_tree(root: Path, n: int = 3) -> Path:
    for k in range(n):
        make_moving_square_video(
            root / f"c{k % 2}" / f"v{k}.avi", shift=(2, 1), n_frames=24, size=(160, 128), square=32, seed=k
        )
    return root


def test_leftover_temp_file_is_not_a_finished_file(tmp_path):
    src, dst = small_tree(tmp_path / "src", 2), tmp_path / "dst"
    leftover = temp_path_for(dst / "c0" / "v0.avi")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a video")
    report = prepare_tree(src, dst, workers=1, progress=False, width=160, height=128)
    assert sorted(report.written) == ["c0/v0.avi", "c1/v1.avi"] and not report.skipped
    assert not leftover.exists()
    assert len(structure(dst / "c0" / "v0.avi")[2]) == 24
    again = prepare_tree(src, dst, workers=1, progress=False, width=160, height=128)
    assert sorted(again.skipped) == ["c0/v0.avi", "c1/v1.avi"] and not again.written


def test_resume_after_kill(tmp_path):
    src, dst = small_tree(tmp_path / "src", 6), tmp_path / "dst"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "csvr.data.prepare",
            str(src),
            str(dst),
            "--workers",
            "1",
            "--no-progress",
            "--width",
            "160",
            "--height",
            "128",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.endswith(TMP_MARK) for p in dst.rglob("*")) if dst.exists() else False:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (dst / MANIFEST_NAME).exists() or proc.returncode == 0
    for p in dst.rglob("*.avi"):  # whatever has a final name is complete
        assert len(structure(p)[2]) == 24
    report = prepare_tree(src, dst, workers=1, progress=False, width=160, height=128)
    assert report.ok and report.num_files == 6
    assert not [p for p in dst.rglob("*") if p.name.endswith(TMP_MARK)]
    assert all(len(structure(dst / f"c{k % 2}" / f"v{k}.avi")[2]) == 24 for k in range(6))


def test_settings_mismatch_and_nested_dst(tmp_path):
    src, dst = small_tree(tmp_path / "src", 1), tmp_path / "dst"
    prepare_tree(src, dst, workers=1, progress=False, width=160, height=128)
    with pytest.raises(ValueError, match="other settings"):
        prepare_tree(src, dst, workers=1, progress=False)
    with pytest.raises(ValueError, match="must not contain"):
        prepare_tree(src, src / "out", workers=1, progress=False)


def test_ensure_prepared_uses_cache_never_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("CSVR_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    make_mpeg4_with_bframes(src / "a" / "x.avi")
    make_mpeg4_with_bframes(src / "b" / "y.mp4")
    before = files(src)
    out = ensure_prepared(src, workers=1)
    assert (tmp_path / "cache" / "prepared") in out.parents and files(src) == before
    assert (out / MANIFEST_NAME).exists()
    assert structure(out / "a" / "x.avi")[2] == [1 if n % 12 == 0 else 2 for n in range(24)]
    stamp = files(out)
    assert ensure_prepared(src, workers=1) == out and files(out) == stamp  # cached, not redone
    assert ensure_prepared(out) == out  # a tree with a manifest is used as it is

    write_random_bytes(src / "b" / "bad.avi")
    with pytest.raises(PrepareError, match="bad.avi"):
        ensure_prepared(src, workers=1)
    assert files(src) == {**before, "b/bad.avi": files(src)["b/bad.avi"]}
    assert ensure_prepared(src, workers=1, skip_failed=True) != src


def test_ucf_clips_all_get_the_same_structure(tmp_path):
    """BabyCrawling (B-frames, one I-frame) and Punch/PushUps (GOP 12) come out alike."""
    if not UCF.exists():
        pytest.skip(f"UCF slice absent: {UCF}")
    src = tmp_path / "UCF-101"
    for cls in ["BabyCrawling", "Punch", "PushUps"]:
        clip = sorted((UCF / "UCF-101" / cls).glob("*.avi"), key=lambda p: p.stat().st_size)[0]
        (src / cls).mkdir(parents=True)
        (src / cls / clip.name).symlink_to(clip.resolve())
    report = prepare_tree(src, tmp_path / "out", workers=2, progress=False)
    assert report.ok and len(report.written) == 3
    for rel in report.written:
        _, _, types = structure(tmp_path / "out" / rel)
        assert types == [1 if n % 12 == 0 else 2 for n in range(len(types))]


def test_help():
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0


def write_png(path: Path, width: int = 64, height: int = 48) -> Path:
    """A real grey PNG (written by hand: signature, IHDR, IDAT, IEND)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([128]) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    return path


def test_what_the_reader_rejects_fails_at_prepare_time(tmp_path, capsys):
    """A 1-frame video and a PNG named .mp4 are failures named on screen and in the list."""
    src, dst = small_tree(tmp_path / "src", 1), tmp_path / "dst"
    frame = textured(np.random.default_rng(0), 128, 160)
    encode_video([frame], src / "c0" / "one_frame.avi", width=160, height=128)
    write_png(src / "c1" / "image.mp4")
    code = main([str(src), str(dst), "--workers", "1", "--no-progress", "--width", "160", "--height", "128"])
    assert code == 1
    err = capsys.readouterr().err
    listed = dict(ln.split("\t") for ln in (dst / FAILURES_NAME).read_text().splitlines())
    assert sorted(listed) == ["c0/one_frame.avi", "c1/image.mp4"]
    assert "only 1 decodable frame" in listed["c0/one_frame.avi"]
    assert "only 1 decodable frame" in listed["c1/image.mp4"] and "png" in listed["c1/image.mp4"]
    assert "c0/one_frame.avi" in err and "c1/image.mp4" in err
    assert not (dst / "c0" / "one_frame.avi").exists() and not (dst / "c1" / "image.mp4").exists()
    assert (dst / "c0" / "v0.avi").exists()


def test_check_output_names_the_file_and_the_reason(tmp_path):
    """The reader check that guards every output: an all-intra file is refused by name."""
    intra = make_all_intra(tmp_path / "intra.avi", n_frames=6, size=(64, 48))
    with pytest.raises(PrepareError, match=r"clip\.avi: the re-encoded output fails the reader \(.*no P-frames"):
        check_output(intra, "clip.avi")
    good = make_moving_square_video(tmp_path / "good.avi", n_frames=13, size=(64, 48), square=16, start=(8, 8)).path
    check_output(good)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gop-size", "1"], "gop_size (--gop-size) must be >= 2"),
        (["--gop-size", "0"], "gop_size (--gop-size) must be >= 2"),
        (["--width", "0"], "width (--width) must be an integer >= 16"),
        (["--workers", "-3"], "workers (--workers) must be an integer >= 1"),
        (["--qscale", "40"], "qscale (--qscale) must be an MPEG-4 quantiser 1..31"),
    ],
)
def test_bad_options_are_refused_up_front(tmp_path, capsys, args, message):
    src = small_tree(tmp_path / "src", 1)
    assert main([str(src), str(tmp_path / "dst"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dst").exists()


def test_symlinks_followed_loops_and_broken_links_named(tmp_path):
    real = small_tree(tmp_path / "elsewhere", 2)  # c0/v0.avi, c1/v1.avi
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "linked_class").symlink_to(real / "c0", target_is_directory=True)  # a symlinked class folder
    (src / "own").mkdir()
    (src / "own" / "linked.avi").symlink_to(real / "c1" / "v1.avi")  # a symlinked file
    (src / "own" / "loop").symlink_to(src, target_is_directory=True)  # back to the root
    (src / "own" / "gone.avi").symlink_to(tmp_path / "nowhere.avi")
    report = prepare_tree(src, dst, workers=1, progress=False, width=160, height=128)
    assert sorted(report.written) == ["linked_class/v0.avi", "own/linked.avi"]
    assert sorted(report.failed) == ["own/gone.avi", "own/loop"]
    assert "symlink loop" in report.failed["own/loop"] and str(src) in report.failed["own/loop"]
    assert "cannot be followed" in report.failed["own/gone.avi"]
    listed = (dst / FAILURES_NAME).read_text()
    assert "own/loop\t" in listed and "own/gone.avi\t" in listed
    assert not (dst / "linked_class").is_symlink() and len(structure(dst / "linked_class" / "v0.avi")[2]) == 24


def test_force_rewrites_finished_files(tmp_path):
    src, dst = small_tree(tmp_path / "src", 1), tmp_path / "dst"
    prepare_tree(src, dst, workers=1, progress=False, width=160, height=128)
    (dst / "c0" / "v0.avi").write_bytes(b"not a video any more")
    assert prepare_tree(src, dst, workers=1, progress=False, width=160, height=128).skipped == ["c0/v0.avi"]
    again = prepare_tree(src, dst, workers=1, progress=False, width=160, height=128, force=True)
    assert again.written == ["c0/v0.avi"] and len(structure(dst / "c0" / "v0.avi")[2]) == 24
