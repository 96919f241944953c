"""Firing rates inside the STM on real batches: per layer and per step, in training mode (batch
statistics) and eval mode (running statistics), for several STM settings.

    python scripts/firing_rates.py --dump 8              # decode 8 train + 2 val batches once
    python scripts/firing_rates.py --configs paper step  # probe at init (and after recalibration)
    python scripts/firing_rates.py --train-steps 60      # ... and after 60 steps on the dumped batches
    python scripts/firing_rates.py --ckpt outputs/real/lif_seed0/checkpoints/last.ckpt  # make real's net

"silent" = fraction of (sample, neuron) pairs with no spike in any of the T steps (what the
issue reports), per layer; the summary gives its mean over the layers and over all the STM's
neurons (layer 1, at twice the resolution, holds 4x the neurons of layers 2 and 3); "dead" =
fraction of neurons that fire for no sample of the probe batches.
Eval mode is probed after recomputing BN statistics on the training batches (precise BN), as
running statistics at init are meaningless. Nothing here is a test: it is a measurement tool.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from csvr.models import CSVRNet  # noqa: E402
from csvr.models.bn import recompute_bn_stats  # noqa: E402
from csvr.models.lif import FIRING_MEANS, ThresholdLIFNode  # noqa: E402
from csvr.models.stm import STRIDES  # noqa: E402

NEW = dict(stm_norm="step", v_threshold=1.0, decay_input=False)

SETTINGS = {  # name -> CSVRNet kwargs (tiny, as configs/ucf101_3cls.yaml)
    "paper": dict(stm_norm="shared", v_threshold=1.0, decay_input=True),
    "step": dict(stm_norm="step", v_threshold=1.0, decay_input=True),
    "step_nodecay": dict(stm_norm="step", v_threshold=1.0, decay_input=False),
    "step_th0.5": dict(stm_norm="step", v_threshold=0.5, decay_input=True),
    "shared_nodecay": dict(stm_norm="shared", v_threshold=1.0, decay_input=False),
    "step_nodecay_aux": dict(NEW, aux_heads=True),
    "step_nodecay_th0.7_aux": dict(NEW, v_threshold=0.7, aux_heads=True),
    "step_nodecay_th0.5_aux": dict(NEW, v_threshold=0.5, aux_heads=True),
    "step_nodecay_th0.3_aux": dict(NEW, v_threshold=0.3, aux_heads=True),
    "step_nodecay_b0.3_aux": dict(NEW, lif_bn_bias=0.3, aux_heads=True),
    "step_nodecay_b0.5_aux": dict(NEW, lif_bn_bias=0.5, aux_heads=True),
    "step_nodecay_b0.5_0.5_0_aux": dict(NEW, lif_bn_bias=[0.5, 0.5, 0.0], aux_heads=True),
    "step_nodecay_b0.7_0.7_0_aux": dict(NEW, lif_bn_bias=[0.7, 0.7, 0.0], aux_heads=True),
    "step_nodecay_tau4_aux": dict(NEW, tau=4.0, aux_heads=True),
    "step_nodecay_ternary_aux": dict(NEW, lif_spike="ternary", aux_heads=True),
    "step_nodecay_pow0.5_aux": dict(NEW, stm_input_power=0.5, aux_heads=True),
    "step_nodecay_pow0.25_aux": dict(NEW, stm_input_power=0.25, aux_heads=True),
    "step_nodecay_pow0.1_aux": dict(NEW, stm_input_power=0.1, aux_heads=True),
    "step_nodecay_tau100_aux": dict(NEW, tau=100.0, aux_heads=True),
    "paper_aux": dict(stm_norm="shared", aux_heads=True),
    "conv_step_aux": dict(NEW, temporal="conv", aux_heads=True),
    "conv_paper": dict(temporal="conv"),
}


def dump(n_train: int, n_val: int, path: Path, config: str) -> None:
    from csvr.lightning_cli import load_config_objects

    # the DataModule as `csvr fit` builds it (configs compose with `base:`); its val batches are
    # single-view, single-crop whatever the config's test protocol
    _, dm = load_config_objects([REPO / config])
    torch.manual_seed(0)
    dm.prepare_data()
    dm.setup("fit")
    out: dict[str, list] = {"train": [], "val": []}
    val = dm.val_dataloader()  # the list is sorted by class: draw a random subset instead
    pick = torch.randperm(len(val.dataset))[: n_val * val.batch_size].tolist()
    val = torch.utils.data.DataLoader(
        torch.utils.data.Subset(val.dataset, pick),
        batch_size=val.batch_size,
        collate_fn=val.collate_fn,
        num_workers=val.num_workers,
    )
    for key, loader, n in (("train", dm.train_dataloader(), n_train), ("val", val, n_val)):
        for b in loader:
            out[key].append(b)
            if len(out[key]) >= n:
                break
    torch.save(out, path)
    print(f"wrote {path}: {len(out['train'])} train, {len(out['val'])} val batches")


def reach(x: torch.Tensor) -> list[torch.Tensor]:
    """x [B, K, T, C, H, W] (a P-frame stream) -> per STM layer, bool [B*K, h, w]: the neuron's
    receptive field (3x3 convs, strides `STRIDES`) holds a non-zero input value in some step."""
    m = (x != 0).flatten(0, 1).any(1).any(1, keepdim=True).float()  # [B*K, 1, H, W]
    out = []
    for stride in STRIDES:
        m = F.max_pool2d(m, 3, stride, 1)
        out.append(m[:, 0] > 0)
    return out


@torch.no_grad()
def probe(net: CSVRNet, batches: list[dict]) -> dict[str, dict]:
    """Per spiking layer: mean rate per step, overall rate, silent and dead fractions, and the
    silent fraction among the (sample, neuron) pairs whose receptive field sees a non-zero input
    (motion or residual) in some step ("reached", whose share is given too)."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, []).append(o.detach()))
        for n, m in net.named_modules()
        if isinstance(m, ThresholdLIFNode)
    ]
    reached: dict[str, list[list[torch.Tensor]]] = {}
    try:
        for b in batches:
            net(b)
            for modality, stm in CSVRNet.STMS.items():
                if modality in b:
                    reached.setdefault(stm, []).append(reach(b[modality]))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, spikes in seen.items():
        s = torch.cat(spikes, 1)  # [T, N, C, H, W]
        fired = (s != 0).any(0)  # [N, C, H, W]; a ternary neuron fires -1 or 1
        stm, layer = name.split(".")[0], int(name.split(".")[2])
        rf = torch.cat([r[layer] for r in reached[stm]])[:, None].expand_as(fired)  # [N, C, H, W]
        out[name.replace(".neuron", "").replace("layers.", "L")] = {
            "rate": float(s.abs().mean()),
            "per_step": [round(float(x), 4) for x in s.abs().mean((1, 2, 3, 4))],
            "silent": float(1 - fired.float().mean()),
            "dead": float(1 - fired.any(0).float().mean()),
            "neurons": fired[0].numel(),  # per clip: C * H * W
            "reached": float(rf.float().mean()),
            "silent_reached": float(1 - fired[rf].float().mean()),
        }
    return out


def load_net(ckpt: Path) -> CSVRNet:
    """The CSVRNet of a `csvr fit` checkpoint, built from the run's config.yaml (next to
    checkpoints/), with the checkpoint's weights and BN statistics."""
    import yaml

    from csvr.checkpoint import load_checkpoint

    config = ckpt.parent.parent / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"--ckpt {ckpt}: no {config} (the config `csvr fit` writes next to checkpoints/)")
    cfg = yaml.safe_load(config.read_text())
    state = load_checkpoint(ckpt)
    data = cfg["data"]["init_args"]
    kw = {k: v for k, v in cfg["model"]["net"]["init_args"].items() if v is not None}
    net = CSVRNet(len(state["class_names"]), img_size=data["img_size"], num_segments=data["num_segments"], **kw)
    net.load_state_dict({k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")})
    return net


def build(setting: str, seed: int) -> CSVRNet:
    torch.manual_seed(seed)
    return CSVRNet(3, variant="tiny", img_size=64, num_segments=3, drop_path=0.1, head_dropout=0.3, **SETTINGS[setting])


def train(
    net: CSVRNet,
    batches: list[dict],
    steps: int,
    lr: float = 2e-3,
    aux_weight: float = 0.5,
    firing_reg: float = 0.0,
    firing_target: float = 0.25,
    firing_mean: str = "layers",
) -> None:
    """AdamW + warm-up/cosine as the LightningModule, on the dumped batches in turn (with its
    activity regulariser when firing_reg > 0)."""
    from csvr.lit_module import param_groups, warmup_cosine
    from csvr.models.lif import pooled_firing_shortfall, regularisable_layers

    spikes: list[torch.Tensor] = []
    if firing_reg:
        for m in regularisable_layers(net):
            m.register_forward_hook(lambda m, i, o: spikes.append(o) if m.training else None)

    opt = torch.optim.AdamW(param_groups(net), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps, steps // 10, 0.01))
    net.train()
    ce = torch.nn.functional.cross_entropy
    for i in range(steps):
        b = batches[i % len(batches)]
        spikes.clear()
        out = net(b)
        logits, aux = out if isinstance(out, tuple) else (out, {})
        loss = ce(logits, b["label"], label_smoothing=0.1)
        if aux:
            loss = loss + aux_weight * sum(ce(a, b["label"], label_smoothing=0.1) for a in aux.values()) / len(aux)
        if spikes:
            loss = loss + firing_reg * pooled_firing_shortfall(spikes, firing_target, firing_mean)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()


@torch.no_grad()
def accuracy(net: CSVRNet, batches: list[dict]) -> float:
    net.eval()
    hits = sum(int((net(b).argmax(-1) == b["label"]).sum()) for b in batches)
    return hits / sum(len(b["label"]) for b in batches)


def load_batches(path: Path, device: str) -> tuple[list[dict], list[dict]]:
    """Batches from a torch file (--dump) or an .npz of float16 arrays (<split>_<i>_<key>)."""
    if path.suffix == ".npz":
        import numpy as np

        z = np.load(path)
        data: dict[str, dict[int, dict]] = {"train": {}, "val": {}}
        for key in z.files:
            split, i, name = key.split("_", 2)
            v = torch.from_numpy(z[key])
            data[split].setdefault(int(i), {})[name] = v.long() if name == "label" else v.float()
        data = {k: [v[i] for i in sorted(v)] for k, v in data.items()}
    else:
        data = torch.load(path, weights_only=False)
    move = lambda b: {k: v.to(device) for k, v in b.items() if torch.is_tensor(v)}  # noqa: E731
    return [move(b) for b in data["train"]], [move(b) for b in data["val"]]


def show(tag: str, res: dict[str, dict]) -> None:
    print(f"  {tag}")
    for name, r in res.items():
        print(
            f"    {name:18s} rate {r['rate']:.4f} steps {r['per_step']} silent {r['silent']:.3f} dead {r['dead']:.3f}"
            f" reached {r['reached']:.3f} (silent there {r['silent_reached']:.3f})"
        )
    layers = list(res.values())
    if layers:
        mean = lambda key: sum(r[key] for r in layers) / len(layers)  # noqa: E731
        neurons = sum(r["neurons"] for r in layers)
        per_neuron = sum(r["silent"] * r["neurons"] for r in layers) / neurons
        n_reached = sum(r["reached"] * r["neurons"] for r in layers)
        silent_reached = sum(r["silent_reached"] * r["reached"] * r["neurons"] for r in layers) / max(n_reached, 1e-9)
        print(
            f"    mean silent {mean('silent'):.3f} (layer mean; over all the STM's neurons {per_neuron:.3f}), "
            f"mean rate {mean('rate'):.4f}; over all neurons {n_reached / neurons:.3f} "
            f"reached, {silent_reached:.3f} of them silent"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=Path, default=Path("/tmp/csvr_probe_batches.pt"))
    ap.add_argument("--dump", type=int, default=0, help="decode this many train batches (and 2 val) first")
    ap.add_argument("--config", default="configs/ucf101_3cls.yaml")
    ap.add_argument("--configs", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--firing-reg", type=float, default=0.0, help="activity regulariser weight (model.firing_reg)")
    ap.add_argument("--firing-target", type=float, default=0.25, help="its target rate (model.firing_target)")
    ap.add_argument("--firing-mean", choices=FIRING_MEANS, default="layers", help="model.firing_mean")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--ckpt",
        type=Path,
        nargs="*",
        help="probe the nets of Lightning checkpoints (<run>/checkpoints/*.ckpt) instead",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="*", help="several seeds (with --train-steps)")
    args = ap.parse_args()
    if args.dump:
        dump(args.dump, 2, args.batches, args.config)
    tr, va = load_batches(args.batches, args.device)
    results = {}
    if args.ckpt:
        nets = {str(p): (lambda p=p: load_net(p).to(args.device)) for p in args.ckpt}
    else:
        nets = {
            f"{s}/seed{seed}": (lambda s=s, seed=seed: build(s, seed).to(args.device))
            for s in args.configs
            for seed in (args.seeds or [args.seed])
        }
    for name, make in nets.items():
        print(name, flush=True)
        net, res = make(), {}
        if args.train_steps:
            train(
                net,
                tr[:-1],
                args.train_steps,
                firing_reg=args.firing_reg,
                firing_target=args.firing_target,
                firing_mean=args.firing_mean,
            )
            res["val_acc_running_bn"] = accuracy(net, va)
        probe_tr = tr[-1:]  # not trained on when --train-steps
        res["train_mode"] = probe(net.train(), probe_tr)
        show("train mode (batch statistics), a held-out train batch", res["train_mode"])
        if args.train_steps:
            res["eval_running_bn"] = probe(net.eval(), probe_tr)
            show("eval mode with the running BN statistics of training, same batch", res["eval_running_bn"])
        if not args.ckpt:
            recompute_bn_stats(net, tr[:-1])
        res["eval_mode_train"] = probe(net.eval(), probe_tr)
        show("eval mode (precise BN), same train batch", res["eval_mode_train"])
        ratios = [res["eval_mode_train"][k]["rate"] / max(r["rate"], 1e-9) for k, r in res["train_mode"].items()]
        res["eval_over_train_rate"] = ratios
        print("  eval / train rate per layer (same batch): " + " ".join(f"{x:.2f}" for x in ratios), flush=True)
        res["eval_mode_val"] = probe(net.eval(), va)
        show("eval mode (precise BN), val (test-list) batches", res["eval_mode_val"])
        if args.train_steps:
            res["val_acc_precise_bn"] = accuracy(net, va)
            print(
                f"  val acc ({sum(len(b['label']) for b in va)} clips): running BN "
                f"{res['val_acc_running_bn']:.3f}, precise BN {res['val_acc_precise_bn']:.3f}",
                flush=True,
            )
        results[name] = res
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
