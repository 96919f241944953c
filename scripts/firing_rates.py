"""Firing rates inside the STM on real batches: per layer and per step, in training mode (batch
statistics) and eval mode (running statistics), for several STM settings.

    python scripts/firing_rates.py --dump 8              # decode 8 train + 2 val batches once
    python scripts/firing_rates.py --configs paper step  # probe at init (and after recalibration)
    python scripts/firing_rates.py --train-steps 60      # ... and after 60 steps on the dumped batches
    python scripts/firing_rates.py --ckpt outputs/real/lif/checkpoints/last.ckpt  # a trained net

"silent" = fraction of (sample, neuron) pairs with no spike in any of the T steps (what the
issue reports); "dead" = fraction of neurons that fire for no sample of the probe batches.
Eval mode is probed after recomputing BN statistics on the training batches (precise BN), as
running statistics at init are meaningless. Nothing here is a test: it is a measurement tool.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from csvr.models import CSVRNet  # noqa: E402
from csvr.models.lif import ThresholdLIFNode  # noqa: E402
from csvr.precise_bn import recompute_bn_stats  # noqa: E402

SETTINGS = {  # name -> CSVRNet kwargs (tiny, as configs/ucf101_3cls.yaml)
    "paper": dict(stm_norm="shared", v_threshold=1.0, decay_input=True),
    "step": dict(stm_norm="step", v_threshold=1.0, decay_input=True),
    "step_nodecay": dict(stm_norm="step", v_threshold=1.0, decay_input=False),
    "step_th0.5": dict(stm_norm="step", v_threshold=0.5, decay_input=True),
    "shared_nodecay": dict(stm_norm="shared", v_threshold=1.0, decay_input=False),
}


def dump(n_train: int, n_val: int, path: Path, config: str) -> None:
    from csvr.data import UCF101DataModule

    args = yaml.safe_load((REPO / config).read_text())["data"]["init_args"]
    args = {**args, "test_segments": args["num_segments"], "test_crops": 1}
    torch.manual_seed(0)
    dm = UCF101DataModule(**args)
    dm.prepare_data()
    dm.setup("fit")
    out: dict[str, list] = {"train": [], "val": []}
    for key, loader, n in (("train", dm.train_dataloader(), n_train), ("val", dm.val_dataloader(), n_val)):
        for b in loader:
            out[key].append(b)
            if len(out[key]) >= n:
                break
    torch.save(out, path)
    print(f"wrote {path}: {len(out['train'])} train, {len(out['val'])} val batches")


@torch.no_grad()
def probe(net: CSVRNet, batches: list[dict]) -> dict[str, dict]:
    """Per spiking layer: mean rate per step, overall rate, silent and dead fractions."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, []).append(o.detach()))
             for n, m in net.named_modules() if isinstance(m, ThresholdLIFNode)]
    try:
        for b in batches:
            net(b)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, spikes in seen.items():
        s = torch.cat(spikes, 1)  # [T, N, C, H, W]
        fired = s.amax(0) > 0  # [N, C, H, W]
        out[name.replace(".neuron", "").replace("layers.", "L")] = {
            "rate": float(s.mean()),
            "per_step": [round(float(x), 4) for x in s.mean((1, 2, 3, 4))],
            "silent": float(1 - fired.float().mean()),
            "dead": float(1 - fired.any(0).float().mean()),
        }
    return out


def build(setting: str, seed: int) -> CSVRNet:
    torch.manual_seed(seed)
    return CSVRNet(3, variant="tiny", img_size=64, num_segments=3, drop_path=0.1, head_dropout=0.3,
                   **SETTINGS[setting])


def train(net: CSVRNet, batches: list[dict], steps: int, lr: float = 2e-3) -> None:
    from csvr.lit_module import param_groups

    opt = torch.optim.AdamW(param_groups(net), lr=lr, weight_decay=0.05)
    net.train()
    for i in range(steps):
        b = batches[i % len(batches)]
        out = net(b)
        logits = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(logits, b["label"], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()


def show(tag: str, res: dict[str, dict]) -> None:
    print(f"  {tag}")
    for name, r in res.items():
        print(f"    {name:18s} rate {r['rate']:.4f} steps {r['per_step']} silent {r['silent']:.3f} dead {r['dead']:.3f}")
    layers = list(res.values())
    print(f"    mean silent {sum(r['silent'] for r in layers) / len(layers):.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=Path, default=Path("/tmp/csvr_probe_batches.pt"))
    ap.add_argument("--dump", type=int, default=0, help="decode this many train batches (and 2 val) first")
    ap.add_argument("--config", default="configs/ucf101_3cls.yaml")
    ap.add_argument("--configs", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt", type=Path, help="probe the net of a Lightning checkpoint instead")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.dump:
        dump(args.dump, 2, args.batches, args.config)
    data = torch.load(args.batches, weights_only=False)
    tr, va = data["train"], data["val"]
    results = {}
    if args.ckpt:
        from csvr.lit_module import CSVRLitModule

        net = CSVRLitModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=False).net
        nets = {"ckpt": net}
    else:
        nets = {s: build(s, args.seed) for s in args.configs}
    for name, net in nets.items():
        print(name)
        res = {}
        if args.train_steps:
            train(net, tr[:-1], args.train_steps)
        probe_tr = tr[-1:]  # not trained on when --train-steps
        res["train_mode"] = probe(net.train(), probe_tr)
        show("train mode (batch statistics), a held-out train batch", res["train_mode"])
        if not args.ckpt:
            recompute_bn_stats(net, tr[:-1])
        res["eval_mode_train"] = probe(net.eval(), probe_tr)
        show("eval mode, same train batch", res["eval_mode_train"])
        res["eval_mode_val"] = probe(net.eval(), va)
        show("eval mode, val (test-list) batches", res["eval_mode_val"])
        results[name] = res
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
