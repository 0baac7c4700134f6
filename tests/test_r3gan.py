"""R3GAN on CPU: the relativistic pairing loss, R1 and R2 against closed forms and autograd, the networks' shapes,
initialisation and resamplers, and the cosine schedules."""

import math

import pytest
import torch
import torch.nn.functional as F

from gan_dist.config import load_config
from gan_dist.errors import UserError
from gan_dist.models import build_discriminator, build_generator, r3gan
from gan_dist.train import losses, speed
from gan_dist.train.adversary import Adversary
from gan_dist.train.schedule import Schedule, cosine

CPU = torch.device("cpu")
SMALL = {"model.arch": "r3gan", "model.g_channels": 16, "model.d_channels": 16}


def logits(seed: int, n: int = 6) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 3


def test_relativistic_loss_ignores_a_constant_is_log2_at_a_tie_and_swaps_into_the_g_loss():
    real, fake = logits(0), logits(1)
    d = losses.d_relativistic(real, fake)
    assert losses.d_relativistic(real + 7.5, fake + 7.5).item() == pytest.approx(d.item(), rel=1e-6)
    assert losses.d_relativistic(real, real).item() == pytest.approx(math.log(2))
    assert losses.g_relativistic(real, fake).item() == pytest.approx(d.item(), rel=0, abs=0)  # swapped pair
    assert losses.g_relativistic(fake, real).item() == pytest.approx(F.softplus(real - fake).mean().item())
    # each real is judged against its own fake: pairing, not the batch means
    assert losses.d_relativistic(real, fake).item() != pytest.approx(
        losses.d_relativistic(real, fake.flip(0)).item())


class LinearD(torch.nn.Module):
    """D(x) = w·x: the input gradient is w for every image, so R1 = R2 = |w|² per image."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1, 1, size))

    def forward(self, x, labels=None):
        return x.flatten(1) @ self.weight


class HalfSquareD(torch.nn.Module):
    """D(x) = s/2 |x|²: the input gradient is s·x, so the penalty per image is s²|x|²."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, labels=None):
        return self.scale / 2 * x.flatten(1).square().sum(dim=1)


def adversary(D: torch.nn.Module, **train) -> Adversary:
    t = load_config(None, {f"train.{k}": v for k, v in {"loss": "rpgan", "r1_every": 1, **train}.items()}).train
    return Adversary(t, D, speed.resolve(t, CPU, torch.nn.Linear(1, 1)), CPU, rank=0, world_size=1,
                     global_batch=t.batch_size)


def images(seed: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("r1, r2", [(2.0, 0.0), (0.0, 3.0), (2.0, 3.0)])
def test_r1_and_r2_of_a_linear_d_are_gamma_halves_times_its_squared_weight(r1, r2):
    D = LinearD(16)
    adv = adversary(D, r1_gamma=r1, r2_gamma=r2)
    real, fake = images(0), images(1)
    loss, real_logits, fake_logits = adv.discriminator_loss(real, fake, None, None, 0, 0)
    w2 = D.weight.detach().square().sum().item()
    penalty = loss.item() - losses.d_relativistic(real_logits, fake_logits).item()
    assert penalty == pytest.approx((r1 + r2) / 2 * w2, rel=1e-5)
    loss.backward()  # the penalties' share of D's gradient: (r1 + r2) w, beside the loss's
    loss_only = losses.d_relativistic(D(real), D(fake))
    plain, = torch.autograd.grad(loss_only, D.weight)
    torch.testing.assert_close(D.weight.grad - plain, (r1 + r2) * D.weight.detach(), rtol=1e-5, atol=1e-6)


def test_r1_and_r2_of_a_half_square_d_are_the_squared_norms_of_the_images():
    D = HalfSquareD()
    adv = adversary(D, r1_gamma=2.0, r2_gamma=2.0)  # gamma/2 = 1: the penalty is E|x_real|² + E|x_fake|²
    real, fake = images(2), images(3)
    loss, real_logits, fake_logits = adv.discriminator_loss(real, fake, None, None, 0, 0)
    want = real.flatten(1).square().sum(1).mean() + fake.flatten(1).square().sum(1).mean()
    assert loss.item() - losses.d_relativistic(real_logits, fake_logits).item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert D.scale.grad is not None and D.scale.grad.abs() > 0  # the penalty trains D: a double backward


def test_r1_and_r2_match_an_autograd_reference_on_the_r3gan_discriminator():
    cfg = load_config(None, SMALL)
    D = build_discriminator(cfg.model, 16, 1)
    adv = adversary(D, r1_gamma=0.5, r2_gamma=0.25)
    real, fake = torch.randn(5, 1, 16, 16), torch.randn(5, 1, 16, 16)
    loss, _, _ = adv.discriminator_loss(real, fake, None, None, 0, 0)
    loss.backward()
    got = [p.grad.clone() for p in D.parameters()]
    # reference: each penalty on its own forward, as R3GAN's Trainer.py computes them
    D.zero_grad()
    r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    real_logits, fake_logits = D(r), D(f)
    g_r, = torch.autograd.grad(real_logits.sum(), r, create_graph=True)
    g_f, = torch.autograd.grad(fake_logits.sum(), f, create_graph=True)
    want_loss = (F.softplus(fake_logits - real_logits) + 0.25 * g_r.square().sum((1, 2, 3))
                 + 0.125 * g_f.square().sum((1, 2, 3))).mean()
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    want_loss.backward()
    for mine, theirs in zip(got, (p.grad for p in D.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_lazy_r1_and_r2_run_together_every_kth_update_scaled_by_k():
    D = LinearD(16)
    adv = adversary(D, r1_gamma=1.0, r2_gamma=1.0, r1_every=2)
    w2 = D.weight.detach().square().sum().item()
    penalties = []
    for step in range(4):
        loss, real_logits, fake_logits = adv.discriminator_loss(images(0), images(1), None, None, step, 0)
        penalties.append(loss.item() - losses.d_relativistic(real_logits, fake_logits).item())
    assert penalties == pytest.approx([2 * w2, 0, 2 * w2, 0], abs=1e-5)


def test_the_g_update_pairs_each_fake_with_a_real_image():
    D = LinearD(16)
    adv = adversary(D)
    real, fake = images(4), images(5).requires_grad_(True)
    loss = adv.generator_loss(fake, real, None, 0)
    assert loss.item() == pytest.approx(losses.d_relativistic(D(fake), D(real)).item(), rel=1e-6)
    loss.backward()
    assert fake.grad is not None and D.weight.grad is None  # D frozen in the G update


def test_a_fresh_residual_block_is_the_identity_and_its_other_convs_are_variance_scaled():
    block = r3gan.ResidualBlock(32, expansion=2, group_channels=16, total_blocks=8)
    x = torch.randn(3, 32, 8, 8)
    assert torch.equal(block(x), x)
    assert block.project.weight.abs().max() == 0
    assert block.spatial.groups == 64 // 16
    # He's std for leaky ReLU 0.2, scaled by L^(-1/4): the 1x1 expand has fan-in 32
    want = r3gan.ACTIVATION_GAIN * 8 ** -0.25 / math.sqrt(32)
    assert block.expand.weight.std().item() == pytest.approx(want, rel=0.1)


def test_the_resamplers_are_the_reference_low_pass_filter():
    x = torch.randn(2, 3, 8, 8)
    kernel = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    # R3GAN's reference: every channel alone through a one-channel (transposed) conv
    one = x.reshape(6, 1, 8, 8)
    up = F.conv_transpose2d(one, kernel.view(1, 1, 4, 4) * 4, stride=2, padding=1).view(2, 3, 16, 16)
    down = F.conv2d(one, kernel.view(1, 1, 4, 4), stride=2, padding=1).view(2, 3, 4, 4)
    torch.testing.assert_close(r3gan.Upsample()(x)[..., 1:-1, 1:-1], up[..., 1:-1, 1:-1])  # the edges: extended
    torch.testing.assert_close(r3gan.Downsample()(x), down)
    flat = -torch.ones(1, 2, 8, 8)  # black stays black up to the border of G's images; D's border is zero-padded
    assert torch.equal(r3gan.Upsample()(flat), -torch.ones(1, 2, 16, 16))
    assert torch.allclose(r3gan.Downsample()(flat)[..., 1:-1, 1:-1], flat.new_full((), -1.0))


@pytest.mark.parametrize("resolution", [8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("classes", [0, 10])
def test_nets_take_and_make_every_supported_resolution(resolution, classes):
    m = load_config(None, {**SMALL, "model.z_dim": 8, "model.blocks": 1}).model
    G, D = build_generator(m, resolution, 3, classes), build_discriminator(m, resolution, 3, classes)
    labels = torch.arange(2) if classes else None
    images = G(torch.randn(2, 8), labels)
    assert images.shape == (2, 3, resolution, resolution)
    assert D(images, labels).shape == (2,)


def test_widths_taper_above_the_configured_side_as_in_the_paper():
    assert r3gan.stage_widths(32, 768) == [768] * 4  # CIFAR-10: 4x4 to 32x32
    assert r3gan.stage_widths(256, 768) == [768, 768, 768, 768, 384, 192, 96]  # FFHQ-256
    assert r3gan.stage_widths(32, 64, taper_above=8) == [64, 64, 32, 16]
    with pytest.raises(ValueError, match="power-of-two resolution >= 8"):
        r3gan.stage_widths(4, 16)


def test_stages_without_blocks_resample_the_image_itself_the_same_function_at_a_fraction_of_the_work():
    m = load_config(None, {**SMALL, "model.blocks": [1, 1, 0, 0], "model.taper_above": 8}).model
    G, D = build_generator(m, 32, 1), build_discriminator(m, 32, 1)
    assert len(G.stages) == len(D.stages) == 2 and len(G.upsample) == len(D.downsample) == 2
    h, x = torch.randn(2, 16, 8, 8), torch.randn(2, 1, 32, 32)
    up, down = r3gan.Upsample(), r3gan.Downsample()
    # the reference's order: each stage's width change, then its resampling, at every width on the way
    torch.testing.assert_close(G.upsample(G.to_image(G.narrow(h))), G.to_image(up(G.narrow[1](up(G.narrow[0](h))))))
    torch.testing.assert_close(D.widen(D.from_image(D.downsample(x))), D.widen[1](down(D.widen[0](down(D.from_image(x))))))
    with pytest.raises(UserError, match=r"model.blocks lists 3 stages and these images need 4"):
        build_generator(load_config(None, {**SMALL, "model.blocks": [1, 1, 0]}).model, 32, 1)
    with pytest.raises(UserError, match=r"model.blocks=\[0, 0\]: blocks per stage are 0 or more, at least one"):
        load_config(None, {**SMALL, "model.blocks": [0, 0]})


def test_a_conditional_d_is_a_pure_projection_of_its_features_on_the_class_embedding():
    m = load_config(None, SMALL).model
    D = build_discriminator(m, 16, 1, num_classes=4)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        D.embed.weight.zero_()
    assert torch.equal(D(x, torch.tensor([0, 1, 2])), torch.zeros(3))


def test_each_schedule_starts_at_the_train_value_is_halfway_at_the_middle_and_ends_at_its_target():
    assert [cosine(2.0, 1.0, p) for p in (0, 0.5, 1, 2)] == pytest.approx([2.0, 1.5, 1.0, 1.0])
    cfg = load_config(None, {**SMALL, "train.loss": "rpgan", "train.r1_gamma": 0.05, "train.r2_gamma": 0.05,
                             "train.beta2": 0.9, "train.augment": "translation", "train.augment_p": 0.0,
                             "train.ema_half_life_kimg": 0.0, "train.lr_g": 2e-4, "train.lr_d": 2e-4,
                             "train.steps": 100, "train.batch_size": 10,
                             "schedule.lr_g": 5e-5, "schedule.lr_d": 1e-4, "schedule.beta2": 0.99,
                             "schedule.r1_gamma": 0.005, "schedule.r2_gamma": 0.01, "schedule.augment_p": 0.5,
                             "schedule.ema_half_life_kimg": 4.0})
    schedule = Schedule(cfg, images_per_step=10)  # null kimg: the whole run, 100 x 10 images
    start, middle, end = (schedule.at(step, step * 10) for step in (0, 50, 100))
    assert start.lr_factors == {"G": 1.0, "D": 1.0}
    assert start.values == {"beta2": 0.9, "r1_gamma": 0.05, "r2_gamma": 0.05, "augment_p": 0.0,
                            "ema_half_life_kimg": 0.0}
    assert middle.lr_factors == pytest.approx({"G": (2e-4 + 5e-5) / 2 / 2e-4, "D": 0.75})
    assert middle.values == pytest.approx({"beta2": 0.945, "r1_gamma": 0.0275, "r2_gamma": 0.03, "augment_p": 0.25,
                                           "ema_half_life_kimg": 2.0})
    assert end.lr_factors == pytest.approx({"G": 0.25, "D": 0.5})
    assert end.values == pytest.approx({"beta2": 0.99, "r1_gamma": 0.005, "r2_gamma": 0.01, "augment_p": 0.5,
                                        "ema_half_life_kimg": 4.0})
    assert Schedule(load_config(None, {"schedule.kimg": 0.5, "schedule.beta2": 0.5}), 10).at(50, 500).values == {
        "beta2": pytest.approx(0.5)}  # kimg: its own length, here half the run


def test_a_task_follows_the_schedule_in_its_optimizers_adversary_and_ema(tiny_data):
    from gan_dist.data.placement import Dataset
    from gan_dist.data.reader import read_manifest
    from gan_dist.train.tasks.generation import GenerationTask
    from gan_dist.train.schedule import Hyperparameters

    cfg = load_config(None, {**SMALL, "data.path": tiny_data, "model.conditional": False, "train.loss": "rpgan",
                             "train.r1_gamma": 1.0, "train.r2_gamma": 1.0, "train.augment": "translation"})
    task = GenerationTask(cfg, {"train": Dataset(tiny_data, read_manifest(tiny_data))}, CPU)
    task.follow_schedule(Hyperparameters({"G": 0.5, "D": 0.25}, {"beta2": 0.95, "r1_gamma": 0.3, "r2_gamma": 0.2,
                                                                  "augment_p": 0.4, "ema_half_life_kimg": 7.0}))
    assert task.opt_g.param_groups[0]["lr"] == cfg.train.lr_g / 2 and task.opt_d.param_groups[0]["lr"] == cfg.train.lr_d / 4
    assert task.opt_g.param_groups[0]["betas"] == (cfg.train.beta1, 0.95)
    assert task.adversary.gammas.tolist() == pytest.approx([0.3, 0.2]) and task.adversary.p.item() == pytest.approx(0.4)
    assert task.ema.half_life_kimg == 7.0
    assert task.learning_rates()["beta2"] == 0.95  # logged beside the rates


@pytest.mark.parametrize("overrides, message", [
    ({"schedule.r2_gamma": 0.1}, r"schedule.r2_gamma moves a penalty that is off: set train.r2_gamma > 0"),
    ({"schedule.augment_p": 0.5}, r"schedule.augment_p needs train.augment on"),
    ({"train.augment": "color", "train.ada_target": 0.6, "schedule.augment_p": 0.5}, r"train.ada_target null"),
    ({"train.ema": False, "schedule.ema_half_life_kimg": 5}, r"needs train.ema=true"),
    ({"train.lr_decay_start": 0.5, "schedule.lr_g": 1e-5}, r"choose one learning-rate schedule"),
    ({"schedule.beta2": 1.0}, r"schedule.beta2=1.0"),
    ({"schedule.lr": 1e-5}, r"unknown config key 'schedule.lr'"),
])
def test_a_schedule_that_cannot_apply_is_one_line(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(None, overrides)
