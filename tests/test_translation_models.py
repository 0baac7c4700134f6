import math

import pytest
import torch
from torch import nn

from gan_dist.models.translation import (PatchDiscriminator, PatchSampleMLP, ResnetBlock, ResnetGenerator, init_weights,
                                         patch_nce_loss)


def _images(n, channels, size):
    return torch.rand(n, channels, size, size) * 2 - 1


def _count(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("size, downsamplings", [(32, 2), (48, 2), (64, 2), (32, 3)])
@pytest.mark.parametrize("in_channels, out_channels", [(1, 3), (3, 1)])
def test_generator_keeps_size_and_maps_channels(size, downsamplings, in_channels, out_channels):
    torch.manual_seed(0)
    G = ResnetGenerator(in_channels, out_channels, channels=4, blocks=2, downsamplings=downsamplings)
    x = _images(2, in_channels, size)
    out = G(x)
    assert out.shape == (2, out_channels, size, size)
    assert out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(G(x, torch.tensor([0, 1])), out)  # labels are ignored


def test_generator_rejects_sizes_its_downsamplings_cannot_undo():
    G = ResnetGenerator(3, 3, channels=4, blocks=1, downsamplings=2)
    with pytest.raises(ValueError, match="divisible by 4"):
        G(_images(1, 3, 30))


def _record_activations(G):
    """Hooks on every layer of G.model: what each produced, and which ran."""
    seen = {}
    for index, layer in enumerate(G.model):
        layer.register_forward_hook(lambda _m, _in, out, index=index: seen.__setitem__(index, out.clone()))
    return seen


def test_encode_returns_the_forward_activations_of_the_asked_layers():
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, channels=4, blocks=9)
    layers = ResnetGenerator.nce_layers(9)
    assert layers == (0, 4, 8, 12, 16)
    seen = _record_activations(G)
    x = _images(2, 3, 32)
    G(x)
    full = dict(seen)
    seen.clear()
    features = G.encode(x, layers)
    for index, feature in zip(layers, features):
        torch.testing.assert_close(feature, full[index], rtol=0, atol=0)
    assert [f.shape[1] for f in features] == G.layer_channels(layers) == [3, 8, 16, 16, 16]
    assert [f.shape[-1] for f in features] == [38, 16, 8, 8, 8]  # 0 is the reflection-padded input
    assert max(seen) == 16  # stopped after the last layer asked


def test_encode_keeps_the_order_asked_and_runs_only_what_it_needs():
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, channels=4, blocks=2)
    seen = _record_activations(G)
    x = _images(1, 3, 16)
    late, early = G.encode(x, (4, 0))
    assert sorted(seen) == [0, 1, 2, 3, 4]
    torch.testing.assert_close(late, seen[4], rtol=0, atol=0)
    torch.testing.assert_close(early, seen[0], rtol=0, atol=0)
    assert G.layer_channels((4, 0)) == [8, 3]
    with pytest.raises(ValueError, match="layers"):
        G.encode(x, (len(G.model),))


@pytest.mark.parametrize("blocks", [0, 3, 4, 6, 9, 12])
@pytest.mark.parametrize("downsamplings", [2, 3])
def test_nce_layers_step_by_four_through_the_encoder(blocks, downsamplings):
    layers = ResnetGenerator.nce_layers(blocks, downsamplings)
    G = ResnetGenerator(3, 3, channels=2, blocks=blocks, downsamplings=downsamplings)
    encoder_end = 3 + 3 * downsamplings + blocks
    assert layers == tuple(range(0, encoder_end + 1, 4))
    # Past the encoder come the transposed convolutions: the first of them is never chosen.
    assert not any(isinstance(G.model[i], nn.ConvTranspose2d) for i in layers)
    assert isinstance(G.model[encoder_end + 1], nn.ConvTranspose2d)


def test_nce_layers_for_small_generators():
    assert ResnetGenerator.nce_layers(3) == ResnetGenerator.nce_layers(4) == (0, 4, 8, 12)
    G = ResnetGenerator(3, 3, channels=2, blocks=3)
    assert isinstance(G.model[12], ResnetBlock) and G.model[12] is G.model[3 + 6 + 3]  # the last block


def _patch_map_side(size, layers):
    for _ in range(layers):  # 4x4 convs, padding 1, stride 2
        size = (size + 2 - 4) // 2 + 1
    return size - 2  # then two stride-1 4x4 convs, padding 1: one pixel less each


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("layers", [2, 3])
def test_patch_discriminator_map_size(size, layers):
    torch.manual_seed(0)
    D = PatchDiscriminator(3, channels=4, layers=layers)
    side = _patch_map_side(size, layers)
    assert D(_images(2, 3, size), torch.tensor([0, 1])).shape == (2, 1, side, side)
    assert side == {(32, 2): 6, (64, 2): 14, (32, 3): 2, (64, 3): 6}[size, layers]


@pytest.mark.parametrize("layers, field", [(2, 34), (3, 70)])
def test_patch_discriminator_receptive_field(layers, field):
    torch.manual_seed(0)
    D = PatchDiscriminator(1, channels=4, layers=layers).double()
    # Instance-norm statistics couple every pixel to every logit; the patch a logit sees is the convolutions' field.
    for index, layer in enumerate(D.model):
        if isinstance(layer, nn.InstanceNorm2d):
            D.model[index] = nn.Identity()
    x = torch.randn(1, 1, 160, 160, dtype=torch.float64, requires_grad=True)
    out = D(x)
    i = out.shape[-1] // 2
    out[0, 0, i, i].backward()
    touched = x.grad[0, 0] != 0
    rows = touched.any(dim=1).nonzero().flatten()
    cols = touched.any(dim=0).nonzero().flatten()
    jump = 2**layers
    start = jump * i - (jump - 1) - 2 * jump  # padding 1 of each conv shifts the window by the strides before it
    for hit in (rows, cols):
        assert hit.tolist() == list(range(start, start + field))


def _identity_mlp(channels):
    sampler = PatchSampleMLP([channels, channels], units=channels)
    with torch.no_grad():
        for mlp in sampler.mlps:
            for linear in (mlp[0], mlp[2]):
                linear.weight.copy_(torch.eye(channels))
                linear.bias.zero_()
    return sampler


def _located(n, h, w, noise):
    """Features whose first channels spell (n, y, x) of their own location, all positive: an identity MLP and the
    L2 normalisation keep the ratios to channel 0."""
    n_, y, x = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    spelled = torch.stack([torch.ones(n, h, w), y + 1.0, x + 1.0, n_ + 1.0], dim=1)
    return torch.cat([spelled, noise * torch.rand(n, 1, h, w)], dim=1)


def _decode(rows):
    return torch.round(rows[:, 1:4] / rows[:, :1] - 1).long()  # (y, x, n)


def test_patch_sample_same_ids_pick_the_same_locations():
    torch.manual_seed(0)
    sampler = _identity_mlp(5)
    keys = [_located(2, 6, 6, 0.5), _located(2, 3, 5, 0.5)]
    queries = [2 * _located(2, 6, 6, 3.0), 2 * _located(2, 3, 5, 3.0)]
    key_rows, ids = sampler(keys, 10, generator=torch.Generator().manual_seed(1))
    query_rows, query_ids = sampler(queries, 10, patch_ids=ids)
    for k, q, chosen, used, (h, w) in zip(key_rows, query_rows, ids, query_ids, [(6, 6), (3, 5)]):
        patches = min(10, h * w)
        assert k.shape == q.shape == (2 * patches, 5) and torch.equal(used, chosen)
        expected = torch.stack([torch.stack([chosen // w, chosen % w, torch.full_like(chosen, n)], dim=1)
                                for n in range(2)]).flatten(0, 1)  # image-major rows
        assert torch.equal(_decode(k), expected) and torch.equal(_decode(q), expected)


def test_patch_sample_draw_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    sampler = PatchSampleMLP([3], units=8)
    features = [torch.randn(2, 3, 8, 8)]
    state = torch.get_rng_state()
    first, ids = sampler(features, 16, generator=torch.Generator().manual_seed(7))
    again, same_ids = sampler(features, 16, generator=torch.Generator().manual_seed(7))
    _, other_ids = sampler(features, 16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(ids[0], same_ids[0]) and torch.equal(first[0], again[0])
    assert not torch.equal(ids[0], other_ids[0])
    assert len(set(ids[0].tolist())) == 16


def test_patch_sample_outputs_are_unit_norm_and_keep_all_of_a_small_map():
    torch.manual_seed(0)
    sampler = PatchSampleMLP([3, 6], units=8)
    rows, ids = sampler([torch.randn(2, 3, 3, 3), torch.randn(2, 6, 8, 8)], 50)
    assert torch.equal(ids[0].sort().values, torch.arange(9)) and rows[0].shape == (2 * 9, 8)
    assert rows[1].shape == (2 * 50, 8)
    for r in rows:  # up to the reference's epsilon, x / (|x| + 1e-7), on these small init-scale outputs
        torch.testing.assert_close(r.norm(dim=1), torch.ones(r.shape[0]), rtol=0, atol=1e-3)


def test_patch_sample_mlps_exist_before_any_forward():
    torch.manual_seed(0)
    sampler = PatchSampleMLP([3, 16], units=8)
    shapes = [tuple(p.shape) for p in sampler.parameters()]
    assert shapes == [(8, 3), (8,), (8, 8), (8,), (8, 16), (8,), (8, 8), (8,)]
    with pytest.raises(ValueError, match="2 layers"):
        sampler([torch.randn(1, 3, 4, 4)], 4)


def test_init_weights_is_the_reference_normal_init():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 64, 5), nn.ConvTranspose2d(64, 64, 5), nn.Linear(512, 512))
    init_weights(net, gain=0.05)
    for layer in net:
        assert abs(layer.weight.std().item() - 0.05) < 0.002 and abs(layer.weight.mean().item()) < 0.002
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    G = ResnetGenerator(3, 3, channels=4, blocks=1)
    convs = [m for m in G.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.equal(c.bias, torch.zeros_like(c.bias)) for c in convs)


def _unit_rows(x):
    return x / x.norm(dim=1, keepdim=True)


def test_patch_nce_loss_is_near_zero_for_orthonormal_patches_matched_to_themselves():
    torch.manual_seed(0)
    T, P = 0.07, 8
    orthonormal = [torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0][:P] for _ in range(2)]
    features = torch.cat(orthonormal)
    loss = patch_nce_loss(features, features, batch_size=2, temperature=T)
    # Per patch: logits (positive 1; negatives 0 x (P - 1) and the masked -10) / T against target 0.
    expected = math.log(1 + (P - 1) * math.exp(-1 / T) + math.exp(-11 / T))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert loss.item() < 1e-5


def test_patch_nce_loss_is_log_p_when_every_patch_is_the_same():
    P = 16
    same = _unit_rows(torch.ones(3 * P, 8, dtype=torch.float64))
    loss = patch_nce_loss(same, same, batch_size=3)
    assert loss.item() == pytest.approx(math.log(P), rel=1e-12)


def test_patch_nce_loss_matches_a_patch_by_patch_computation():
    torch.manual_seed(0)
    N, P, T = 2, 5, 0.1
    query, key = _unit_rows(torch.randn(N * P, 6)), _unit_rows(torch.randn(N * P, 6))
    losses = []
    for n in range(N):
        for i in range(P):
            q = query[n * P + i]
            logits = [q @ key[n * P + i]] + [q @ key[n * P + j] if j != i else torch.tensor(-10.0) for j in range(P)]
            losses.append(-torch.log_softmax(torch.stack(logits) / T, dim=0)[0])
    torch.testing.assert_close(patch_nce_loss(query, key, N, T), torch.stack(losses).mean())
    per_image = [patch_nce_loss(query[n * P:(n + 1) * P], key[n * P:(n + 1) * P], 1, T) for n in range(N)]
    torch.testing.assert_close(patch_nce_loss(query, key, N, T), torch.stack(per_image).mean())


def test_patch_nce_loss_trains_the_query_only():
    torch.manual_seed(0)
    query = _unit_rows(torch.randn(2 * 4, 6)).requires_grad_()
    key = _unit_rows(torch.randn(2 * 4, 6)).requires_grad_()
    patch_nce_loss(query, key, batch_size=2).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert key.grad is None
    with pytest.raises(ValueError, match="N=3"):
        patch_nce_loss(query, key, batch_size=3)


def test_parameter_counts_match_the_reference():
    # CycleGAN prints "[Network G_A] Total number of parameters : 11.378 M" and "[Network D_A] ... : 2.765 M".
    assert f"{_count(ResnetGenerator(3, 3, 64, 9)) / 1e6:.3f}" == "11.378"
    assert f"{_count(PatchDiscriminator(3, 64, 3)) / 1e6:.3f}" == "2.765"
