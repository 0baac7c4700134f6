"""`gan-dist augmentation-study`: does a class-conditional generator's output help a classifier that has few
real labels? The small domain classifier is trained with the same steps and seed on (a) a class-stratified fraction
of the real training images, (b) that fraction plus synthetic images (their plain union, the usual baseline),
(c) synthetic images alone, the Classification Accuracy Score (CAS, Ravuri & Vinyals 2019), and (d) all the real
training images, the ceiling; each is scored on a held-out real split, mean ± std over seeds."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from gan_dist import checkpoint, seeds
from gan_dist.data import placement
from gan_dist.data.shards import NO_LABEL
from gan_dist.errors import UserError
from gan_dist.eval.classifier import fit_classifier, predict
from gan_dist.eval.features import DOMAIN_STEPS
from gan_dist.sample import Generator, generate, load_generator

SYNTHETIC_PER_REAL = 10  # default synthetic images per image of the real subset
SETTINGS = {  # JSON key -> the table's description of the training data
    "real": "real subset",
    "real+synthetic": "real subset + synthetic (union)",
    "synthetic": "synthetic only (CAS)",
    "all_real": "all real (ceiling)",
}


@dataclass
class Score:
    mean: float
    std: float  # sample standard deviation over the seeds (0 for one seed)
    runs: list[float]  # held-out accuracy per seed, in the order of `seeds`


@dataclass
class AugmentationResult:
    checkpoint: str
    step: int | None
    data: str
    held_out: str
    real_fraction: float
    images: dict[str, int]  # training images of each setting, by SETTINGS key
    held_out_images: int
    steps: int
    seeds: list[int]
    seconds: float
    accuracy: dict[str, Score]


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded random `fraction` of each class's rows, at least one row per class."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(rows, max(1, round(fraction * len(rows))), replace=False)
              for rows in (np.flatnonzero(labels == k) for k in np.unique(labels))]
    return np.sort(np.concatenate(picked))


def synthesize(generator: Generator, num: int, seed: int,
               device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """`num` uint8 N×H×W×C images of a conditional generator, an equal share (±1) of each class, with the class each
    was conditioned on as its label."""
    classes = list(range(len(generator.class_names)))
    images, labels = zip(*generate(generator, num, seed, classes, device=device))
    return torch.cat(images).permute(0, 2, 3, 1).contiguous().cpu().numpy(), torch.cat(labels).cpu().numpy()


def held_out_accuracy(images: np.ndarray, labels: np.ndarray, held_out: tuple[np.ndarray, np.ndarray],
                      num_classes: int, steps: int, seed: int) -> float:
    """The classifier trained on (images, labels), scored on the held-out (images, labels)."""
    model = fit_classifier(images, labels, num_classes, steps=steps, seed=seed)
    return float((predict(model, held_out[0]) == held_out[1]).mean())


def measure_augmentation(checkpoint_uri: str, held_out: str, data: str | None = None, real_fraction: float = 0.05,
                         synthetic: int | None = None, repeats: int = 3, steps: int | None = None, seed: int = 0,
                         device: str = "cpu") -> AugmentationResult:
    """Each setting's held-out accuracy over `repeats` seeds (seed, seed+1, ...: each draws its own subset,
    synthetic images, init and batch order). `data`: by default the dataset the run trained on; `synthetic`: by
    default 10× the real subset and at least as many as all the real images (CAS on a set the real one's size);
    `steps`: by default those of the domain classifier."""
    started = time.perf_counter()
    steps = steps or DOMAIN_STEPS
    if not 0 < real_fraction <= 1:
        raise UserError(f"--real-fraction {real_fraction}: pass a fraction of the real images above 0 and at most 1")
    if not 0 <= seed <= seeds.MAX_SEED - repeats:
        raise UserError(f"--seed {seed}: pass a whole number from 0 to {seeds.MAX_SEED - repeats}")
    uri, generator = checkpoint.load_newest(checkpoint_uri, lambda c: load_generator(c, torch.device(device)),
                                            lambda warning: print(warning, file=sys.stderr))
    if not generator.class_names:
        raise UserError(f"{uri} holds an unconditional generator; synthetic training data needs labels: train with "
                        f"model.conditional=true")
    meta = checkpoint.load_meta(uri)
    data = data or placement.dataset_uri("train", meta.get("config", {}).get("data", {}).get("path"))
    datasets = {flag: _checked_dataset(u, flag, generator) for flag, u in (("--data", data),
                                                                          ("--held-out", held_out))}
    trained_on = checkpoint.trained_on(meta)["train"].get("content_hash")
    if datasets["--held-out"].manifest.content_hash in (datasets["--data"].manifest.content_hash, trained_on):
        raise UserError(f"--held-out {held_out} holds the images the classifiers or the generator train on; pass a "
                        f"split held out from both")
    x, y = _labeled_columns(datasets["--data"])
    test = _labeled_columns(datasets["--held-out"])
    real = len(stratified_subset(y, real_fraction, seed))  # the same size for every seed: per-class counts
    synthetic = synthetic or max(SYNTHETIC_PER_REAL * real, len(x))
    runs: dict[str, list[float]] = {name: [] for name in SETTINGS}
    used = list(range(seed, seed + repeats))
    for s in used:
        rows = stratified_subset(y, real_fraction, s)
        fake_x, fake_y = synthesize(generator, synthetic, s, device)
        sets = {"real": (x[rows], y[rows]),
                "real+synthetic": (np.concatenate([x[rows], fake_x]), np.concatenate([y[rows], fake_y])),
                "synthetic": (fake_x, fake_y), "all_real": (x, y)}
        for name, (images, labels) in sets.items():
            runs[name].append(held_out_accuracy(images, labels, test, len(generator.class_names), steps, s))
            print(f"augmentation: seed {s}, {SETTINGS[name]}: {runs[name][-1]:.3f}", file=sys.stderr, flush=True)
    images = {"real": real, "real+synthetic": real + synthetic, "synthetic": synthetic, "all_real": len(x)}
    return AugmentationResult(uri, generator.step, data, held_out, real_fraction, images, len(test[0]), steps, used,
                              time.perf_counter() - started, {name: _score(values) for name, values in runs.items()})


def format_augmentation(result: AugmentationResult) -> str:
    lines = [f"{result.checkpoint} (step {result.step}): classifiers of {result.steps} steps scored on "
             f"{result.held_out_images} held-out images of {result.held_out}, seeds {result.seeds[0]}-"
             f"{result.seeds[-1]}, {result.seconds:.1f} s",
             f"{'training data':<36}{'images':>8}  held-out accuracy (mean ± std)"]
    for name, score in result.accuracy.items():
        label = SETTINGS[name].replace("real subset", f"real {100 * result.real_fraction:g}%")
        lines.append(f"{label:<36}{result.images[name]:>8}  {score.mean:.3f} ± {score.std:.3f}")
    return "\n".join(lines)


def _checked_dataset(uri: str, flag: str, generator: Generator) -> placement.Dataset:
    """A labeled dataset of the generator's image size and classes, else a one-line UserError."""
    data = placement.Dataset.open(uri)
    manifest = data.manifest
    if not manifest.class_names:
        raise UserError(f"{flag} {uri} has no class labels; the augmentation study trains classifiers on labeled "
                        f"images (prepare them from class subfolders or an .npz with labels)")
    if manifest.class_names != generator.class_names:
        raise UserError(f"{flag} {uri} has classes {_names(manifest.class_names)} and the generator "
                        f"{_names(generator.class_names)}; pass images of the classes it was trained on")
    if (manifest.resolution, manifest.channels) != (generator.resolution, generator.channels):
        raise UserError(f"{flag} {uri} holds {manifest.resolution}x{manifest.resolution}x{manifest.channels} images "
                        f"and the generator makes {generator.resolution}x{generator.resolution}x"
                        f"{generator.channels}; pass images of the size it was trained on")
    return data


def _labeled_columns(data: placement.Dataset) -> tuple[np.ndarray, np.ndarray]:
    columns = data.columns()
    labeled = columns["label"] != NO_LABEL
    if not labeled.any():
        raise UserError(f"{data.uri} has class names but no labeled images; prepare it again with labels")
    return columns["image"][labeled], columns["label"][labeled]


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f", ... ({len(names)})" if len(names) > 10 else "")


def _score(values: list[float]) -> Score:
    return Score(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, values)
