"""`csvr lif-response`: the temporal sensitivity of one STM neuron (paper appendix Fig. 1).

One ``ThresholdLIFNode`` (the STM's own neuron: decay_input, soft reset, threshold theta) is
driven from rest by a pulse train: amplitude A at every step t with t % P == 0. Charging is

    h[t] = v[t-1] + (x[t] - v[t-1]) / tau,     d = 1 - 1/tau,

so without spikes the potential right after the n-th pulse is (A/tau)(1 - d^(nP))/(1 - d^P),
which rises towards (A/tau)/(1 - d^P). The neuron fires iff that limit exceeds theta, i.e.
iff the period is shorter than the critical period

    P* = ln(1 - A/(tau*theta)) / ln(d)          (P* = inf when A >= tau*theta),

and the critical input rate is 1/P* pulses per step. A train at a lower rate never fires,
however long it runs: rare (spurious) motion is filtered, frequent motion passes.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from csvr.models.lif import ThresholdLIFNode

DEFAULT_TAUS = (1.5, 2.0, 4.0, 8.0)


@dataclass
class Response:
    """One simulation: input x [T], pre-reset potential h [T], spikes [T] (0/1)."""

    x: torch.Tensor
    h: torch.Tensor
    spikes: torch.Tensor

    @property
    def rate(self) -> float:
        """Output spikes per step."""
        return float(self.spikes.mean())


def _check(tau: float, threshold: float, amplitude: float) -> None:
    if tau < 1.0:
        raise ValueError(f"tau must be >= 1 (decay 1 - 1/tau in [0, 1)), got {tau}")
    if threshold <= 0 or amplitude <= 0:
        raise ValueError(f"threshold and amplitude must be > 0, got {threshold} and {amplitude}")


def default_amplitude(tau: float, threshold: float) -> float:
    """0.9 * tau * theta: one pulse from rest charges the neuron to 90% of its threshold."""
    return 0.9 * tau * threshold


def pulse_train(steps: int, period: int, amplitude: float) -> torch.Tensor:
    """[steps] float: `amplitude` at every step t with t % period == 0, else 0."""
    if period < 1 or steps < 1:
        raise ValueError(f"period and steps must be >= 1, got {period} and {steps}")
    x = torch.zeros(steps)
    x[::period] = amplitude
    return x


def simulate(x: torch.Tensor, tau: float = 2.0, threshold: float = 1.0) -> Response:
    """Drive one ThresholdLIFNode (soft reset, decay_input) from rest with x [T]."""
    node = ThresholdLIFNode(
        None, tau=tau, v_threshold=threshold, learn_threshold=False, step_mode="m", store_v_pre_seq=True
    )
    with torch.no_grad():
        spikes = node(x.float().view(-1, 1))
    return Response(x.float(), node.v_pre_seq.view(-1).clone(), spikes.view(-1).clone())


def critical_period(tau: float, threshold: float, amplitude: float) -> float:
    """P*: a pulse train of period P fires (eventually) iff P < P*; inf if every train fires,
    0 if none does."""
    _check(tau, threshold, amplitude)
    k = amplitude / (tau * threshold)
    if k >= 1.0:
        return math.inf  # one pulse from rest already reaches the threshold
    d = 1.0 - 1.0 / tau
    if d <= 0.0:
        return 0.0  # tau == 1: no memory, and one pulse stays below threshold
    return math.log(1.0 - k) / math.log(d)


def critical_rate(tau: float, threshold: float, amplitude: float) -> float:
    """1/P* pulses per step: trains at a higher rate fire, at this rate or lower never."""
    p = critical_period(tau, threshold, amplitude)
    return 0.0 if math.isinf(p) else math.inf if p == 0.0 else 1.0 / p


def pulses_to_first_spike(period: int, tau: float, threshold: float, amplitude: float) -> int | None:
    """How many pulses (from rest) until the first spike: the least n with
    (A/tau)(1 - d^(nP))/(1 - d^P) >= theta; None if the train never fires."""
    _check(tau, threshold, amplitude)
    if not period < critical_period(tau, threshold, amplitude):
        return None
    k, d = amplitude / (tau * threshold), 1.0 - 1.0 / tau
    if k >= 1.0:
        return 1
    need = 1.0 - (1.0 - d**period) / k  # d^(nP) must drop to this
    return max(1, math.ceil(math.log(need) / (period * math.log(d)) - 1e-9))


def sweep(
    periods: list[int], taus: list[float], threshold: float, amplitude: float, steps: int = 240
) -> dict[float, list[float]]:
    """tau -> output spike rate for each input period (trains of `steps` steps)."""
    return {tau: [simulate(pulse_train(steps, p, amplitude), tau, threshold).rate for p in periods] for tau in taus}


def read_checkpoint_neuron(path: str | Path, stm: str = "mv", layer: int = 0) -> tuple[float | None, float]:
    """(tau or None, mean learnt threshold) of `stm_<stm>.layers.<layer>.neuron` in a
    Lightning checkpoint; tau only when it was learnt (learn_tau), else None."""
    from csvr.checkpoint import load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path)  # weights_only: a crafted file cannot run code
    state = ckpt.get("state_dict", ckpt)
    prefix = f"stm_{stm}.layers.{layer}.neuron."
    keys = [k for k in state if k.endswith(prefix + "threshold")]
    if not keys:
        raise KeyError(
            f"{path} holds no LIF threshold '*{prefix}threshold': was it trained with "
            f"temporal=lif and the {stm!r} modality? Pass --tau/--threshold instead."
        )
    theta = float(state[keys[0]].float().mean())
    w = state.get(keys[0][: -len("threshold")] + "w")
    tau = None if w is None else float(1.0 / torch.sigmoid(w.float()))
    return tau, theta


# ---------------------------------------------------------------------------- figures
def plot_response(
    low: Response, high: Response, periods: tuple[int, int], tau: float, threshold: float, out: str | Path
) -> Path:
    """Two panels (low rate, high rate): potential, threshold, input pulses and spikes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    top = max(float(low.h.max()), float(high.h.max()), threshold) * 1.3
    for ax, r, p, name in zip(axes, (low, high), periods, ("low", "high")):
        t = torch.arange(len(r.x))
        pulses = t[r.x > 0]
        ax.vlines(
            pulses,
            0,
            r.x[r.x > 0] / tau,
            colors="tab:gray",
            alpha=0.45,
            lw=3,
            label=f"input pulse (A={float(r.x.max()):.2f}, drawn as A/tau)",
        )
        ax.plot(t, r.h, "-o", ms=3, color="tab:blue", label="membrane potential (pre-reset)")
        ax.axhline(threshold, color="tab:red", ls="--", label=f"threshold = {threshold:.3g}")
        fired = t[r.spikes > 0]
        ax.plot(fired, torch.full((len(fired),), top * 0.93), "v", color="tab:red", ms=8, label="output spike")
        ax.set_title(f"{name} rate: 1 pulse / {p} steps ({1 / p:.3f}/step)\noutput {r.rate:.3f} spikes/step")
        ax.set_xlabel("time step")
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("membrane potential")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=9)
    rc = critical_rate(tau, threshold, float(max(low.x.max(), high.x.max())))
    fig.suptitle(f"LIF temporal sensitivity (tau={tau:.3g}, soft reset); critical input rate {rc:.3f}/step")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, out)


def plot_sweep(
    periods: list[int], rates: dict[float, list[float]], threshold: float, amplitude: float, out: str | Path
) -> Path:
    """Output spike rate vs input rate, one line per tau, critical rates dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [1.0 / p for p in periods]
    for i, (tau, ys) in enumerate(rates.items()):
        colour = f"C{i}"
        rc = critical_rate(tau, threshold, amplitude)
        note = "fires at any rate" if rc == 0 else f"critical rate {rc:.3f}"
        ax.plot(x, ys, "-o", ms=4, color=colour, label=f"tau={tau:g} ({note})")
        if 0 < rc <= 1:
            ax.axvline(rc, color=colour, ls=":", alpha=0.8)
    ax.set_xlabel("input rate (pulses per step)")
    ax.set_ylabel("output rate (spikes per step)")
    ax.set_title(f"LIF output vs input rate (A={amplitude:.3g}, threshold={threshold:.3g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # atomic: no half-written figure
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """`csvr lif-response --out lif_response.png`: one LIF neuron under a low-rate and a
    high-rate pulse train of the same amplitude (and an input-rate sweep)."""
    ap = argparse.ArgumentParser(prog="csvr lif-response", description=main.__doc__)
    ap.add_argument("--out", default="lif_response.png", help="the two-panel figure (PNG)")
    ap.add_argument("--sweep-out", default=None, help="also write the output-vs-input-rate sweep (PNG)")
    ap.add_argument(
        "--ckpt_path",
        "--ckpt-path",
        dest="ckpt_path",
        default=None,
        help="read the learnt threshold (and tau, if learnt) of a trained checkpoint's STM",
    )
    ap.add_argument("--stm", choices=("mv", "residual"), default="mv", help="which STM of the checkpoint")
    ap.add_argument("--layer", type=int, default=0, help="which STM layer of the checkpoint (0-2)")
    ap.add_argument("--tau", type=float, default=2.0, help="membrane time constant (the STM default)")
    ap.add_argument("--threshold", type=float, default=1.0, help="firing threshold (the STM's initial value)")
    ap.add_argument("--amplitude", type=float, default=None, help="pulse amplitude (default 0.9*tau*threshold)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--low-period", type=int, default=8, help="steps between pulses of the low-rate train")
    ap.add_argument("--high-period", type=int, default=2, help="steps between pulses of the high-rate train")
    a = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    tau, theta = a.tau, a.threshold
    source = "STM defaults"
    if a.ckpt_path:
        ck_tau, theta = read_checkpoint_neuron(a.ckpt_path, a.stm, a.layer)
        tau = ck_tau if ck_tau is not None else tau
        source = f"{a.ckpt_path} (stm_{a.stm}.layers.{a.layer}: mean learnt threshold)"
    if theta <= 0:
        raise SystemExit(f"csvr lif-response: threshold {theta:.4g} <= 0 fires on silence; nothing to show")
    amp = a.amplitude if a.amplitude is not None else default_amplitude(tau, theta)
    low = simulate(pulse_train(a.steps, a.low_period, amp), tau, theta)
    high = simulate(pulse_train(a.steps, a.high_period, amp), tau, theta)
    rc = critical_rate(tau, theta, amp)

    table = Table(title=f"LIF response: tau={tau:.4g}, threshold={theta:.4g}, A={amp:.4g} ({source})")
    for col in ("train", "period", "input rate", "spikes", "output rate"):
        table.add_column(col, justify="right")
    for name, p, r in (("low", a.low_period, low), ("high", a.high_period, high)):
        table.add_row(name, str(p), f"{1 / p:.3f}", str(int(r.spikes.sum())), f"{r.rate:.3f}")
    console = Console()
    console.print(table)
    console.print(f"critical input rate: {rc:.4f} pulses/step (period {critical_period(tau, theta, amp):.3f})")
    console.print(f"wrote {plot_response(low, high, (a.low_period, a.high_period), tau, theta, a.out)}")
    if a.sweep_out:
        periods = list(range(1, 17))
        taus = sorted({*DEFAULT_TAUS, tau})
        path = plot_sweep(periods, sweep(periods, taus, theta, amp), theta, amp, a.sweep_out)
        console.print(f"wrote {path}")
    return 0
