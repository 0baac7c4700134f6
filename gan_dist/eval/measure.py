"""The metrics of a set of generated images against the real ones, in one feature space: what `gan-dist evaluate`
prints and what evaluation during training logs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from gan_dist.data.placement import Dataset
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError
from gan_dist.eval import metrics as m
from gan_dist.eval.features import FEATURES, DomainFeatures, domain_features

# What evaluation during training logs (SWD adds swd_<resolution> per pyramid level).
EVAL_LOGGED = ("fid", "kid", "kid_std", "precision", "recall", "swd_mean", "copies", "confident", "class_min",
               "coverage", "agreement", "eval_seconds")
CONFIDENT = 0.9  # a generated image is recognisable when the domain classifier gives one class this probability
# (name, which way is better, what it says) for the table and the README
MEANINGS = {
    "fid": ("lower", "Fréchet distance between real and generated feature distributions"),
    "kid": ("lower", "kernel (MMD) distance; unbiased, comparable across sample sizes"),
    "kid_std": ("", "spread of KID over its subsets"),
    "precision": ("higher", "share of generated images inside the real images' manifold (fidelity)"),
    "recall": ("higher", "share of real images inside the generated images' manifold (diversity)"),
    "swd_mean": ("lower", "sliced Wasserstein distance of Laplacian-pyramid patches (x1e3), mean over levels"),
    "copies": ("lower", "share of generated images that are near-copies of a training image (pixel distance)"),
    "confident": ("higher", f"share of generated images the domain classifier gives one class p >= {CONFIDENT}"),
    "class_min": ("higher", "the rarest class's share of the confident images (1/classes when balanced)"),
    "coverage": ("higher", "share of classes receiving at least half their fair share of confident images"),
    "agreement": ("higher", "share of images the domain classifier puts in the class they were drawn for"),
}


COPIES_MAX_BYTES = 1 << 28  # the real images `copies` searches: up to 256 MB of them
MIN_IMAGES = 4  # precision/recall's k-NN (k = 3) needs k + 1 images on each side
SWD_MIN_RESOLUTION = 16  # ProGAN's pyramid stops at 16x16


def copies_rows(image_bytes: int) -> int:
    """How many real images the near-copy search reads: as many as COPIES_MAX_BYTES hold."""
    return COPIES_MAX_BYTES // image_bytes


def plan_rows(data: Dataset, num: int, names: tuple[str, ...] | list[str]) -> None:
    """Size the real dataset's first load to the most a comparison reads of it (`num` for its real features and SWD,
    more for the near-copy search), so that one load serves them all."""
    data.plan(max(num, copies_rows(data.manifest.image_bytes) if "copies" in names else 0))


def check_sizes(names: tuple[str, ...] | list[str], num: int, manifest: Manifest, where: str) -> None:
    """One line, before any work, for a comparison the metrics cannot make."""
    if min(num, manifest.count) < MIN_IMAGES:
        raise UserError(f"{where}: {min(num, manifest.count)} images are too few to compare; use at least "
                        f"{MIN_IMAGES} (and a dataset that has them)")
    if "swd" in names and manifest.resolution < SWD_MIN_RESOLUTION:
        raise UserError(f"{where}: swd needs images of at least {SWD_MIN_RESOLUTION}x{SWD_MIN_RESOLUTION}, these are "
                        f"{manifest.resolution}x{manifest.resolution}; leave swd out of the metrics")


def feature_kind(features: str, manifest: Manifest, unlabeled: str = "off") -> str:
    """The features asked for ("auto", "domain", "inception", "off") resolved for a dataset: auto is the domain
    classifier where the dataset has classes, `unlabeled` otherwise (during training none: the Inception network is
    slow on a CPU; `gan-dist evaluate` takes it)."""
    if features == "auto":
        return "domain" if manifest.class_names else unlabeled
    return features


def feature_network(kind: str, data: Dataset, device: torch.device, inception_weights: str | None) -> nn.Module:
    """The features of `kind` for the dataset `data`: its domain classifier's, or Inception's."""
    if kind not in FEATURES:
        raise UserError(f"--features {kind!r}: choose {' or '.join(FEATURES)}")
    if kind == "domain":
        return domain_features(data, device)
    from gan_dist.eval.inception import INCEPTION_ID, load_inception

    net = load_inception(device, inception_weights)
    # Another network's features must never meet cached standard ones: a user's copy is keyed by its bytes.
    net.id = INCEPTION_ID if inception_weights is None else f"inception-{_sha1(inception_weights)[:12]}"
    return net


def _sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def class_metrics(net: DomainFeatures, images_u8: torch.Tensor, asked: torch.Tensor | None) -> dict[str, float]:
    """What the domain classifier says of the generated images: recognisable, every class present, the asked one."""
    probabilities = torch.cat([net.probabilities(images_u8[start:start + 500])
                               for start in range(0, len(images_u8), 500)])
    confidence, predicted = probabilities.cpu().max(dim=1)
    confident = confidence >= CONFIDENT
    classes = probabilities.shape[1]
    per_class = torch.bincount(predicted[confident], minlength=classes)
    out = {"confident": confident.float().mean().item(),
           "class_min": (per_class.min() / per_class.sum().clamp(min=1)).item(),
           "coverage": (per_class >= len(images_u8) / classes / 2).float().mean().item()}
    if asked is not None:
        out["agreement"] = (predicted == asked.cpu()).float().mean().item()
    return out


def compare(names: tuple[str, ...] | list[str], net: nn.Module, real: torch.Tensor, fake: torch.Tensor,
            real_u8: Callable[[int], np.ndarray], fake_u8: torch.Tensor | np.ndarray | None,
            asked: torch.Tensor | None, seed: int) -> dict[str, float]:
    """The asked metrics of the generated features (and images, for SWD) against the real ones, and with the
    domain features the classifier's verdicts on the generated images (`asked`: their classes, if conditional).
    `real_u8(n)`: the first n real images (all, where the dataset has fewer)."""
    out: dict[str, float] = {}
    if "fid" in names:
        out["fid"] = m.fid(real, fake)
    if "kid" in names:
        out["kid"], spread = m.kid(real, fake, seed=seed)
        if spread is not None:
            out["kid_std"] = spread
    if "pr" in names:  # k-NN radii shrink as a set grows: both sides at the same size, as Kynkäänniemi et al. do
        n = min(len(real), len(fake))
        out["precision"], out["recall"] = m.precision_recall(real[:n], fake[:n])
    if "swd" in names:
        out.update(m.swd(torch.as_tensor(real_u8(len(real))), torch.as_tensor(fake_u8), seed=seed))
    if "copies" in names:  # against as much of the training set as a bounded memory holds
        fake_u8 = torch.as_tensor(fake_u8)
        out["copies"] = m.near_copies(torch.as_tensor(real_u8(copies_rows(fake_u8[0].numel()))), fake_u8)
    if isinstance(net, DomainFeatures):
        device = next(net.parameters()).device
        out.update(class_metrics(net, torch.as_tensor(fake_u8).to(device), asked))
    return out
