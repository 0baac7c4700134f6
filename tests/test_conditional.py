"""Class-conditional generation end to end on CPU: training on a labeled dataset, grids with a row per class, and
`gan-dist sample --class` (by index, by name, all, and the errors), plus `--raw`."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from gan_dist import checkpoint
from gan_dist.cli import main
from gan_dist.config import load_config
from gan_dist.data.reader import read_manifest
from gan_dist.data.prepare import write_shards
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from gan_dist.sample import load_generator
from gan_dist.train.tasks.generation import num_classes
from helpers import numbered_images, tiny_config

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("labeled") / "shards"
    write_shards(numbered_images(96), np.arange(96) % 3, str(out), shard_size=32, class_names=CLASSES)
    return str(out)


@pytest.fixture(scope="module")
def conditional_run(labeled, tmp_path_factory) -> str:
    storage = tmp_path_factory.mktemp("runs")
    train(tiny_config(labeled, str(storage), **{"model.conditional": True, "model.label_dim": 4}))
    return str(storage / "tiny")


def sample(capsys, *args) -> tuple[int, str]:
    code = main(["sample", *map(str, args)])
    return code, capsys.readouterr().err


def labels_of(out) -> list[tuple[str, str]]:
    with open(out / "labels.csv") as f:
        return [(row["label"], row["class_name"]) for row in csv.DictReader(f)]


def test_conditional_run_records_its_classes_and_draws_a_row_per_class(conditional_run):
    meta = checkpoint.load_meta(f"{conditional_run}/checkpoint_000000006")
    assert meta["config"]["model"]["conditional"] and meta["data"]["class_names"] == CLASSES
    grid = Image.open(f"{conditional_run}/samples/step_000000006.png")
    assert grid.size == (8 * 18 + 2, 3 * 18 + 2)  # 8 columns, one row per class, 16 px images, 2 px padding
    G = load_generator(conditional_run + "/checkpoint_000000006", torch.device("cpu")).net
    assert G.num_classes == 3


def test_sample_draws_the_asked_class_by_index_or_name(conditional_run, tmp_path, capsys):
    assert sample(capsys, conditional_run, "--num", 4, "--out", tmp_path / "i", "--class", 1) == (0, "")
    assert labels_of(tmp_path / "i") == [("1", "dog")] * 4
    assert sample(capsys, conditional_run, "--num", 4, "--out", tmp_path / "n", "--class", "owl", "--class", 0)[0] == 0
    assert labels_of(tmp_path / "n") == [("2", "owl"), ("0", "cat")] * 2
    assert len(list((tmp_path / "n").glob("sample_*.png"))) == 4


@pytest.mark.parametrize("asked", [["--class", "all"], []], ids=["all", "no --class"])
def test_sample_all_gives_each_class_an_equal_share(asked, conditional_run, tmp_path, capsys):
    """Without --class too: a conditional generator's samples cover its classes uniformly."""
    assert sample(capsys, conditional_run, "--num", 9, "--out", tmp_path, *asked)[0] == 0
    labels = [label for label, _ in labels_of(tmp_path)]
    assert sorted(labels) == ["0"] * 3 + ["1"] * 3 + ["2"] * 3


def test_images_follow_the_asked_class(conditional_run, tmp_path, capsys):
    for name in CLASSES:
        assert sample(capsys, conditional_run, "--num", 2, "--out", tmp_path / name, "--class", name)[0] == 0
    pixels = {name: np.asarray(Image.open(tmp_path / name / "sample_00000.png")) for name in CLASSES}
    assert not np.array_equal(pixels["cat"], pixels["dog"])  # same latent, another class: another image


@pytest.mark.parametrize("asked, message", [
    ("3", "--class 3 is out of range: the generator has 3 classes, 0 to 2 (0=cat, 1=dog, 2=owl)"),
    ("-1", "--class -1 is out of range"),
    ("cow", "--class 'cow' is not one of the generator's classes (0=cat, 1=dog, 2=owl) nor 'all'"),
])
def test_a_class_the_generator_lacks_is_one_line(conditional_run, tmp_path, capsys, asked, message):
    code, err = sample(capsys, conditional_run, "--num", 2, "--out", tmp_path, "--class", asked)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_class_on_an_unconditional_checkpoint_is_one_line(tiny_data, tmp_path, capsys):
    train(tiny_config(tiny_data, str(tmp_path / "runs")))
    code, err = sample(capsys, tmp_path / "runs" / "tiny", "--num", 2, "--out", tmp_path / "out", "--class", 1)
    assert code == 2 and "holds an unconditional generator" in err and "drop --class" in err
    assert sample(capsys, tmp_path / "runs" / "tiny", "--num", 2, "--out", tmp_path / "out")[0] == 0
    assert not (tmp_path / "out" / "labels.csv").exists()


def test_a_conditional_model_needs_a_labeled_dataset(tmp_path):
    unlabeled = str(tmp_path / "unlabeled")
    write_shards(numbered_images(32), None, unlabeled, shard_size=32)
    with pytest.raises(UserError, match="model.conditional=true needs a labeled dataset, and .* has no classes"):
        train(tiny_config(unlabeled, str(tmp_path / "runs"), **{"model.conditional": True}))
    assert not (tmp_path / "runs" / "tiny").exists()


def test_the_default_presets_auto_conditions_on_classes_where_the_dataset_has_them(tiny_data, tmp_path):
    unlabeled = str(tmp_path / "unlabeled")
    write_shards(numbered_images(32), None, unlabeled, shard_size=32)
    for data, classes in ((tiny_data, 10), (unlabeled, 0)):
        cfg = tiny_config(data, str(tmp_path / "runs"), **{"model.conditional": "auto"})
        assert load_config(None).model.conditional == "auto"  # what tiny_config overrides
        assert num_classes(cfg, read_manifest(data)) == classes
    train(tiny_config(unlabeled, str(tmp_path / "runs"), **{"model.conditional": "auto", "train.steps": 3}))
    generator = load_generator(checkpoint.latest_complete(str(tmp_path / "runs" / "tiny")), torch.device("cpu"))
    assert generator.class_names == [] and generator.net.embed is None  # unconditional, and sampled as one


def test_raw_samples_the_trained_generator_not_its_average(conditional_run, tmp_path, capsys):
    for flags, out in (([], "ema"), (["--raw"], "raw")):
        assert sample(capsys, conditional_run, "--num", 2, "--out", tmp_path / out, "--class", 0, *flags)[0] == 0
    uri = conditional_run + "/checkpoint_000000006"
    raw = load_generator(uri, torch.device("cpu"), raw=True).net
    assert all(torch.equal(a, b) for a, b in zip(raw.state_dict().values(), checkpoint.load_state(uri)["nets"]["G"].values()))
    ema = load_generator(uri, torch.device("cpu")).net
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), raw.parameters()))
