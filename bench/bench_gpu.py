"""GPU check and training throughput (run by hand on a CUDA machine; CI has none).

1. The CUDA path computes what the CPU path computes: the same weights and batch give logits
   that agree to float tolerance, and the same LIF spike counts (tiny and base, eval mode).
2. Training steps/s of base and L at 224 px (K=3, T=4 and T=11, batch 8), fp32 and bf16-mixed
   autocast: optimizer steps of the real network on in-memory batches (no loader).

    python bench/bench_gpu.py --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from spikingjelly.activation_based.neuron import BaseNode

from csvr.models import CSVRNet


def batch_of(b: int, k: int, t: int, size: int, device: str, classes: int = 101) -> dict[str, torch.Tensor]:
    """Sparse-ish P-frames (70% zeros, as prepared clips are) and a normal I-frame."""
    g = torch.Generator().manual_seed(0)
    mv = torch.randn(b, k, t, 2, size, size, generator=g) * (torch.rand(b, k, t, 1, size, size, generator=g) > 0.7)
    res = torch.randn(b, k, t, 3, size, size, generator=g) * (torch.rand(b, k, t, 1, size, size, generator=g) > 0.7)
    out = {"iframe": torch.randn(b, k, 3, size, size, generator=g), "mv": mv, "residual": res}
    out = {n: x.to(device) for n, x in out.items()}
    out["label"] = torch.randint(0, classes, (b,), generator=g).to(device)
    return out


def spike_counts(net: CSVRNet) -> list[float]:
    """Total spikes of every LIF layer in the last forward (forward hooks)."""
    return [float(m._last_spikes) for m in net.modules() if isinstance(m, BaseNode) and hasattr(m, "_last_spikes")]


def hook_spikes(net: CSVRNet) -> None:
    def keep(mod, _inp, out):
        mod._last_spikes = out.detach().sum().cpu()

    for m in net.modules():
        if isinstance(m, BaseNode):
            m.register_forward_hook(keep)


def cpu_vs_cuda(variant: str, size: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = CSVRNet(101, variant=variant, img_size=size).eval()
    hook_spikes(net)
    b = batch_of(2, 3, 4, size, "cpu")
    with torch.no_grad():
        ref = net(b)
        ref_spikes = spike_counts(net)
        net.cuda()
        got = net({n: x.cuda() for n, x in b.items()}).cpu()
        got_spikes = spike_counts(net)
    rel = [abs(a - c) / max(1.0, a) for a, c in zip(ref_spikes, got_spikes)]
    return {
        "max_abs_logit_diff": float((ref - got).abs().max()),
        "logit_scale": float(ref.abs().max()),
        "max_rel_spike_count_diff": max(rel) if rel else 0.0,
        "spikes_cpu": sum(ref_spikes),
    }


def train_steps_per_s(variant: str, t: int, precision: str, steps: int = 10, batch: int = 8) -> float:
    torch.manual_seed(0)
    net = CSVRNet(101, variant=variant, img_size=224).cuda().train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    b = batch_of(batch, 3, t, 224, "cuda")
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step() -> None:
        with amp:
            out = net(b)
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits.float(), b["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: cuDNN autotune, allocator
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/gpu_results.json")
    a = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    res: dict[str, object] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for variant, size in (("tiny", 64), ("base", 224)):
        res[f"cpu_vs_cuda_{variant}"] = cpu_vs_cuda(variant, size)
        print(variant, res[f"cpu_vs_cuda_{variant}"], flush=True)
    for variant in ("base", "L"):
        for t in (4, 11):
            for prec in ("32", "bf16-mixed"):
                key = f"train_steps_per_s_{variant}_T{t}_{prec}_batch8"
                res[key] = round(train_steps_per_s(variant, t, prec), 3)
                print(key, res[key], flush=True)
    res["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
