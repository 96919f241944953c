"""`csvr lif-response`: the STM neuron filters low-rate pulse trains (numbers, not pixels)."""

from __future__ import annotations

import math

import pytest
import torch

from csvr.evidence import lif_response as lr


def test_first_steps_match_hand_computed_potentials() -> None:
    # tau 2, theta 1, A 1.8, a pulse every 2 steps. By hand (h = v + (x - v)/2, soft reset):
    # t0: 0.9 | t1: 0.45 | t2: 0.225 + 0.9 = 1.125 -> spike, v = 0.125 | t3: 0.0625
    # t4: 0.03125 + 0.9 = 0.93125 | t5: 0.465625 | t6: 0.2328125 + 0.9 = 1.1328125 -> spike
    r = lr.simulate(lr.pulse_train(7, 2, 1.8), tau=2.0, threshold=1.0)
    want_h = [0.9, 0.45, 1.125, 0.0625, 0.93125, 0.465625, 1.1328125]
    assert r.h.tolist() == pytest.approx(want_h, abs=1e-6)
    assert r.spikes.tolist() == [0, 0, 1, 0, 0, 0, 1]


def test_critical_period_closed_form() -> None:
    # A = 1.8, tau = 2, theta = 1: d = 0.5, 1 - A/(tau theta) = 0.1 -> P* = log2(10)
    assert lr.critical_period(2.0, 1.0, 1.8) == pytest.approx(math.log2(10))
    assert lr.critical_rate(2.0, 1.0, 1.8) == pytest.approx(1 / math.log2(10))
    assert lr.critical_period(2.0, 1.0, 2.5) == math.inf  # one pulse crosses: any rate fires
    assert lr.critical_rate(2.0, 1.0, 2.5) == 0.0
    assert lr.critical_period(1.0, 1.0, 0.5) == 0.0  # no memory, pulse below threshold: never


@pytest.mark.parametrize("tau,theta", [(2.0, 1.0), (4.0, 0.7), (8.0, 1.3)])
def test_trains_below_critical_rate_never_fire_and_above_fire(tau: float, theta: float) -> None:
    amp = lr.default_amplitude(tau, theta)
    p_star = lr.critical_period(tau, theta, amp)
    assert 1 < p_star < 24
    for period in range(1, 25):
        r = lr.simulate(lr.pulse_train(400, period, amp), tau, theta)
        if period > p_star:  # lower rate than critical: silent however long it runs
            assert r.spikes.sum() == 0, period
            assert float(r.h.max()) < theta
        else:
            n = lr.pulses_to_first_spike(period, tau, theta, amp)
            first = int(torch.nonzero(r.spikes)[0])
            assert first == (n - 1) * period, (period, n, first)  # fires at the predicted pulse
            assert r.rate > 0


def test_sweep_rates_rise_with_input_rate() -> None:
    periods = [16, 8, 4, 2, 1]
    rates = lr.sweep(periods, [2.0, 4.0], threshold=1.0, amplitude=1.8, steps=80)
    for tau, ys in rates.items():
        assert ys == sorted(ys), tau  # monotone in the input rate
        crit = lr.critical_rate(tau, 1.0, 1.8)
        for p, y in zip(periods, ys):
            assert (y > 0) == (1 / p > crit), (tau, p, y)


def test_cli_prints_rates_and_writes_figures(tmp_path, capsys) -> None:
    out, sweep_out = tmp_path / "lif.png", tmp_path / "sweep.png"
    assert lr.main(["--out", str(out), "--sweep-out", str(sweep_out), "--steps", "24"]) == 0
    text = capsys.readouterr().out
    assert "0.000" in text and "0.250" in text  # low train silent, high train 1 spike / 4 steps
    assert "0.3010" in text  # critical rate 1/log2(10)
    for f in (out, sweep_out):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000


def test_threshold_is_read_from_a_checkpoint(tmp_path) -> None:
    state = {
        "net.stm_mv.layers.0.neuron.threshold": torch.tensor([0.5, 1.5, 1.0]),
        "net.stm_mv.layers.1.neuron.threshold": torch.tensor([9.0]),
    }
    torch.save({"state_dict": state}, tmp_path / "a.ckpt")
    assert lr.read_checkpoint_neuron(tmp_path / "a.ckpt") == (None, pytest.approx(1.0))
    state["net.stm_mv.layers.0.neuron.w"] = torch.tensor(0.0)  # learnt tau: 1/sigmoid(0) = 2
    torch.save({"state_dict": state}, tmp_path / "b.ckpt")
    assert lr.read_checkpoint_neuron(tmp_path / "b.ckpt") == (pytest.approx(2.0), pytest.approx(1.0))
    torch.save({"state_dict": {"net.head.weight": torch.zeros(1)}}, tmp_path / "c.ckpt")
    with pytest.raises(KeyError, match="temporal=lif"):
        lr.read_checkpoint_neuron(tmp_path / "c.ckpt")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        lr.read_checkpoint_neuron(tmp_path / "missing.ckpt")


def test_threshold_keys_match_the_real_model(tmp_path) -> None:
    from csvr.models import CSVRNet

    net = CSVRNet(num_classes=3, variant="tiny", img_size=32, num_segments=1)
    with torch.no_grad():
        net.stm_residual.layers[0].neuron.threshold.fill_(0.75)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "m.ckpt")
    assert lr.read_checkpoint_neuron(tmp_path / "m.ckpt", "residual", 0) == (None, pytest.approx(0.75))
    assert lr.read_checkpoint_neuron(tmp_path / "m.ckpt", "mv", 2) == (None, pytest.approx(1.0))
