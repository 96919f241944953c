"""Model benchmark: forward latency per video and parameter counts.

One video = K=3 segments x (I-frame + T=11 MV and residual P-frames) at 224x224, batch 1,
eval mode, no_grad, on CPU. Latencies are the fastest of a few repeats after one warm-up,
reported as CPU-time ratios to base/LIF measured in the same process (plus base/LIF in CPU ms
and wall ms).

    .venv/bin/python bench/bench_model.py [--threads 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from csvr.models import CSVRNet

CONFIGS = [("base", "lif"), ("tiny", "lif"), ("L", "lif"), ("base", "convgru"), ("base", "conv")]


def _video(k: int = 3, t: int = 11, size: int = 224) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "iframe": torch.randn(1, k, 3, size, size, generator=g),
        "mv": torch.randn(1, k, t, 2, size, size, generator=g),
        "residual": torch.randn(1, k, t, 3, size, size, generator=g),
    }


def _latency_ms(net: CSVRNet, batch: dict[str, torch.Tensor], repeats: int) -> tuple[float, float]:
    """(CPU ms, wall ms) of the fastest of ``repeats`` forwards.

    CPU time of this process (``time.process_time``) is the figure compared: on a machine shared
    with other jobs, wall time mostly measures the others.
    """
    cpu, wall = [], []
    with torch.no_grad():
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            net(batch)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return 1000 * min(cpu), 1000 * min(wall)


def run(threads: int = 1, repeats: int = 2) -> dict[str, dict[str, object]]:
    """Flat {name: {"value", "unit", "aim"}}."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = _video()
    _latency_ms(CSVRNet(101, variant="tiny").eval(), batch, 1)  # warm-up (allocator, kernels)
    out: dict[str, dict[str, object]] = {}
    base_ms = None
    for variant, temporal in CONFIGS:
        net = CSVRNet(101, variant=variant, temporal=temporal).eval()
        ms, wall_ms = _latency_ms(net, batch, repeats)
        if temporal == "lif":
            out[f"model/params_{variant}"] = {"value": net.num_parameters(), "unit": "parameters", "aim": "lower"}
        if base_ms is None:
            base_ms = ms
            out["model/latency_base_lif_cpu_ms"] = {"value": round(ms, 1), "unit": "CPU ms/video", "aim": "lower"}
            out["model/latency_base_lif_wall_ms"] = {"value": round(wall_ms, 1), "unit": "ms/video", "aim": "lower"}
        else:
            out[f"model/latency_{variant}_{temporal}_vs_base_lif"] = {
                "value": round(ms / base_ms, 3),
                "unit": "ratio",
                "aim": "lower",
            }
        del net
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.threads, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
