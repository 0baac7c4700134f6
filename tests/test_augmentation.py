"""`gan-dist augmentation-study`: the stratified real subset, CAS of generators whose output is known, the
refactored classifier training, the table and JSON end to end (local and s3://), and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from gan_dist.cli import main
from gan_dist.data.embedded import embedded_digits
from gan_dist.data.prepare import write_shards
from gan_dist.data.reader import load_columns, read_manifest
from gan_dist.augmentation_study import SETTINGS, held_out_accuracy, stratified_subset, synthesize
from gan_dist.eval.classifier import fit_classifier, train_classifier
from gan_dist.imaging import to_model_range
from gan_dist.runtime.launch import train
from gan_dist.sample import Generator
from helpers import numbered_images, s3_client, tiny_config, tiny_translation_config

CLASSES = [str(k) for k in range(10)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> str:
    """A conditional tiny run ("tiny") and an unconditional one ("uncond") side by side."""
    storage = tmp_path_factory.mktemp("runs")
    train(tiny_config(tiny_data, str(storage), **{"model.conditional": True}))
    train(tiny_config(tiny_data, str(storage), **{"run.name": "uncond"}))
    return str(storage)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> str:
    """50 labeled 16x16 images that are not tiny_data's."""
    out = str(tmp_path_factory.mktemp("held") / "shards")
    write_shards(255 - numbered_images(50), np.arange(50, dtype=np.int32) % 10, out, class_names=CLASSES)
    return out


def augmentation(capsys, *args) -> tuple[int, str, str]:
    code = main(["augmentation-study", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stratified_subset_takes_the_fraction_of_every_class_and_at_least_one():
    labels = np.arange(256) % 10  # classes 0-5 hold 26 rows, 6-9 hold 25
    rows = stratified_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[rows]).tolist() == [3] * 6 + [2] * 4  # round(2.6), round(2.5)
    assert len(set(rows.tolist())) == len(rows) and (np.diff(rows) > 0).all()
    assert np.bincount(labels[stratified_subset(labels, 0.001, seed=0)]).tolist() == [1] * 10
    assert stratified_subset(labels, 1.0, seed=0).tolist() == list(range(256))
    np.testing.assert_array_equal(rows, stratified_subset(labels, 0.1, seed=0))
    assert not np.array_equal(rows, stratified_subset(labels, 0.1, seed=1))


def test_fit_classifier_trains_what_train_classifier_trains_on_its_split():
    images, labels = numbered_images(120), np.arange(120) % 10
    model, accuracy = train_classifier(images, labels, 10, steps=5, seed=4)
    order = np.random.default_rng(4).permutation(120)  # train_classifier's split: 12 held out, the rest trained on
    fitted = fit_classifier(images[order[12:]], labels[order[12:]], 10, steps=5, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fitted.state_dict().values()))
    assert not fitted.training


class ReplayNet(nn.Module):
    """A stand-in generator: for class k it returns real images of class `(k + shift) % 10` (picked by z)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, shift: int):
        super().__init__()
        self.z_dim, self.shift = 4, shift
        self.bank = [to_model_range(torch.from_numpy(images[labels == k])) for k in range(10)]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pick = (z[:, 0].abs() * 1e4).long()
        return torch.stack([self.bank[(k + self.shift) % 10][i % len(self.bank[(k + self.shift) % 10])]
                            for k, i in zip(labels.tolist(), pick.tolist())])


@pytest.mark.slow
def test_cas_is_high_for_a_generator_of_real_images_and_near_zero_for_one_with_the_wrong_labels():
    uri = embedded_digits()
    columns = load_columns(uri, read_manifest(uri))
    bank, test = slice(0, 1000), slice(1500, None)
    scores = {}
    for shift in (0, 1):
        net = ReplayNet(columns["image"][bank], columns["label"][bank], shift)
        images, labels = synthesize(Generator(net, CLASSES, "replay", resolution=32, channels=1, step=None), 300, seed=0)
        assert np.bincount(labels).tolist() == [30] * 10 and images.shape == (300, 32, 32, 1)
        scores[shift] = held_out_accuracy(images, labels, (columns["image"][test], columns["label"][test]), 10,
                                          steps=40, seed=0)
    assert scores[0] >= 0.75 and scores[1] <= 0.1, scores  # 0.86-0.92 and 0.0-0.01 at 30-50 steps


def test_table_and_json_of_every_setting(runs, held_out, tmp_path, capsys):
    code, out, err = augmentation(capsys, f"{runs}/tiny", "--held-out", held_out, "--real-fraction",
                                  0.1, "--synthetic", 40, "--repeats", 2, "--steps", 3, "--json", tmp_path / "a.json")
    assert code == 0, err
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["checkpoint"].endswith("checkpoint_000000006") and saved["held_out"] == held_out
    assert saved["images"] == {"real": 26, "real+synthetic": 66, "synthetic": 40, "all_real": 256}
    assert saved["held_out_images"] == 50 and saved["seeds"] == [0, 1] and saved["steps"] == 3
    assert list(saved["accuracy"]) == list(SETTINGS)
    for score in saved["accuracy"].values():
        assert len(score["runs"]) == 2 and all(0 <= run <= 1 for run in score["runs"])
        assert score["mean"] == pytest.approx(np.mean(score["runs"]))
        assert score["std"] == pytest.approx(np.std(score["runs"], ddof=1))
    lines = out.splitlines()
    assert len(lines) == 6 and "50 held-out images" in lines[0]
    assert lines[2].startswith("real 10% ") and f"{saved['accuracy']['real']['mean']:.3f} ± " in lines[2]
    assert lines[4].startswith("synthetic only (CAS) ") and " 40  " in lines[4]
    assert lines[5].startswith("all real (ceiling) ") and " 256  " in lines[5]


def test_held_out_and_json_on_object_storage_and_the_default_synthetic_count(runs, bucket, capsys):
    held = f"s3://{bucket}/held"
    write_shards(255 - numbered_images(30), np.arange(30, dtype=np.int32) % 10, held, class_names=CLASSES)
    code, _, err = augmentation(capsys, f"{runs}/tiny", "--held-out", held, "--repeats", 1,
                                "--steps", 2, "--json", f"s3://{bucket}/aug.json")
    assert code == 0, err
    saved = json.loads(s3_client().get_object(Bucket=bucket, Key="aug.json")["Body"].read())
    # 5% of each class is one image; 10x that is fewer than all 256 real ones, so as many as those
    assert saved["images"] == {"real": 10, "real+synthetic": 266, "synthetic": 256, "all_real": 256}
    assert saved["held_out_images"] == 30 and saved["accuracy"]["real"]["std"] == 0


def refused(capsys, *args) -> str:
    code, out, err = augmentation(capsys, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, expected", [
    (("RUN",), "the following arguments are required: --held-out"),
    (("RUN", "--held-out", "HELD", "--num", "3"), "unrecognized arguments: --num 3"),  # evaluate's, not the study's
])
def test_usage_errors_are_one_line(capsys, args, expected):
    with pytest.raises(SystemExit) as exited:
        main(["augmentation-study", *args])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_bad_input_is_refused_in_one_line(runs, tiny_data, held_out, tmp_path, capsys):
    run = f"{runs}/tiny"
    unlabeled, other_classes = str(tmp_path / "unlabeled"), str(tmp_path / "other")
    write_shards(numbered_images(20), None, unlabeled)
    write_shards(numbered_images(20), np.arange(20, dtype=np.int32) % 2, other_classes, class_names=["a", "b"])
    cases = [
        ((run, "--held-out", held_out, "--real-fraction", 0), "--real-fraction 0.0: pass a"),
        ((run, "--held-out", held_out, "--real-fraction", 1.5), "--real-fraction 1.5: pass a"),
        ((run, "--held-out", unlabeled), f"--held-out {unlabeled} has no class labels"),
        ((run, "--held-out", held_out, "--data", unlabeled), "--data"),
        ((run, "--held-out", other_classes), "has classes a, b and the generator 0, 1, 2,"),
        ((run, "--held-out", tiny_data), "held out from both"),
        ((f"{runs}/uncond", "--held-out", held_out), "train with model.conditional=true"),
    ]
    for args, expected in cases:
        assert expected in refused(capsys, *args), expected


def test_a_translator_checkpoint_is_refused_in_one_line(tiny_data, tiny_domain_b, held_out, tmp_path, capsys):
    train(tiny_translation_config(tiny_data, tiny_domain_b, str(tmp_path), **{"train.steps": 3}))
    capsys.readouterr()  # the run's console lines
    err = refused(capsys, tmp_path / "tiny", "--held-out", held_out)
    assert "is a translator's checkpoint" in err
