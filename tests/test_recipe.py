"""The training recipe around the STM: per-step BatchNorm, auxiliary per-modality losses,
precise-BN recalibration. Each checked against an independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csvr.lit_module import CSVRLitModule
from csvr.models import CSVRNet
from csvr.models.baseline_cnn import BaselineCNN
from csvr.models.bn import recompute_bn_stats
from csvr.models.lif import ThresholdLIFNode, firing_shortfall
from csvr.models.stm import SpikingTemporalModulator, TemporalBatchNorm2d, _conv_bn


def test_temporal_bn_equals_one_batchnorm_per_step() -> None:
    torch.manual_seed(0)
    t, b, c = 3, 4, 5
    tbn, refs = TemporalBatchNorm2d(c), [nn.BatchNorm2d(c) for _ in range(t)]
    with torch.no_grad():
        tbn.weight.uniform_(0.5, 1.5)
        tbn.bias.normal_()
        for i, r in enumerate(refs):
            r.weight.copy_(tbn.weight[i * c : (i + 1) * c])
            r.bias.copy_(tbn.bias[i * c : (i + 1) * c])
    tbn.steps = t
    for mode in ("train", "train", "eval"):
        tbn.train(mode == "train")
        for r in refs:
            r.train(mode == "train")
        x = torch.randn(t, b, c, 6, 6) * torch.arange(1.0, t + 1).view(t, 1, 1, 1, 1) + 0.5
        ours = tbn(x.flatten(0, 1)).view(t, b, c, 6, 6)
        torch.testing.assert_close(ours, torch.stack([r(x[i]) for i, r in enumerate(refs)]))
    for i, r in enumerate(refs):  # running statistics too
        torch.testing.assert_close(tbn.running_var[i * c : (i + 1) * c], r.running_var)
    tbn.steps = 13
    with pytest.raises(ValueError, match="num_p"):
        tbn(torch.randn(13 * 2, c, 2, 2))


def test_per_step_norm_removes_a_per_step_scale() -> None:
    # Accumulated MVs grow with the step; with per-step statistics (training mode) step t of
    # a*t*x normalises to the same map as x, so every step drives layer 1 alike.
    torch.manual_seed(0)
    stm = SpikingTemporalModulator(2, channels=4, norm="step")
    layer = stm.layers[0]
    x = torch.randn(1, 3, 2, 16, 16).expand(4, -1, -1, -1, -1)
    scaled = x * torch.tensor([0.5, 1.0, 2.0, 4.0]).view(4, 1, 1, 1, 1)
    out = _conv_bn(layer.conv, layer.bn, scaled)
    for t in range(1, 4):
        torch.testing.assert_close(out[t], out[0], rtol=1e-3, atol=1e-3)


def test_aux_loss_is_added_with_its_weight() -> None:
    torch.manual_seed(0)
    net = BaselineCNN(3, img_size=32, num_segments=2, num_steps=2, modalities=["iframe", "mv"], dropout=0.0)
    batch = {
        "iframe": torch.randn(4, 2, 3, 32, 32),
        "mv": torch.randn(4, 2, 2, 2, 32, 32),
        "label": torch.tensor([0, 1, 2, 1]),
    }
    lit = CSVRLitModule(net, label_smoothing=0.0, aux_weight=0.5)
    torch.manual_seed(1)
    loss = lit.training_step(batch, 0)
    torch.manual_seed(1)
    logits, per = net(batch)  # BN in training mode sees the same batch, so the same outputs
    want = (
        F.cross_entropy(logits, batch["label"])
        + 0.5 * sum(F.cross_entropy(p, batch["label"]) for p in per.values()) / 2
    )
    torch.testing.assert_close(loss, want)
    lit.eval()
    assert lit(batch).shape == (4, 3)  # eval: logits only


def test_firing_shortfall_hand_computed_and_its_gradient_raises_silent_neurons() -> None:
    # 4 (clip, neuron) pairs over T = 4 steps fire 0, 1, 2 and 4 times: rates 0, .25, .5, 1
    spikes = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1.0]]).view(4, 2, 2)
    assert firing_shortfall(spikes, 0.25).item() == pytest.approx(0.25 / 4)
    assert firing_shortfall(spikes, 0.5).item() == pytest.approx((0.5 + 0.25) / 4)
    # through a real LIF: a silent neuron's input and threshold get the gradient that makes it
    # fire (input up, threshold down); a neuron already at the target gets none
    node = ThresholdLIFNode(2, decay_input=False)
    x = torch.tensor([0.1, 2.0]).view(1, 1, 2).repeat(4, 1, 1).requires_grad_()  # [T, B, C]
    out = node(x)
    assert out[:, 0, 0].sum() == 0 and out[:, 0, 1].sum() >= 1  # channel 0 silent, 1 fires
    firing_shortfall(out, 0.25).backward()
    assert (x.grad[:, 0, 0] < 0).all() and node.threshold.grad[0] > 0
    assert (x.grad[:, 0, 1] == 0).all() and node.threshold.grad[1] == 0


def test_firing_reg_adds_the_shortfall_of_every_spiking_layer_in_training_only() -> None:
    torch.manual_seed(0)
    net = CSVRNet(3, variant="tiny", img_size=32, num_segments=1, drop_path=0.0, head_dropout=0.0, decay_input=False)
    batch = {
        "iframe": torch.randn(2, 1, 3, 32, 32),
        "mv": torch.randn(2, 1, 2, 2, 32, 32),
        "residual": torch.randn(2, 1, 2, 3, 32, 32),
        "label": torch.tensor([0, 2]),
    }
    lit = CSVRLitModule(net, label_smoothing=0.0, firing_reg=2.0, firing_target=0.5)
    loss = lit.training_step(batch, 0)
    seen = []  # the same forward, the layers' spikes collected independently
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in net.spiking_layers().values()]
    logits = net(batch)
    for h in hooks:
        h.remove()
    assert len(seen) == 6  # 3 LIF layers in each STM
    shortfall = sum(F.relu(0.5 - s.mean(0)).mean() for s in seen) / 6
    assert shortfall > 0
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch["label"]) + 2.0 * shortfall)
    # firing_mean "neurons": every (clip, neuron) pair alike (layer 1 has 4x the neurons)
    lit_n = CSVRLitModule(net, label_smoothing=0.0, firing_reg=2.0, firing_target=0.5, firing_mean="neurons")
    per_pair = torch.cat([F.relu(0.5 - s.mean(0)).flatten() for s in seen])
    assert seen[0][0].numel() == 4 * seen[1][0].numel()
    torch.testing.assert_close(
        lit_n.training_step(batch, 0), F.cross_entropy(logits, batch["label"]) + 2.0 * per_pair.mean()
    )
    with pytest.raises(ValueError, match="firing_mean"):
        CSVRLitModule(net, firing_mean="pairs")
    lit.eval()
    with torch.no_grad():  # validation: cross-entropy only
        torch.testing.assert_close(lit._shared_step(batch, "val"), F.cross_entropy(net(batch), batch["label"]))
    with pytest.raises(ValueError, match="spiking neurons"):
        CSVRLitModule(CSVRNet(3, variant="tiny", img_size=32, num_segments=1, temporal="conv"), firing_reg=1.0)
    with pytest.raises(ValueError, match="binary spikes"):
        CSVRLitModule(CSVRNet(3, variant="tiny", img_size=32, num_segments=1, lif_spike="ternary"), firing_reg=1.0)


def test_recompute_bn_stats_is_the_plain_average_and_draws_no_random_numbers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Dropout(0.5), nn.BatchNorm2d(3)).train()
    batches = [torch.randn(4, 2, 8, 8) * (i + 1) for i in range(3)]
    with torch.no_grad():
        feats = [net[0](b) for b in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    rng = torch.get_rng_state()
    assert recompute_bn_stats(net, batches) == 1
    assert torch.equal(torch.get_rng_state(), rng)  # dropout stayed in eval mode
    torch.testing.assert_close(net[2].running_mean, mean)
    torch.testing.assert_close(net[2].running_var, var)
    assert net.training and net[2].momentum == 0.1


def test_baseline_cnn_config_and_precise_bn_fit(tiny_synthetic, tmp_path) -> None:
    """configs/experiment/baseline_cnn.yaml stacks on a fit config (the net's class changes,
    its aux losses are on) and the precise-BN callback runs before validation: one real
    fast_dev_run fit on the synthetic set."""
    from csvr.cli import main
    from tests.conftest import REPO, SYNTH_ARGS

    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "synthetic.yaml"),
        "--config",
        str(REPO / "configs" / "experiment" / "baseline_cnn.yaml"),
        f"--data.root={tiny_synthetic}",
        *SYNTH_ARGS,
        "--data.img_size=32",
        "--data.num_p=2",
        "--model.net.init_args.num_steps=2",
        "--model.aux_weight=1.0",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32-true",
        "--trainer.fast_dev_run=1",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=csvr.precise_bn.PreciseBNCallback",
    ]
    assert main(args) == 0


def _sync_worker(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank: precise BN on its own share of the batches (rank 0 gets one more), then
    `sync_bn_stats`; writes its statistics to `out`.rank."""
    import torch.distributed as dist

    from csvr.models.bn import sync_bn_stats

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        net, batches = _bn_net_and_batches()
        recompute_bn_stats(net, batches[rank::world])
        assert sync_bn_stats(net) == 2
        torch.save({k: v for k, v in net.state_dict().items() if "running" in k}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _bn_net_and_batches() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), TemporalBatchNorm2d(3)).train()
    net[3].steps = 1
    return net, [torch.randn(4, 2, 8, 8) * (i + 1) + i for i in range(5)]


@pytest.mark.slow
def test_sync_bn_stats_over_two_gloo_ranks_equals_one_process_on_all_batches(tmp_path) -> None:
    """Real torch.distributed (2 processes, gloo): after precise BN on each rank's batches (3 and
    2) and `sync_bn_stats`, both ranks hold the statistics one process computes on all 5."""
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    out = str(tmp_path / "stats")
    mp.start_processes(_sync_worker, args=(2, free_port(), out), nprocs=2, start_method="spawn")
    net, batches = _bn_net_and_batches()
    recompute_bn_stats(net, batches)
    want = {k: v for k, v in net.state_dict().items() if "running" in k}
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        for k, v in want.items():
            torch.testing.assert_close(got[k], v, msg=f"rank {rank}: {k}")
