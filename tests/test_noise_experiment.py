"""`csvr experiment noise`: region masks, layer-1 activity and the --quick run end to end
(real synthetic MPEG-4 videos, real SpikingJelly neurons, real Lightning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from csvr.evidence import noise

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "noise.yaml"


def test_region_masks_by_hand() -> None:
    clean = torch.zeros(1, 1, 3, 2, 2, 3)  # [B, S, T, 2, H, W]
    clean[0, 0, :, 0, 0, 0] = 1.0  # pixel (0, 0) really moves in every frame
    noisy = clean.clone()
    noisy[0, 0, 1, 1, 1, 1] = 0.5  # spurious motion at (1, 1), frame 1 only
    noisy[0, 0, 2, 0, 0, 0] += 0.5  # and on top of the real motion at (0, 0), frame 2
    m = noise.region_masks(noisy, clean)
    assert m["noise_events"].nonzero().tolist() == [[0, 0, 1, 1, 1]]  # background noise only
    assert m["foreground"][0, 0, :, 0, 0].all() and int(m["foreground"].sum()) == 3
    # clean background: the 4 pixels that never move and never get noise, in all 3 frames
    assert int(m["clean_background"].sum()) == 4 * 3
    assert not m["clean_background"][0, 0, :, 1, 1].any() and not m["clean_background"][0, 0, :, 0, 0].any()


def test_layer1_activity_matches_the_layer_called_directly() -> None:
    from csvr.models import CSVRNet

    torch.manual_seed(0)
    net = CSVRNet(num_classes=3, variant="tiny", temporal="conv", img_size=32, num_segments=1, modalities=("mv",))
    batch = {"mv": torch.randn(2, 1, 3, 2, 32, 32)}
    everywhere = {"all": torch.ones(2, 1, 3, 32, 32, dtype=torch.bool)}
    got = noise.layer1_activity(net, batch, everywhere)
    net.eval()
    with torch.no_grad():
        direct = net.stm_mv.layers[0](batch["mv"].permute(2, 0, 1, 3, 4, 5).flatten(1, 2))
    assert got["mv"]["all"] == pytest.approx(float(direct.abs().mean()), rel=1e-5)
    # a mask covering only the first frame averages only that frame's output
    first = torch.zeros(2, 1, 3, 32, 32, dtype=torch.bool)
    first[:, :, 0] = True
    got = noise.layer1_activity(net, batch, {"first": first})
    assert got["mv"]["first"] == pytest.approx(float(direct[0].abs().mean()), rel=1e-5)


@pytest.mark.slow
def test_quick_experiment_end_to_end(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CSVR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "noise"
    assert noise.main(["noise", "--quick", "--config", str(CONFIG), "--out", str(out), "--threads", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    runs = res["runs"]
    assert sorted((r["level"], r["temporal"]) for r in runs) == sorted(
        (lev, t) for lev in noise.QUICK_LEVELS for t in noise.TEMPORAL
    )
    for r in runs:
        assert 0.0 <= r["test_acc"] <= 1.0
        assert r["steps"] == 2
        act = r["layer1_activity"]
        assert set(act) == {"mv", "residual"}
        for stream in act.values():
            assert set(stream) == set(noise.REGIONS)
            assert all(v is None or v >= 0 for v in stream.values())
            if r["temporal"] == "lif":  # a spike rate
                assert all(v is None or v <= 1 for v in stream.values())
        if r["level"] == 0.0:  # nothing was added: no noise region at all
            assert r["region_pixels"]["noise_events"] == 0 and act["mv"]["noise_events"] is None
        else:
            assert r["region_pixels"]["noise_events"] > 0 and act["mv"]["noise_events"] is not None
        assert r["region_pixels"]["clean_background"] > 0
    assert set(res["summary"]) == {"0", "0.4"}
    md = (out / "results.md").read_text()
    assert "| noise rate | lif | convgru | conv |" in md and "| 0.4 |" in md
    assert (out / "noise_robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        noise.main(["noise", "--levels", "1.5", "--config", str(CONFIG)])
    assert "noise levels must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        noise.main(["noise", "--config", str(CONFIG), "--trainer.max_epochs=3", "--bogus=1"])
    assert "unknown arguments ['--bogus=1']" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        noise.main(["noise", "--config", "missing.yaml"])
