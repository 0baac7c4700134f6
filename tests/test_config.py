import functools
import re
from typing import Any

import numpy as np
import pytest
import torch

from gan_dist import seeds
from gan_dist.config import MAX_SEED, Config, load_config, parse_override
from gan_dist.data.reader import DataPosition, InMemoryReader
from gan_dist.errors import UserError


def test_default_preset_trains_locally_on_embedded_digits():
    cfg = load_config()
    assert cfg.preset == "dcgan-digits"
    assert cfg.data.path is None
    assert cfg.run.resolved_backend() == "local"


def test_overrides_are_typed_yaml_scalars():
    cfg = load_config(None, dict([parse_override("train.lr_g=1e-4"), parse_override("run.gpu=true")]))
    assert cfg.train.lr_g == pytest.approx(1e-4)
    assert cfg.run.gpu is True


def test_several_workers_choose_the_ray_backend():
    assert load_config(None, {"run.num_workers": 2}).run.resolved_backend() == "ray"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.lrr": 1}, "unknown config key 'train.lrr'"),
        ({"train.steps": 0}, "bad config value train.steps=0"),
        ({"train.batch_size": "many"}, "bad config value train.batch_size='many'"),
        ({"run.backend": "local", "run.num_workers": 2}, "local backend runs one process"),
        ({"train.steps.deep": 1}, "unknown config key 'train.steps.deep'"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, overrides)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError, match="presets: cifar10-sngan, cut-digits, cyclegan-digits, cyclegan-photo, "
                                        "dcgan-64, dcgan-digits, digits-cond, inpaint-digits, photo, pix2pix-digits, r3gan-cifar10, "
                                        "r3gan-digits, r3gan-ffhq64, resnet-sn-32"):
        load_config("no-such-preset")


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(UserError, match="expected key=value"):
        parse_override("train.steps")


def dotted(cfg: Config, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), cfg)


@pytest.mark.parametrize(
    "text, value",
    [
        ("run.name=2024", "2024"),
        ("run.name=~", None),
        ("data.path=null", None),
        ("run.storage=null", "null"),  # no None there: the text is the directory name
        ("run.gpu=off", False),
        ("train.seed=0x10", 16),
    ],
)
def test_overrides_are_read_by_the_type_of_their_key(text, value):
    key, override = parse_override(text)
    assert dotted(load_config(None, {key: override}), key) == value


def test_a_section_override_reads_yaml_1_2_booleans():
    assert load_config(None, dict([parse_override("train={compile: off, bf16: false}")])).train.compile == "off"


@pytest.mark.parametrize(
    "text, message",
    [
        ("train.lr_g=.inf", "train.lr_g='.inf': Input should be a finite number"),
        ("log.console_every_s=.nan", "log.console_every_s='.nan': Input should be a finite number"),
        ("run.cpus_per_worker=0.00001", "cpus_per_worker='0.00001': Input should be greater than or equal to 0.0001"),
    ],
)
def test_numbers_that_cannot_work_are_refused(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(None, dict([parse_override(text)]))


@pytest.mark.parametrize(
    "text, echo",
    [
        ("train.compile=offf", "train.compile='offf'"),
        ("train.steps=1_000.5", "train.steps='1_000.5'"),
        ("train.batch_size=0x0", "train.batch_size='0x0'"),
        ("run.gpu=maybe", "run.gpu='maybe'"),
    ],
)
def test_bad_override_echoes_the_text_as_typed(text, echo):
    with pytest.raises(UserError, match=f"^bad config value {re.escape(echo)}: [^\n]*$"):
        load_config(None, dict([parse_override(text)]))


def test_bad_literal_lists_the_valid_values():
    with pytest.raises(UserError, match="'auto', 'off', 'default', 'reduce-overhead' or 'max-autotune'"):
        load_config(None, dict([parse_override("train.compile=False")]))


@pytest.mark.parametrize("name", ["../escape", "a/b", "a\\b", "..", "a..b", ".hidden", "", "a b", "x" * 201, "run:1"])
def test_run_name_stays_one_directory_in_storage(name):
    with pytest.raises(UserError, match=r"run\.name=.*a run name is 1-200 of A-Z a-z 0-9 \. _ -"):
        load_config(None, {"run.name": name})


@pytest.mark.parametrize("name", ["digits", "2024-01-01_v1.2", "x" * 200])
def test_plain_run_names_pass(name):
    assert load_config(None, dict([parse_override(f"run.name={name}")])).run.name == name


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**63])
def test_seed_out_of_range_names_the_range(seed):
    with pytest.raises(UserError, match=f"train.seed={seed}: a seed is 0 to {MAX_SEED}"):
        load_config(None, {"train.seed": seed})


def test_largest_seed_works_in_every_seeded_draw():
    """The largest seed the config takes reaches every draw whole: each purpose's seed is its own 63-bit value that
    torch and numpy take as it is, not the stream of the seed's low 32 bits; the reader shuffles with it at any
    epoch."""
    seed = load_config(None, {"train.seed": MAX_SEED}).train.seed
    assert seed == MAX_SEED
    drawn = {purpose: seeds.derive(seed, purpose, 1023, 10**9) for purpose in seeds.PURPOSES}
    assert len(set(drawn.values())) == len(drawn) and all(0 <= value <= MAX_SEED for value in drawn.values())
    assert all(value != seeds.derive(seed & 0xFFFFFFFF, purpose, 1023, 10**9) for purpose, value in drawn.items())
    for value in drawn.values():
        assert torch.Generator().manual_seed(value).initial_seed() == value
        assert np.random.default_rng(value).bit_generator.seed_seq.entropy == value
    images = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1)  # each row's one pixel is its number
    reader = InMemoryReader({"image": images}, 2, seed, shuffle=True, rank=1023)

    def epoch_rows() -> list[int]:
        batches = reader.batches(DataPosition(epoch=10**6))
        return [int(row) for _ in range(2) for row in next(batches)[0]["image"].flatten()]
    assert sorted(epoch_rows()) == [0, 1, 2, 3] and epoch_rows() == epoch_rows()  # a permutation, repeatable


def test_seeds_differ_by_purpose_rank_and_step_and_repeat_exactly():
    drawn = {seeds.derive(7, purpose, rank, step) for purpose in ("latents", "epoch_order")
             for rank in range(3) for step in range(100)}
    assert len(drawn) == 600 and all(0 <= s < 2**63 for s in drawn)
    assert seeds.derive(7, "latents", 1, 5) == seeds.derive(7, "latents", 1, 5) != seeds.derive(8, "latents", 1, 5)
    with pytest.raises(ValueError, match="unknown seed purpose"):
        seeds.derive(7, "latent")


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: 5\n", "config section 'train' must be a mapping of its keys, not 5"),
        ("train:\n  - 1\n", "config section 'train' must be a mapping of its keys, not [1]"),
        ("train:\n", "config section 'train' must be a mapping of its keys, not None"),
        ("train.steps: 5\n", "config key 'train.steps' has a dot in its name; in a YAML file nest it (train: {"),
        ("train:\n  lr.g: 5\n", "config key 'train.lr.g' has a dot in its name"),
        ("", "is empty; write its sections (task, data, model, train, schedule, eval, run, log)"),
        ("# all commented out\n", "is empty"),
        ("just words\n", "must hold a mapping of sections (task, data, model, train, schedule, eval, run, log), not str"),
        ("- train\n", "must hold a mapping of sections (task, data, model, train, schedule, eval, run, log), not list"),
        ("train: {steps: [1\n", "is not valid YAML"),
        (b"\xff\xfe\x00\x81binary", "is not valid YAML"),
        ("run:\n  backend: local\n  num_workers: 2\n", "bad config section 'run': the local backend runs one process"),
    ],
)
def test_yaml_structure_errors_are_one_line(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        load_config(str(path))
    assert "\n" not in str(caught.value)


def test_an_override_into_a_scalar_section_names_the_section(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train: 5\n")
    with pytest.raises(UserError, match="config section 'train' must be a mapping of its keys, not 5"):
        load_config(str(path), {"train.steps": 1})  # as `--steps 1` adds


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(UserError, match="is a directory; expected a preset name or a YAML config file"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("key", ["train.steps", "train.lr_g", "run.num_workers"])
def test_true_or_false_is_not_a_number(key):
    with pytest.raises(UserError, match=f"bad config value {key}='true': expected a number, not true/false"):
        load_config(None, dict([parse_override(f"{key}=true")]))
