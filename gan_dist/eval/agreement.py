"""Class agreement: how often a classifier trained on the real images sees the class a generator was asked for
(`gan-dist agreement SAMPLES_DIR`). SAMPLES_DIR holds sample_00000.png, ... and labels.csv (header
file,label,class_name; one row per PNG)."""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from gan_dist import storage
from gan_dist.data.embedded import embedded_digits
from gan_dist.data.placement import Dataset
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError
from gan_dist.eval.classifier import predict, train_classifier

LABELS_FILE = "labels.csv"
LABELS_HEADER = ["file", "label", "class_name"]
DEFAULT_STEPS = 500  # ≥ 95% held-out on the digits by 300; the margin is for harder datasets


@dataclass
class Agreement:
    """The fractions of samples classified as the class they were asked for, overall and per asked class."""

    overall: float
    per_class: dict[str, float]  # class name -> agreement, for the classes labels.csv asks for
    counts: dict[str, int]  # class name -> samples asked for
    classifier_accuracy: float  # held-out, on real images: the ceiling a perfect generator would reach


def read_labels(samples_uri: str, class_names: list[str]) -> list[tuple[str, int]]:
    """(file, class index) per labels.csv row, checked against the dataset's classes so that samples drawn for
    another dataset are refused instead of scored."""
    uri = storage.join(samples_uri, LABELS_FILE)
    with storage.user_errors(uri, "read"):
        if not storage.exists(uri):
            raise UserError(f"{uri} is missing; write it beside the PNGs with the header "
                            f"{','.join(LABELS_HEADER)} and one row per sample")
        rows = list(csv.reader(io.StringIO(storage.read_bytes(uri).decode("utf-8", errors="replace"))))
    if not rows or rows[0] != LABELS_HEADER:
        raise UserError(f"{uri} must start with the header {','.join(LABELS_HEADER)}; fix its first line")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:  # a blank line
            continue
        try:
            file, label_text, name = row
            label = int(label_text)
        except ValueError:  # not three fields, or a label that is not a number
            label = -1
        if not 0 <= label < len(class_names):
            raise UserError(f"{uri} line {number}: expected file,label,class_name with a label from 0 to "
                            f"{len(class_names) - 1}, got {','.join(row)[:80]!r}; fix the row")
        if name != class_names[label]:
            raise UserError(f"{uri} line {number}: label {label} is class '{class_names[label]}' in the dataset, "
                            f"not '{name}'; pass the --data the generator was trained on")
        entries.append((file, label))
    if not entries:
        raise UserError(f"{uri} lists no samples; add one row per PNG")
    return entries


def decode_png(uri: str, data: bytes, manifest: Manifest) -> np.ndarray:
    """PNG bytes -> uint8 H×W×C, refused unless its size and channels are the dataset's."""
    try:
        image = Image.open(io.BytesIO(data))
        gray = image.mode in ("1", "L", "LA", "I", "I;16")
        array = np.asarray(image.convert("L" if gray else "RGB"))
    except (UnidentifiedImageError, OSError):
        raise UserError(f"{uri} is not a readable PNG; replace it or drop its row from {LABELS_FILE}") from None
    array = array[:, :, None] if gray else array
    want = (manifest.resolution, manifest.resolution, manifest.channels)
    if array.shape != want:
        raise UserError(f"{uri} is {'x'.join(map(str, array.shape))} but the dataset's images are "
                        f"{'x'.join(map(str, want))}; sample a generator trained on this dataset, or pass its --data")
    return array


def read_samples(samples_uri: str, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The samples as uint8 N×H×W×C and the class index each was asked for, in labels.csv order."""
    entries = read_labels(samples_uri, manifest.class_names)
    listed = {file for file, _ in entries}
    with storage.user_errors(samples_uri, "list"):
        present = set(storage.list_dir(samples_uri))
    if missing := sorted(listed - present):
        raise UserError(f"{LABELS_FILE} lists {len(missing)} files not in {samples_uri} (first: {missing[0]}); "
                        "fix labels.csv or restore the PNGs")
    # A PNG without a row most likely means labels.csv belongs to another draw: refused rather than scored wrong.
    if unlisted := sorted(name for name in present - listed if name.endswith(".png")):
        raise UserError(f"{len(unlisted)} PNGs in {samples_uri} have no row in {LABELS_FILE} (first: {unlisted[0]}); "
                        "write labels.csv for all of them, or move them out")
    images = []
    for file, _ in entries:
        uri = storage.join(samples_uri, file)
        with storage.user_errors(uri, "read"):
            data = storage.read_bytes(uri)
        images.append(decode_png(uri, data, manifest))
    return np.stack(images), np.array([label for _, label in entries], np.int64)


def measure(predicted: np.ndarray, asked: np.ndarray, class_names: list[str], accuracy: float) -> Agreement:
    """Agreement of predicted with asked class indices; `accuracy` is carried along so a report never shows an
    agreement without the classifier's own ceiling beside it."""
    hits = predicted == asked
    classes = np.unique(asked)
    return Agreement(
        overall=float(hits.mean()),
        per_class={class_names[k]: float(hits[asked == k].mean()) for k in classes},
        counts={class_names[k]: int((asked == k).sum()) for k in classes},
        classifier_accuracy=accuracy,
    )


def format_agreement(result: Agreement) -> str:
    lines = [f"agreement: {result.overall:.3f} over {sum(result.counts.values())} samples "
             f"(classifier held-out accuracy on real images: {result.classifier_accuracy:.3f})",
             f"{'class':>12}  agreement  samples"]
    lines += [f"{name:>12}  {value:9.3f}  {result.counts[name]:7d}" for name, value in result.per_class.items()]
    return "\n".join(lines)


def run(samples_uri: str, data_uri: str | None = None, steps: int | None = None, seed: int = 0) -> Agreement:
    """Check everything the user gave first (cheap), then train the classifier (the slow part) and score.
    `data_uri`: the labeled dataset the generator learned (default: the embedded digits)."""
    data_uri, steps = data_uri or embedded_digits(), steps or DEFAULT_STEPS
    data = Dataset.open(data_uri)
    manifest = data.manifest
    if not manifest.class_names:
        raise UserError(f"the dataset at {data_uri} has no class labels; prepare it from class subfolders (or an "
                        ".npz with labels) to measure class agreement")
    images, asked = read_samples(samples_uri, manifest)
    columns = data.columns()
    print(f"training the classifier on {len(columns['image'])} real images ({steps} steps)", file=sys.stderr,
          flush=True)
    model, accuracy = train_classifier(columns["image"], columns["label"], len(manifest.class_names), steps=steps,
                                       seed=seed)
    return measure(predict(model, images), asked, manifest.class_names, accuracy)
