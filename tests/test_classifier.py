"""The domain classifier on the real embedded digits, and class agreement scored end to end from PNG folders."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gan_dist.data.embedded import embedded_digits
from gan_dist.data.prepare import write_shards
from gan_dist.data.reader import load_columns, read_manifest
from gan_dist.cli import main
from gan_dist.eval.agreement import measure, read_samples
from gan_dist.eval.classifier import ClassifierMeta, load_classifier, predict, save_classifier, train_classifier

STEPS = 300  # ≥ 0.95 held-out on the digits for seeds 0-5 (0.967-1.0); ~7 s on one free core


@pytest.fixture(scope="module")
def digits():
    uri = embedded_digits()
    manifest = read_manifest(uri)
    return uri, manifest, load_columns(uri, manifest)


@pytest.fixture(scope="module")
def trained(digits, one_thread):
    _, manifest, columns = digits
    start = time.perf_counter()
    model, accuracy = train_classifier(columns["image"], columns["label"], len(manifest.class_names), steps=STEPS)
    print(f"classifier: {accuracy:.3f} held-out after {STEPS} steps in {time.perf_counter() - start:.1f} s")
    return model, accuracy


def write_samples(folder, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> str:
    """What a conditional sampler leaves: sample_NNNNN.png (grayscale) plus labels.csv naming the asked class."""
    folder.mkdir()
    with open(folder / "labels.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "label", "class_name"])
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image[:, :, 0]).save(folder / f"sample_{i:05d}.png")
            writer.writerow([f"sample_{i:05d}.png", int(label), class_names[label]])
    return str(folder)


@pytest.mark.slow
def test_classifier_reaches_95_percent_held_out_on_the_digits(trained):
    model, accuracy = trained
    assert accuracy >= 0.95
    assert not model.training


def test_same_seed_same_predictions(digits, one_thread):
    _, _, columns = digits
    images, labels = columns["image"][:400], columns["label"][:400]
    first, acc_first = train_classifier(images, labels, 10, steps=15, seed=3)
    second, acc_second = train_classifier(images, labels, 10, steps=15, seed=3)
    assert acc_first == acc_second
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    np.testing.assert_array_equal(predict(first, columns["image"]), predict(second, columns["image"]))


@pytest.mark.slow
def test_save_load_round_trip_predicts_the_same(trained, digits, tmp_path):
    model, accuracy = trained
    _, manifest, columns = digits
    meta = ClassifierMeta(manifest.class_names, manifest.content_hash, accuracy)
    save_classifier(model, meta, str(tmp_path / "clf"))
    assert sorted(os.listdir(tmp_path / "clf")) == ["classifier.json", "classifier.safetensors"]
    loaded, loaded_meta = load_classifier(str(tmp_path / "clf"))
    assert loaded_meta == meta and not loaded.training
    np.testing.assert_array_equal(predict(loaded, columns["image"]), predict(model, columns["image"]))


@pytest.mark.slow
def test_real_digits_agree_with_their_labels_and_not_with_shifted_ones(trained, digits, tmp_path):
    model, accuracy = trained
    _, manifest, columns = digits
    images, labels = columns["image"][:200], columns["label"][:200]

    def score(name: str, asked: np.ndarray):
        folder = write_samples(tmp_path / name, images, asked, manifest.class_names)
        samples, read_asked = read_samples(folder, manifest)
        np.testing.assert_array_equal(samples, images)  # the PNGs decode to the dataset's own bytes
        return measure(predict(model, samples), read_asked, manifest.class_names, accuracy)

    right = score("right", labels)
    assert right.overall >= 0.9, right
    assert list(right.per_class) == manifest.class_names and sum(right.counts.values()) == 200
    shifted = score("shifted", (labels + 1) % 10)
    assert shifted.overall <= 0.2, shifted


def run_agreement(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as the one_thread fixture, for the child's torch
    return subprocess.run([sys.executable, "-m", "gan_dist", "agreement", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_agreement_command_end_to_end(digits, tmp_path):
    _, manifest, columns = digits
    samples = write_samples(tmp_path / "samples", columns["image"][:100], columns["label"][:100], manifest.class_names)
    done = run_agreement(samples, "--steps", str(STEPS), "--json", str(tmp_path / "agreement.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("agreement: ") and "held-out accuracy on real images" in done.stdout
    written = json.loads((tmp_path / "agreement.json").read_text())
    assert written["overall"] >= 0.9 and written["classifier_accuracy"] >= 0.95
    assert sum(written["counts"].values()) == 100 and set(written["per_class"]) <= set(manifest.class_names)
    assert f"agreement: {written['overall']:.3f} over 100 samples" in done.stdout


@pytest.mark.slow
def test_missing_labels_csv_is_one_line_and_exit_2(digits, tmp_path):
    _, manifest, columns = digits
    samples = write_samples(tmp_path / "samples", columns["image"][:3], columns["label"][:3], manifest.class_names)
    os.remove(os.path.join(samples, "labels.csv"))
    done = run_agreement(samples)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "labels.csv is missing" in done.stderr


def test_samples_the_dataset_cannot_score_are_one_line_user_errors(digits, tmp_path, capsys):
    uri, manifest, columns = digits
    wrong_size = write_samples(tmp_path / "small", columns["image"][:2, ::2, ::2], columns["label"][:2],
                               manifest.class_names)
    unlabeled = str(tmp_path / "unlabeled")
    write_shards(columns["image"][:8], None, unlabeled)
    right = write_samples(tmp_path / "right", columns["image"][:2], columns["label"][:2], manifest.class_names)
    for argv, expected in [([wrong_size, "--data", uri], "sample_00000.png is 16x16x1 but the dataset's images are"),
                           ([right, "--data", unlabeled], "has no class labels")]:
        assert main(["agreement", *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
