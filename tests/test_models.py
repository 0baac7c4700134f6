import pytest
import torch
import torch.nn.functional as F

from gan_dist.config import DCGANConfig, ResNetSNConfig
from gan_dist.models import build_discriminator, build_generator, resnet_sn, update_spectral_norms
from gan_dist.models.dcgan import Discriminator, Generator
from gan_dist.models.spectral import SNConv2d, SNLinear, SpectralNorm


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_output_matches_discriminator_input(resolution, channels):
    G = Generator(resolution, channels, z_dim=16, width=8)
    D = Discriminator(resolution, channels, width=8)
    images = G(torch.randn(5, 16))
    assert images.shape == (5, channels, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images).shape == (5,)


@pytest.mark.parametrize("resolution", [4, 24, 100])
def test_resolution_must_be_a_power_of_two(resolution):
    with pytest.raises(ValueError, match="power-of-two resolution"):
        Generator(resolution, 1)


def _true_spectral_norm(weight):
    return torch.linalg.matrix_norm(weight.detach().flatten(1), ord=2)


def _sn_layers(net):
    return [m for m in net.modules() if isinstance(m, (SNConv2d, SNLinear))]


def _tiny_sn_discriminator(seed=0):
    torch.manual_seed(seed)
    return resnet_sn.Discriminator(16, 3, width=8)


def _hinge_d_loss(D, real, fake):
    return F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()


@pytest.mark.parametrize("make", [lambda: SNConv2d(6, 16, 3), lambda: SNLinear(20, 7), _tiny_sn_discriminator])
def test_spectral_norm_is_accurate_from_construction(make):
    torch.manual_seed(0)
    layers = _sn_layers(make())  # the D's layers were re-initialised (xavier) after construction
    assert layers
    for layer in layers:
        true = _true_spectral_norm(layer.weight)
        assert abs(layer.sigma().item() / true.item() - 1) < 0.02
        effective = layer.weight.detach() / layer.sigma().detach()
        assert _true_spectral_norm(effective).item() == pytest.approx(1, abs=0.02)


def test_spectral_norm_forward_matches_torch_given_the_same_u_v():
    # torch's parametrization in eval mode skips its power iteration: same sigma = u·(W v), gradient through sigma.
    torch.manual_seed(0)
    ours = SNConv2d(3, 5, 3)
    theirs = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(3, 5, 3)).eval()
    with torch.no_grad():
        theirs.parametrizations.weight.original.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
        theirs.parametrizations.weight[0]._u.copy_(ours.sn_u)
        theirs.parametrizations.weight[0]._v.copy_(ours.sn_v)
    x = torch.randn(2, 3, 8, 8)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs)
    (out_ours**2).sum().backward()
    (out_theirs**2).sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.parametrizations.weight.original.grad)


def test_forward_is_pure_and_update_spectral_norms_runs_one_iteration_per_layer():
    D = _tiny_sn_discriminator()
    buffers = {k: v.clone() for k, v in D.state_dict().items() if k.endswith(("sn_u", "sn_v"))}
    D(torch.randn(4, 3, 16, 16)).sum().backward()
    assert all(torch.equal(D.state_dict()[k], v) for k, v in buffers.items())

    with torch.no_grad():  # an optimizer step moves the weights; the next power iteration follows them
        for p in D.parameters():
            p.add_(torch.randn_like(p))
    # 16x16: optimized block (2 convs + 1x1 shortcut) + two 8x8 blocks (2 convs each) + the final linear
    assert update_spectral_norms(D) == len(_sn_layers(D)) == 8
    assert all(not torch.equal(D.state_dict()[k], v) for k, v in buffers.items() if k.endswith("sn_v"))
    assert not any(isinstance(m, SpectralNorm) for m in Discriminator(16, 3, width=8).modules())


def test_discriminator_runs_twice_then_one_backward():
    D = _tiny_sn_discriminator()
    real, fake = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    loss = _hinge_d_loss(D, real, fake)
    update_spectral_norms(D)  # an in-place buffer write before backward (as a DDP buffer broadcast would do)
    loss.backward()
    for p in D.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_sigma_is_float32_under_bf16_autocast():
    layer = SNConv2d(3, 8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sigma = layer.sigma()
        out = layer(torch.randn(2, 3, 8, 8))
    assert sigma.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert torch.equal(sigma, layer.sigma())


def test_compiled_discriminator_matches_eager_and_reads_updated_buffers():
    D = _tiny_sn_discriminator()
    compiled = torch.compile(D, backend="aot_eager", fullgraph=True)
    real, fake = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)

    def loss_and_grads(net):
        D.zero_grad(set_to_none=True)
        loss = _hinge_d_loss(net, real, fake)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in D.parameters()]

    for _ in range(2):  # the second round checks that the graph reads the buffers rather than baking them in
        with torch.no_grad():
            for p in D.parameters():
                p.mul_(1.5)
        update_spectral_norms(D)
        eager_loss, eager_grads = loss_and_grads(D)
        compiled_loss, compiled_grads = loss_and_grads(compiled)
        torch.testing.assert_close(compiled_loss, eager_loss)
        for got, expected in zip(compiled_grads, eager_grads):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("resolution", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_resnet_sn_output_shapes(resolution, channels):
    model = ResNetSNConfig(z_dim=16, g_channels=8, d_channels=8)
    G, D = build_generator(model, resolution, channels), build_discriminator(model, resolution, channels)
    assert isinstance(G, resnet_sn.Generator) and isinstance(D, resnet_sn.Discriminator)
    assert (G.z_dim, G.resolution, G.channels) == (16, resolution, channels)
    images = G(torch.randn(2, 16))
    assert images.shape == (2, channels, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images).shape == (2,)


@pytest.mark.parametrize("resolution", [8, 48])
@pytest.mark.parametrize("net", [resnet_sn.Generator, resnet_sn.Discriminator])
def test_resnet_sn_resolution_must_be_a_power_of_two_from_16(net, resolution):
    with pytest.raises(ValueError, match=f"power-of-two resolution >= 16, got {resolution}"):
        net(resolution, 3)


def test_resnet_sn_matches_the_reference_parameter_counts():
    # SNGAN_G() and SNGAN_D() of the reference benchmark (reference_gan_bench.py, the CIFAR-10 ResNet SNGAN),
    # counted with sum(p.numel() for p in net.parameters()).
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(resnet_sn.Generator(32, 3, 128, 256)) == 4_079_363
    assert count(resnet_sn.Discriminator(32, 3, 128)) == 1_053_825


def test_spectral_norm_state_dict_round_trip():
    D = _tiny_sn_discriminator(seed=0)
    with torch.no_grad():
        for p in D.parameters():
            p.add_(torch.randn_like(p))
    update_spectral_norms(D)
    state = D.state_dict()
    assert {"fc.weight", "fc.bias", "fc.sn_u", "fc.sn_v"} <= state.keys()
    restored = _tiny_sn_discriminator(seed=1)
    restored.load_state_dict(state)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key]), key
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(restored(images), D(images))


@pytest.mark.parametrize("model", [DCGANConfig(z_dim=16, g_channels=8, d_channels=8, label_dim=4),
                                   ResNetSNConfig(z_dim=16, g_channels=8, d_channels=8)], ids=["dcgan", "resnet_sn"])
def test_conditional_nets_depend_on_the_class(model):
    torch.manual_seed(0)
    G, D = build_generator(model, 16, 1, num_classes=3), build_discriminator(model, 16, 1, num_classes=3)
    with torch.no_grad():  # a trained net's class parameters are not at their initial values (gain 1, bias 0)
        for name, p in [*G.named_parameters(), *D.named_parameters()]:
            if "embed" in name or "gain" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.5)
    G.eval()
    z = torch.randn(4, 16)
    zero, two = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.full((4,), 2))
    assert zero.shape == (4, 1, 16, 16) and not torch.allclose(zero, two)
    images = torch.randn(4, 1, 16, 16)
    assert D(images, torch.zeros(4, dtype=torch.long)).shape == (4,)
    assert not torch.allclose(D(images, torch.zeros(4, dtype=torch.long)), D(images, torch.full((4,), 2)))


def test_conditional_resnet_sn_uses_class_batch_norm_and_a_spectrally_normalised_projection():
    model = ResNetSNConfig(z_dim=16, g_channels=8, d_channels=8)
    G, D = build_generator(model, 16, 1, num_classes=10), build_discriminator(model, 16, 1, num_classes=10)
    gains = [m for m in G.modules() if isinstance(m, resnet_sn.ClassBatchNorm) and m.gain is not None]
    assert len(gains) == 4 and all(m.gain.weight.shape == (10, 8) for m in gains)  # 2 blocks x 2 norms
    assert isinstance(D.embed, SpectralNorm) and update_spectral_norms(D) == len(_sn_layers(D)) + 1
