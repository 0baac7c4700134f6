"""The step's speed switches and data placement, on CPU: what each resolves to, and that the fast paths compute
the same step as the plain one."""

import pytest
import torch

from gan_dist.config import load_config
from gan_dist.data import placement
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import read_manifest
from gan_dist.data.shards import Manifest
from gan_dist.train import losses, speed
from gan_dist.train.tasks.generation import GenerationTask
from helpers import EVERY_SWITCH, tiny_config

CPU = torch.device("cpu")


def resnet_config(tiny_data, tmp_path, **overrides):
    return tiny_config(tiny_data, str(tmp_path), **{"model.arch": "resnet_sn", "model.g_channels": 16,
                                                    "model.d_channels": 16, "train.loss": "hinge", **overrides})


def test_every_speed_switch_falls_back_on_the_cpu():
    cfg = load_config(None, {"train.compile": "auto"})
    features = speed.resolve(cfg.train, CPU, torch.nn.Linear(1, 1))
    assert (features.bf16, features.fused_adam, features.compile_mode, features.cuda_graphs) == (False, False, None, False)
    # Asked for CUDA graphs on the CPU: compiled kernels, no graphs.
    asked = speed.resolve(load_config(None, {"train.compile": "reduce-overhead"}).train, CPU, torch.nn.Linear(1, 1))
    assert (asked.compile_mode, asked.cuda_graphs) == ("default", False)
    assert "eager, bf16 off, fused Adam off" in features.describe()


def test_one_d_forward_over_real_and_fake_only_without_batch_norm(tiny_data, tmp_path):
    data = {"train": Dataset(tiny_data, read_manifest(tiny_data))}
    dcgan = GenerationTask(tiny_config(tiny_data, str(tmp_path)), data, CPU)
    resnet = GenerationTask(resnet_config(tiny_data, tmp_path), data, CPU)
    assert not dcgan.features.concat_d_forward and resnet.features.concat_d_forward
    real, fake = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    joint = resnet.adversary.logits(resnet.D, [real, fake], [None, None], seed=0)
    apart = (resnet.D(real), resnet.D(fake))
    for a, b in zip(joint, apart):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert losses.d_hinge(real, fake).item() == pytest.approx(0.25 + 0.75)  # relu(1-r).mean + relu(1+f).mean
    assert losses.g_hinge(fake).item() == pytest.approx(0.75)


RESNET = {"model.arch": "resnet_sn", "model.g_channels": 16, "model.d_channels": 16, "train.loss": "hinge"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", [{}, RESNET, {**RESNET, **EVERY_SWITCH}], ids=["dcgan", "resnet_sn", "stabilizers"])
def test_compiled_step_trains_like_the_eager_step(variant, tiny_data, tmp_path):
    """torch.compile over G and D (aot_eager: the graph capture and autograd of inductor, without a C++ build):
    spectral norm's power iteration outside the graph keeps it capturable, and three steps match eager. With every
    stabilizer on, augmentation and LeCam run around the captured D, and lazy R1 updates call D eagerly."""
    overrides = variant
    tasks = []
    for compile_mode in ("off", "default"):
        cfg = tiny_config(tiny_data, str(tmp_path), **overrides, **{"train.compile": compile_mode,
                                                                   "train.compile_backend": "aot_eager"})
        tasks.append(GenerationTask(cfg, {"train": Dataset(tiny_data, read_manifest(tiny_data))}, CPU))
    assert tasks[1].features.compile_mode == "default" and tasks[1].G_step is not tasks[1].G
    batch = {"train": {"image": torch.randint(0, 256, (8, 16, 16, 1), dtype=torch.uint8),
                       "label": torch.zeros(8, dtype=torch.int64)}}
    for step in range(3):
        eager, compiled = (task.train_step(batch, step) for task in tasks)
        torch.testing.assert_close(eager["loss_D"], compiled["loss_D"], rtol=1e-4, atol=1e-4)
    for name in ("G", "D"):
        for (key, a), b in zip(getattr(tasks[0], name).state_dict().items(), getattr(tasks[1], name).state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=f"{name}.{key}")


def _manifest(count: int, resolution: int = 64) -> Manifest:
    return Manifest(resolution=resolution, channels=3, count=count, shards=[])


def test_data_is_resident_when_a_worker_share_fits_and_streams_otherwise():
    cfg = load_config(None)
    small = placement.choose(cfg.data, _manifest(1000), 1, CPU)
    assert small.resident and small.reason.startswith("data: resident on cpu")
    memory = placement.device_memory_bytes(CPU)
    too_big = _manifest(int(memory * 0.3) // (64 * 64 * 3))  # 30% of RAM > the 25% default share
    chosen = placement.choose(cfg.data, too_big, 1, CPU)
    assert not chosen.resident and "raise data.resident_max_share" in chosen.reason
    assert placement.choose(cfg.data, too_big, 2, CPU).resident  # each of two workers keeps half
    forced = load_config(None, {"data.placement": "stream"})
    assert not placement.choose(forced.data, _manifest(10), 1, CPU).resident
