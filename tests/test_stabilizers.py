"""The stabilizers of the adversarial step, on CPU: augmentation and its adaptive probability, R1, WGAN-GP, LeCam,
n_dis, and that the step with all of them on never asks the host a question."""

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from gan_dist.config import PRESET_DIR, load_config
from gan_dist.data.placement import Dataset
from gan_dist.data.prepare import write_shards
from gan_dist.data.reader import read_manifest
from gan_dist.errors import UserError
from gan_dist.train import losses, speed
from gan_dist.train.tasks import build_task
from gan_dist.train.adversary import Adversary, LeCam
from gan_dist.train.augment import AdaptiveProbability, augment, cutout, translation
from gan_dist.train.tasks.generation import GenerationTask
from gan_dist.train.schedule import Schedule
from helpers import EVERY_SWITCH, numbered_images, tiny_config

CPU = torch.device("cpu")


def draws(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 6, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=draws(1)) * 2 - 1


def test_augmentation_is_a_function_of_its_seed_and_p_zero_is_the_identity():
    x, every = images(), ("translation", "cutout", "color")
    assert torch.equal(augment(x, every, 1.0, draws(5)), augment(x, every, 1.0, draws(5)))
    assert not torch.equal(augment(x, every, 1.0, draws(5)), augment(x, every, 1.0, draws(6)))
    torch.testing.assert_close(augment(x, every, 0.0, draws(5)), x)  # colour's identity is x - mean + mean
    # asked in any order, applied in DiffAugment's
    assert torch.equal(augment(x, ("cutout", "color"), 1.0, draws(5)), augment(x, ("color", "cutout"), 1.0, draws(5)))


def test_cutout_zeroes_a_square_of_half_the_side_and_translation_moves_content():
    ones = torch.ones(64, 1, 16, 16)
    zeroed = (cutout(ones, 1.0, draws(0)) == 0).sum(dim=(1, 2, 3))
    # an 8x8 square, clipped where it hangs over the edge (its centre stays inside)
    assert zeroed.max() == 64 and zeroed.min() >= 16 and (zeroed < 64).any()
    dot = torch.zeros(64, 1, 16, 16)
    dot[:, :, 8, 8] = 1
    moved = translation(dot, 1.0, draws(0))
    assert torch.equal(moved.sum(dim=(1, 2, 3)), torch.ones(64))  # a shift of up to 2 keeps the dot inside
    where = moved.flatten(1).argmax(dim=1)
    rows, cols = where // 16 - 8, where % 16 - 8
    assert rows.abs().max() == 2 and cols.abs().max() == 2 and len(set(zip(rows.tolist(), cols.tolist()))) > 10


def test_each_transform_applies_to_an_image_with_probability_p():
    x = images(400)
    changed = ((augment(x, ("color",), 0.3, draws(2)) - x).abs() > 1e-5).flatten(1).any(dim=1).float().mean()
    # three colour transforms, each with p = 0.3: an image is untouched with probability 0.7^3
    assert abs(changed.item() - (1 - 0.7**3)) < 0.08


def test_augmentation_is_differentiable_with_respect_to_the_images():
    x = images().requires_grad_(True)
    augment(x, ("translation", "cutout", "color"), 1.0, draws(3)).square().sum().backward()
    assert (x.grad != 0).all()  # colour's means reach every pixel
    x.grad = None
    augment(x, ("translation", "cutout"), 1.0, draws(3)).square().sum().backward()
    assert (x.grad != 0).any() and (x.grad == 0).any()  # cut-out and shifted-out pixels get none


def test_adaptive_p_rises_while_d_is_sure_of_the_reals_and_falls_otherwise():
    ada = AdaptiveProbability(0.5, target=0.6, interval=2, kimg=1.0, images_per_update=100, device=CPU)
    for step in range(4):  # D(real) > 0 everywhere: overfitting, p rises 0.1 per update at intervals' ends
        ada.observe(torch.ones(8))
        ada.adjust(step)
        assert ada.p.item() == pytest.approx([0.5, 0.7, 0.7, 0.9][step])
    for step in range(4, 10):
        ada.observe(-torch.ones(8))
        ada.adjust(step)
    assert ada.p.item() == pytest.approx(0.3)
    for step in range(10, 30):
        ada.observe(-torch.ones(8))
        ada.adjust(step)
    assert ada.p.item() == 0.0  # clamped


def test_lecam_pulls_each_side_toward_the_others_running_mean():
    lecam = LeCam(weight=2.0, decay=0.5, device=CPU)
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([-1.0, -3.0])
    # the first update sets the means (real 2, fake -2): relu(real + 2)^2 and relu(2 - fake)^2
    assert lecam(real, fake).item() == pytest.approx(2.0 * ((25 + 9) / 2 + (9 + 25) / 2))
    lecam(torch.zeros(2), torch.zeros(2))
    assert lecam.means.tolist() == [1.0, -1.0]  # halfway to 0


class Linear(torch.nn.Module):
    """D(x) = w·x: its input gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((size,), 0.5))

    def forward(self, x, labels=None):
        return x.flatten(1) @ self.weight


def adversary(**overrides) -> Adversary:
    """The default preset's train section with its R1 off unless asked for."""
    t = load_config(None, {f"train.{k}": v for k, v in {"r1_gamma": 0.0, **overrides}.items()}).train
    features = speed.resolve(t, CPU, torch.nn.Linear(1, 1))
    return Adversary(t, Linear(16), features, CPU, rank=0, world_size=1, global_batch=t.batch_size)


def test_lazy_r1_runs_every_kth_update_scaled_by_k():
    adv = adversary(r1_gamma=2.0, r1_every=3, n_dis=1)
    real, fake = torch.ones(4, 1, 4, 4), torch.zeros(4, 1, 4, 4)
    plain = losses.d_nonsaturating(torch.full((4,), 8.0), torch.zeros(4))  # w·1 = 16 × 0.5
    penalties = []
    for step in range(6):
        loss, _, _ = adv.discriminator_loss(real, fake, None, None, step, 0)
        penalties.append((loss - plain).item())
    # |grad|^2 = 16 × 0.25 = 4; gamma/2 × k × 4 = 12 at D updates 0 and 3
    assert penalties == pytest.approx([12.0, 0, 0, 12.0, 0, 0], abs=1e-5)
    loss, _, _ = adv.discriminator_loss(real, fake, None, None, 0, 0)
    loss.backward()
    assert adv.D.weight.grad is not None  # the penalty trains D (a double backward)


def test_gradient_penalty_is_lambda_times_squared_distance_of_the_gradient_norm_from_one():
    adv = adversary(loss="wgan", gp_weight=10.0)
    real, fake = torch.ones(4, 1, 4, 4), torch.zeros(4, 1, 4, 4)
    loss, real_logits, fake_logits = adv.discriminator_loss(real, fake, None, None, 0, 0)
    # |grad| = |w| = sqrt(16 × 0.25) = 2: 10 × (2 - 1)^2; the critic's loss D(fake) - D(real) = 0 - 8
    assert loss.item() == pytest.approx(10.0 - 8.0)
    assert losses.g_wasserstein(fake_logits).item() == 0.0


def test_d_updates_per_step_read_their_own_rows(tiny_data, tmp_path):
    from helpers import local_ctx
    from gan_dist.train.loop import train_loop
    from gan_dist import checkpoint

    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.n_dis": 3, "train.steps": 4, "train.checkpoint_every": 4})
    train_loop(local_ctx(cfg, tmp_path / "run"), cfg)
    state = checkpoint.load_state(checkpoint.latest_complete(str(tmp_path / "run")))
    assert state["optimizers"]["D"]["state"][0]["step"] == 12 and state["optimizers"]["G"]["state"][0]["step"] == 4
    assert state["train"]["images_seen"] == 4 * 3 * 8  # every D update a batch of real images


def test_unknown_augmentation_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"train.augment='flip'.*translation, cutout, color"):
        load_config(None, {"train.augment": "flip"})
    assert load_config(None, {"train.augment": "color, translation"}).train.augmentations() == ("color", "translation")


# R3GAN's: the relativistic loss, R1 and R2 in one double backward every update, the class-paired fakes, a
# scheduled augmentation probability.
R3GAN_SWITCHES = {"model.arch": "r3gan", "model.conditional": True, "train.loss": "rpgan", "train.r1_gamma": 0.1,
                  "train.r2_gamma": 0.1, "train.r1_every": 1, "train.augment": "translation,cutout,color",
                  "train.augment_p": 0.2, "schedule.augment_p": 0.5, "schedule.r1_gamma": 0.01}


@pytest.mark.parametrize("switches", [EVERY_SWITCH, R3GAN_SWITCHES], ids=["every_stabilizer", "r3gan"])
def test_a_step_with_every_stabilizer_never_asks_the_host(switches, tiny_data, tmp_path, monkeypatch):
    """With fused Adam skipping non-finite updates on the device (as on a GPU), a step reads nothing back: the
    CUDA-graph path can run it without a sync. Any .item(), bool() or float() of a tensor fails the test."""
    cfg = tiny_config(tiny_data, str(tmp_path), **switches)
    resolve = speed.resolve
    monkeypatch.setattr(speed, "resolve", lambda *a: dataclasses.replace(resolve(*a), fused_adam=True))
    task = GenerationTask(cfg, {"train": Dataset(tiny_data, read_manifest(tiny_data))}, CPU)
    schedule = Schedule(cfg, images_per_step=16)
    batch = {"train": {"image": torch.randint(0, 256, (16, 16, 16, 1), dtype=torch.uint8),
                       "label": torch.zeros(16, dtype=torch.int64)}}

    def refuse(*_):
        raise AssertionError("a host read inside the step")

    with monkeypatch.context() as patched:
        for name in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy"):
            patched.setattr(torch.Tensor, name, refuse)
        outs = []
        for step in range(4):  # the schedules' values reach the device without a read back either
            task.follow_schedule(schedule.at(step, step * 16))
            outs.append(task.train_step(batch, step))
    assert all(torch.isfinite(value).all() for out in outs for value in out.values())
    assert outs[-1]["augment_p"] > 0 and outs[-1]["penalty_D"] > 0


def built_recipe(task) -> dict:
    """What a built task will train with, read from its parts rather than its config: each discriminator's loss,
    augmentation, R1/R2 and LeCam, the optimizers' rates and betas, the EMA generator, the image pools, the masks."""
    def shared(values):  # every discriminator (and optimizer) of a task follows the one recipe
        values = list(values)
        assert all(value == values[0] for value in values), values
        return values[0]

    adversaries, ema = task.adversaries, getattr(task, "ema", None)
    groups = [optimizer.param_groups[0] for optimizer in task.optimizers.values()]
    recipe = {
        "train.loss": shared(next(name for name, pair in losses.LOSSES.items() if pair[0] is adversary.d_loss)
                             for adversary in adversaries),
        "train.augment": shared(",".join(adversary.transforms) or "off" for adversary in adversaries),
        "train.augment_p": shared(float(adversary.p) for adversary in adversaries),
        "train.ada_target": shared(adversary.ada and adversary.ada.target for adversary in adversaries),
        "train.r1_gamma": shared(float(adversary.gammas[0]) for adversary in adversaries),
        "train.r2_gamma": shared(float(adversary.gammas[1]) for adversary in adversaries),
        "train.lecam_weight": shared(adversary.lecam.weight if adversary.lecam else 0.0 for adversary in adversaries),
        "train.lr_g": task.optimizers["G"].param_groups[0]["lr"],
        "train.lr_d": task.optimizers["D"].param_groups[0]["lr"],
        "train.beta1": shared(group["betas"][0] for group in groups),
        "train.beta2": shared(group["betas"][1] for group in groups),
        "train.ema": ema is not None,
    }
    if adversaries[0].lecam:
        recipe["train.lecam_decay"] = shared(adversary.lecam.decay for adversary in adversaries)
    if ema is not None:
        recipe.update({"train.ema_half_life_kimg": ema.half_life_kimg, "train.ema_rampup": ema.rampup})
    if hasattr(task, "pools"):
        recipe["task.pool_size"] = shared(pool.size for pool in task.pools.values())
    if hasattr(task, "kinds"):
        recipe["task.masks"] = ",".join(task.kinds)
    return recipe


def preset_file(preset: str) -> dict:
    """The settings the preset's YAML file writes down, by dotted key."""
    return {f"{section}.{key}": value
            for section, values in yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text()).items()
            for key, value in (values or {}).items()}


LARGE_PRESETS = {"r3gan-cifar10", "r3gan-ffhq64", "cyclegan-photo"}  # a step at the papers' widths: seconds here


@pytest.mark.parametrize("preset", [pytest.param(p.stem, marks=[pytest.mark.slow] if p.stem in LARGE_PRESETS else [])
                                    for p in sorted(PRESET_DIR.glob("*.yaml"))])
def test_every_preset_builds_its_recipe_and_takes_a_finite_step(preset, tiny_data, tmp_path):
    """The built task carries what the preset's file says (its loss, augmentation, ADA, R1/R2, LeCam, rates, EMA,
    n_dis, pools, masks: a setting the loader or the task drops fails here) and takes a finite step. At the preset's
    widths (a batch of 4 on the tiny labeled data, 16x16; translation presets on 32x32 images as both domains, the
    smallest side a 70x70 PatchGAN takes; a preset listing R3GAN blocks per stage at the side its list names)."""
    preset_cfg = load_config(preset)
    names, paired = preset_cfg.dataset_names(), type(preset_cfg.task).PAIRED
    side, data = 16, tiny_data
    if paired:  # an input beside each image
        data = str(tmp_path / "pairs")
        write_shards(numbered_images(8), None, data, inputs=numbered_images(8))
    elif names != ("train",):
        side, data = 32, str(tmp_path / "domain")
        write_shards(numbered_images(8, resolution=32), None, data)
    elif isinstance(getattr(preset_cfg.model, "blocks", None), list):
        side, data = 4 * 2 ** (len(preset_cfg.model.blocks) - 1), str(tmp_path / "staged")
        write_shards(numbered_images(8, resolution=side), np.arange(8, dtype=np.int32) % 10, data,
                     class_names=[str(k) for k in range(10)])
    cfg = load_config(preset, {**{f"data.{'path' if name == 'train' else name}": data for name in names},
                               "train.batch_size": 4})
    task = build_task(cfg, {name: Dataset(data, read_manifest(data)) for name in names}, CPU)
    recipe, said = built_recipe(task), preset_file(preset)

    def setting(key: str):  # as the preset's file says, else the loaded config's default
        section, field = key.split(".")
        return said[key] if key in said else getattr(getattr(cfg, section), field)

    if "train.augment_p" not in said:  # the start p then depends on ADA: checked by the augmentation tests
        del recipe["train.augment_p"]
    # R1/R2's gammas live in float32 on the device
    assert recipe == {key: pytest.approx(setting(key), rel=1e-6) if isinstance(setting(key), float) else setting(key)
                      for key in recipe}
    rows = cfg.train.real_per_step
    batch = {name: {"image": torch.randint(0, 256, (rows, side, side, 1), dtype=torch.uint8),
                    "label": torch.arange(rows) % 10} for name in names}
    if paired:
        batch["train"]["input"] = torch.randint(0, 256, (rows, side, side, 1), dtype=torch.uint8)
    out = task.train_step(batch, 0)
    assert all(torch.isfinite(value).all() for value in out.values()), out
    d_updates = {int(moments["step"]) for moments in task.optimizers["D"].state.values()}
    assert d_updates == {setting("train.n_dis")}  # each D parameter took n_dis updates in the step
