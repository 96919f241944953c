"""The network: neuron semantics against SpikingJelly, part shapes, variants, whole-model behaviour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from spikingjelly.activation_based.neuron import BaseNode

from csvr.models import VARIANTS, CSVRNet, SpikingTemporalModulator, ThresholdLIFNode
from csvr.models.decoder import ModalityDecoder
from csvr.models.rrdb import RRDB
from csvr.models.stems import IFrameStem, LocalEncoder, patch_size
from csvr.models.transformer import UnifiedTransformer

B, K, T, S = 2, 2, 3, 64  # batch, segments, P-frames, img_size


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_batch(b: int = B, k: int = K, t: int = T, s: int = S) -> dict[str, torch.Tensor]:
    return {
        "iframe": torch.randn(b, k, 3, s, s),
        "mv": torch.randn(b, k, t, 2, s, s),
        "residual": torch.randn(b, k, t, 3, s, s),
    }


def tiny(**kw: object) -> CSVRNet:
    return CSVRNet(5, variant="tiny", img_size=S, num_segments=K, **kw)


# ---------------------------------------------------------------- ThresholdLIFNode


@pytest.mark.parametrize("detach_reset,decay_input", [(False, True), (True, True), (False, False)])
def test_threshold_lif_matches_spikingjelly_lifnode(detach_reset: bool, decay_input: bool) -> None:
    x = torch.randn(8, 2, 4, 5, 5) * (1.5 if decay_input else 0.6)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = ThresholdLIFNode(
        4, tau=2.0, learn_threshold=False, detach_reset=detach_reset, decay_input=decay_input, store_v_seq=True
    )
    ref = neuron.LIFNode(
        tau=2.0,
        v_reset=None,
        surrogate_function=surrogate.ATan(),
        detach_reset=detach_reset,
        decay_input=decay_input,
        step_mode="m",
        store_v_seq=True,
    )
    s1, s2 = ours(x1), ref(x2)
    assert 0.05 < s2.mean() < 0.95  # both regimes (firing and silent) are exercised
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    torch.testing.assert_close(ours.v_seq, ref.v_seq, rtol=0, atol=0)
    g = torch.randn_like(s1)
    ((s1 * g).sum() + ours.v_seq.sum()).backward()
    ((s2 * g).sum() + ref.v_seq.sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-7)


def test_learn_tau_matches_spikingjelly_parametric_lif() -> None:
    x = torch.randn(6, 3, 4) * 2
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = ThresholdLIFNode(4, tau=3.0, learn_threshold=False, learn_tau=True)
    ref = neuron.ParametricLIFNode(init_tau=3.0, v_reset=None, surrogate_function=surrogate.ATan(), step_mode="m")
    s1, s2 = ours(x1), ref(x2)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    (s1 * x).sum().backward()
    (s2 * x).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.w.grad, ref.w.grad, rtol=1e-5, atol=1e-6)


def test_soft_reset_by_hand_with_per_channel_threshold() -> None:
    # tau = 2, decay_input: h = v + (x - v) / 2; soft reset: v = h - s * theta.
    # channel 0 (theta 1): h1 = 1.5 -> spike, v1 = 0.5; h2 = 0.5 + 2.5/2 = 1.75 -> spike, v2 = 0.75
    # channel 1 (theta 2): h1 = 1.5 -> none,  v1 = 1.5; h2 = 1.5 + 1.5/2 = 2.25 -> spike, v2 = 0.25
    node = ThresholdLIFNode(2, tau=2.0, store_v_seq=True, store_v_pre_seq=True)
    with torch.no_grad():
        node.threshold.copy_(torch.tensor([1.0, 2.0]))
    x = torch.full((2, 1, 2), 3.0)  # [T, B, C]
    spikes = node(x)
    assert spikes[:, 0].tolist() == [[1.0, 0.0], [1.0, 1.0]]
    torch.testing.assert_close(node.v_pre_seq[:, 0], torch.tensor([[1.5, 1.5], [1.75, 2.25]]))
    torch.testing.assert_close(node.v_seq[:, 0], torch.tensor([[0.5, 1.5], [0.75, 0.25]]))
    spikes.sum().backward()
    assert node.threshold.grad is not None and node.threshold.grad.abs().sum() > 0
    functional.reset_net(node)
    assert node.v_pre_seq is None and node.v == 0.0


def test_ternary_spikes_and_soft_reset_by_hand() -> None:
    # decay_input False, tau 2: h = v - v/2 + x; theta 1; s = +1 if h >= 1, -1 if h <= -1, else 0.
    # x = 1.2, -0.5, -0.9, 0.3: h = 1.2 (+1, v 0.2), -0.4 (0), -1.1 (-1, v -0.1), 0.25 (0)
    # binary: the same up to step 2, h = -1.1 (0, v -1.1), then -1.1/2 + 0.3 = -0.25 (0)
    x = torch.tensor([1.2, -0.5, -0.9, 0.3]).view(4, 1, 1)  # [T, B, C]
    spikes = {}
    for kind in ("ternary", "binary"):
        node = ThresholdLIFNode(1, tau=2.0, decay_input=False, spike=kind, store_v_pre_seq=True)
        spikes[kind] = node(x).flatten().tolist()
        if kind == "ternary":
            torch.testing.assert_close(node.v_pre_seq.flatten(), torch.tensor([1.2, -0.4, -1.1, 0.25]))
    assert spikes == {"ternary": [1.0, 0.0, -1.0, 0.0], "binary": [1.0, 0.0, 0.0, 0.0]}
    with pytest.raises(ValueError, match="unknown spike"):
        ThresholdLIFNode(1, spike="graded")


def test_threshold_lif_single_step_equals_multi_step() -> None:
    x = torch.randn(5, 2, 3, 4, 4) * 2
    multi = ThresholdLIFNode(3, store_v_pre_seq=True)
    single = ThresholdLIFNode(3, step_mode="s", store_v_pre_seq=True)
    single.load_state_dict(multi.state_dict())
    s_multi = multi(x)
    s_single = torch.stack([single(xt) for xt in x])
    torch.testing.assert_close(s_multi, s_single, rtol=0, atol=0)
    torch.testing.assert_close(multi.v_pre_seq, single.v_pre_seq)


def test_threshold_lif_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match="4 channels"):
        ThresholdLIFNode(4)(torch.randn(2, 1, 3, 2, 2))


# ---------------------------------------------------------------- STM


@pytest.mark.parametrize("temporal", ["lif", "convgru", "conv"])
def test_stm_shapes(temporal: str) -> None:
    stm = SpikingTemporalModulator(2, channels=8, temporal=temporal)
    assert stm(torch.randn(T, B, 2, S, S)).shape == (B, 8, S // 4, S // 4)


def _spikes_per_layer(stm: SpikingTemporalModulator, x: torch.Tensor) -> list[torch.Tensor]:
    """Run stm on x and capture each neuron's output through forward hooks (as energy code does)."""
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out)) for m in stm.modules() if isinstance(m, BaseNode)
    ]
    with torch.no_grad():
        out = stm(x)
    for h in hooks:
        h.remove()
    assert out.shape == (x.shape[1], 8, S // 4, S // 4) and len(seen) == 3
    return seen


def test_stm_silent_on_still_frames_and_fires_on_motion() -> None:
    for mode in ("eval", "train"):  # BN from running statistics and from batch statistics
        stm = SpikingTemporalModulator(2, channels=8).train(mode == "train")
        still = _spikes_per_layer(stm, torch.zeros(6, B, 2, S, S))  # no motion at all
        assert still[0].sum() == 0 and still[1].sum() == 0
        moving = _spikes_per_layer(stm, 3 * torch.randn(6, B, 2, S, S))
        assert moving[0].mean() > 0.01
        if mode == "train":  # at init only batch statistics scale layer 2's sparse input up
            assert moving[1].mean() > 0.01


def test_stm_constant_drive_fires_only_if_it_can_reach_the_threshold() -> None:
    # On still frames layer 1 sees the constant BN bias c per channel. With tau = 2 the
    # potential after t steps is c * (1 - 2**-t) (no spike yet), so over T = 6 steps a channel
    # fires iff c * (1 - 2**-6) >= theta: the leak filters weak, steady input.
    stm = SpikingTemporalModulator(2, channels=8).eval()
    bias = torch.tensor([-1.0, 0.5, 0.9, 1.2, 2.5, 1.9, 3.0, 0.0])
    theta = torch.tensor([1.0, 0.4, 1.0, 1.0, 2.0, 2.0, 3.5, 0.5])
    with torch.no_grad():
        stm.layers[0].bn.bias.copy_(bias)
        stm.layers[0].neuron.threshold.copy_(theta)
    spikes = _spikes_per_layer(stm, torch.zeros(6, B, 2, S, S))[0]
    fired = spikes.amax(dim=(0, 1, 3, 4)) > 0
    assert fired.tolist() == (bias * (1 - 2**-6) >= theta).tolist()
    assert 0 < fired.sum() < 8


@pytest.mark.parametrize("temporal", ["lif", "conv"])
def test_stm_input_power_is_a_signed_power_of_the_input(temporal: str) -> None:
    """input_power p feeds sign(x) |x|^p to the first conv: the same STM weights on values
    raised by hand (numpy) give the same output; p = 1 changes nothing; p <= 0 is refused."""
    torch.manual_seed(0)
    x = torch.randn(T, B, 2, S, S) * 0.1
    x[:, :, :, :4] = 0.0  # still pixels stay exactly zero (so the first layer's AC count is unchanged)
    plain = SpikingTemporalModulator(2, channels=8, temporal=temporal).train()  # batch statistics
    power = SpikingTemporalModulator(2, channels=8, temporal=temporal, input_power=0.25).train()
    power.load_state_dict(plain.state_dict())
    by_hand = torch.from_numpy(np.sign(x.numpy()) * np.abs(x.numpy()) ** 0.25)
    with torch.no_grad():
        torch.testing.assert_close(power(x), plain(by_hand))
        assert not torch.allclose(power(x), plain(x))
    with pytest.raises(ValueError, match="input_power"):
        SpikingTemporalModulator(2, input_power=0.0)


def test_stm_bn_bias_sets_each_spiking_layer_and_raises_firing() -> None:
    """bn_bias initialises the BN bias before each LIF (one value, or one per layer): on the same
    input, layer 1's drive is the same BN output + 0.5, so it fires more and fewer neurons stay
    silent (not spike by spike: a soft reset after an earlier spike can drop a later one)."""
    torch.manual_seed(0)
    base = SpikingTemporalModulator(2, channels=8, norm="step", decay_input=False).train()
    torch.manual_seed(0)
    biased = SpikingTemporalModulator(2, channels=8, norm="step", decay_input=False, bn_bias=[0.5, 0.5, 0.0]).train()
    assert [float(layer.bn.bias.unique()) for layer in biased.layers] == [0.5, 0.5, 0.0]
    x = torch.randn(4, B, 2, S, S)
    s0, s1 = _spikes_per_layer(base, x)[0], _spikes_per_layer(biased, x)[0]
    assert s1.sum() > 1.5 * s0.sum()
    silent = lambda s: float((s.amax(0) == 0).float().mean())  # noqa: E731  no spike in any step
    assert silent(s1) < silent(s0)
    with pytest.raises(ValueError, match="one per layer"):
        SpikingTemporalModulator(2, channels=8, bn_bias=[0.5, 0.5])


# ---------------------------------------------------------------- stems, transformer, decoder, RRDB


def test_stem_and_local_encoder_shapes() -> None:
    p = patch_size(S)
    assert p == 4 and patch_size(224) == 14
    maps = IFrameStem(8)(torch.randn(B, 3, S, S))
    assert maps.shape == (B, 8, S // 4, S // 4)
    assert LocalEncoder(8, 32, p)(maps).shape == (B, 16, 32)


@pytest.mark.parametrize("bad", [100, 72, 8])
def test_img_size_not_multiple_of_16_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"img_size={bad}.*multiple of 16"):
        CSVRNet(3, variant="tiny", img_size=bad)


def test_transformer_shape_and_positional_encoding() -> None:
    tf = UnifiedTransformer(
        32, depth=2, heads=4, num_patches=16, num_segments=K, num_modalities=3, drop_path=0.0
    ).eval()
    tokens = torch.randn(B, 3, K, 16, 32)
    swapped = tokens.flip(2)  # the same tokens with the segment order reversed
    with torch.no_grad():
        out, out_swapped = tf(tokens), tf(swapped)
        assert out.shape == tokens.shape
        # The temporal embedding tells the segments apart ...
        assert not torch.allclose(out_swapped.flip(2), out, atol=1e-4)
        # ... without positional encoding attention is permutation-equivariant.
        tf.pos_temporal.zero_()
        torch.testing.assert_close(tf(swapped).flip(2), tf(tokens), rtol=1e-4, atol=1e-4)


def test_decoder_folds_each_token_back_to_its_patch() -> None:
    p, c = 4, 8
    enc, dec = LocalEncoder(c, 32, p), ModalityDecoder(32, c, p)
    for r, col in [(0, 0), (1, 3), (3, 2)]:
        x = torch.zeros(1, c, 4 * p, 4 * p)
        x[..., r * p : (r + 1) * p, col * p : (col + 1) * p] = 1.0
        tokens = enc(x) - enc(torch.zeros_like(x))  # remove the conv bias
        assert tokens[0].abs().sum(-1).nonzero().flatten().tolist() == [r * 4 + col]
        folded = dec.fold(dec.unembed.weight @ tokens[0].T)  # [C, H, W], fold without the bias
        nz = folded.abs().sum(0).nonzero()
        assert nz[:, 0].div(p, rounding_mode="floor").unique().tolist() == [r]
        assert nz[:, 1].div(p, rounding_mode="floor").unique().tolist() == [col]
    assert dec(torch.randn(B, 16, 32), torch.randn(B, c, 16, 16)).shape == (B, c, 16, 16)


def test_rrdb_shape_and_parameter_count() -> None:
    c, g = 8, 4
    rrdb = RRDB(c, g)
    assert rrdb(torch.randn(B, c, 16, 16)).shape == (B, c, 16, 16)
    # 3 blocks x 5 convs (3x3, bias): in = c + i*g, out = g (i < 4) or c
    per_block = sum((c + i * g) * (g if i < 4 else c) * 9 + (g if i < 4 else c) for i in range(5))
    assert sum(p.numel() for p in rrdb.parameters()) == 3 * per_block


# ---------------------------------------------------------------- CSVRNet


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_builds_and_forwards(variant: str) -> None:
    net = CSVRNet(4, variant=variant, img_size=S, num_segments=1).eval()
    assert net.config["channels"] == VARIANTS[variant]["channels"]
    assert len(net.transformer.blocks) == VARIANTS[variant]["depth"]
    with torch.no_grad():
        assert net(make_batch(b=1, k=1, t=2)).shape == (1, 4)
    assert net.num_parameters() > 0


def test_gradient_reaches_first_stm_conv_through_surrogate() -> None:
    net = tiny()
    loss = torch.nn.functional.cross_entropy(net(make_batch()), torch.tensor([0, 3]))
    loss.backward()
    for stm in (net.stm_mv, net.stm_residual):
        assert stm.layers[0].conv.weight.grad.abs().sum() > 0
        assert stm.layers[0].neuron.threshold.grad.abs().sum() > 0


def test_state_is_reset_between_forwards() -> None:
    # Train mode (BN from batch statistics, so every STM layer is active at init), no dropout.
    net = tiny(drop_path=0.0, head_dropout=0.0)
    batch = make_batch()
    with torch.no_grad():
        first, second = net(batch), net(batch)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # Without the reset the second pass would start from the first pass's potentials.
    for i in range(3):
        node = net.stm_mv.layers[i].neuron
        assert isinstance(node.v, torch.Tensor) and node.v.abs().sum() > 0


@pytest.mark.parametrize("temporal", ["convgru", "conv"])
def test_temporal_ablations_forward(temporal: str) -> None:
    net = tiny(temporal=temporal)
    assert net(make_batch()).shape == (B, 5)
    assert net.spiking_layers() == {}


def test_spiking_layers_named() -> None:
    names = list(tiny().spiking_layers())
    assert names == [f"stm_{m}.layers.{i}.neuron" for m in ("mv", "residual") for i in range(3)]


@pytest.mark.parametrize("modalities", [["iframe"], ["mv"], ["residual", "mv"]])
def test_modality_switches(modalities: list[str]) -> None:
    net = tiny(modalities=modalities)
    batch = {m: v for m, v in make_batch().items() if m in modalities}
    assert net(batch).shape == (B, 5)
    assert (net.iframe_stem is None) == ("iframe" not in modalities)
    assert list(net.encoders) == [m for m in ("iframe", "mv", "residual") if m in modalities]


def test_dataclass_batch_and_clear_errors() -> None:
    @dataclass
    class Clip:
        iframe: torch.Tensor
        mv: torch.Tensor
        residual: torch.Tensor

    net, batch = tiny().eval(), make_batch()
    with torch.no_grad():
        torch.testing.assert_close(net(Clip(**batch)), net(batch))
    with pytest.raises(ValueError, match="K=3 segments.*num_segments=2"):
        net(make_batch(k=3))
    with pytest.raises(KeyError, match="'residual'"):
        net({k: v for k, v in make_batch().items() if k != "residual"})
    with pytest.raises(ValueError, match="img_size=64"):
        net(make_batch(s=48))
    with pytest.raises(ValueError, match="unknown variant"):
        CSVRNet(3, variant="huge")
    with pytest.raises(ValueError, match="unknown temporal"):
        CSVRNet(3, variant="tiny", temporal="gru", modalities=["iframe"])
    with pytest.raises(ValueError, match="modalities"):
        CSVRNet(3, variant="tiny", modalities=["depth"])


# ---------------------------------------------------------------- recipe options, baseline CNN


@pytest.mark.parametrize("temporal", ["lif", "convgru", "conv"])
def test_per_step_norm_and_aux_heads_forward(temporal: str) -> None:
    net = tiny(temporal=temporal, stm_norm="step", aux_heads=True, late_fusion=True)
    logits, aux = net(make_batch())  # training mode: fused logits and one aux head per modality
    assert logits.shape == (B, 5) and {m: a.shape for m, a in aux.items()} == {
        m: (B, 5) for m in ("iframe", "mv", "residual")
    }
    with torch.no_grad():
        assert net.eval()(make_batch()).shape == (B, 5)  # eval: the public contract


def test_late_fusion_adds_the_modality_logits() -> None:
    net = tiny(aux_heads=True, late_fusion=True, drop_path=0.0, head_dropout=0.0)
    batch = make_batch()
    with torch.no_grad():
        fused_plus_late, aux = net(batch)
        net.late_fusion = False
        fused, _ = net(batch)
    torch.testing.assert_close(fused_plus_late, fused + sum(aux.values()))
    with pytest.raises(ValueError, match="late_fusion=True needs aux_heads"):
        tiny(late_fusion=True)


@pytest.mark.parametrize("modalities", [["iframe", "mv", "residual"], ["mv"], ["iframe", "residual"]])
def test_baseline_cnn_builds_and_forwards(modalities: list[str]) -> None:
    from csvr.models.baseline_cnn import BaselineCNN

    net = BaselineCNN(5, img_size=S, num_segments=K, num_steps=T, modalities=modalities)
    batch = {m: v for m, v in make_batch().items() if m in modalities}
    logits, per = net(batch)
    assert logits.shape == (B, 5) and sorted(per) == sorted(modalities)
    torch.testing.assert_close(logits, sum(per.values()))  # late fusion: the sum of the branches
    with torch.no_grad():
        assert net.eval()(batch).shape == (B, 5)
    with pytest.raises(ValueError, match="num_steps"):
        BaselineCNN(5, img_size=S, num_segments=K, num_steps=T + 1, modalities=modalities)(make_batch())
