"""What a completion net is worth: images with holes (centred squares over a quarter of each image by default), filled
by the net and by non-learned fills on the same holes, judged by the error on the holes (L1, PSNR) and by whether
the dataset's classifier still sees the image's class in the completed image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_dist.config import Config
from gan_dist.data.placement import Dataset
from gan_dist.data.shards import Manifest
from gan_dist.eval.features import domain_features
from gan_dist.imaging import to_model_range, to_uint8
from gan_dist.masks import center_masks, complete

BATCH = 100
HARMONIC_ITERATIONS = 500  # Jacobi sweeps: enough to settle a hole of a few dozen pixels across
MEANINGS = {
    "hole_l1": ("lower", "mean |completed - original| over the hole pixels, in pixels / 255"),
    "hole_psnr": ("higher", "PSNR of the hole pixels in dB (peak 255), mean over images"),
    "labels": ("higher", "share of completed images the dataset's classifier puts in the original's class"),
    "classifier": ("", "held-out accuracy of that classifier on the dataset's whole images: labels' ceiling"),
    "original_labels": ("", "the same share for the original images (nothing missing): these images' ceiling"),
}
# Non-learned fills, judged on the same holes beside the net (`gan-dist evaluate` of a completion checkpoint).
BASELINES = ("harmonic", "mean", "masked")


def completion_logged(cfg: Config, manifest: Manifest) -> tuple[str, ...]:
    """What evaluation during an inpainting run logs (keep_best may name any of them)."""
    if cfg.eval.features == "off":
        return ()
    return ("hole_l1", "hole_psnr") + (("labels", "classifier") if judges_labels(cfg.eval.features, manifest)
                                       else ()) + ("eval_seconds",)


def judges_labels(features: str, manifest: Manifest) -> bool:
    """Labels are judged by the dataset's own classifier: on a labeled dataset, unless Inception features are
    asked for (Inception does not know the dataset's classes)."""
    return bool(manifest.class_names) and features in ("auto", "domain")


@torch.no_grad()
def complete_u8(net: nn.Module | None, images_u8: torch.Tensor, masks: torch.Tensor, device: torch.device,
                fill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 N×H×W×C with holes `masks` (N×1×H×W) -> the completed uint8 N×H×W×C (on the CPU): by `net` (the
    masked image and its mask in) or by `fill`; the known pixels are kept either way."""
    out = []
    for start in range(0, len(images_u8), BATCH):
        x = to_model_range(images_u8[start:start + BATCH].to(device))
        m = masks[start:start + BATCH].to(device)
        completed = complete(net, x, m)[0] if net is not None else x * (1 - m) + fill(x, m) * m
        out.append(to_uint8(completed).permute(0, 2, 3, 1).cpu())
    return torch.cat(out)


def mean_fill(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each hole filled with the mean of its image's known pixels (per channel)."""
    known = 1 - masks
    mean = (x * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    return mean.expand_as(x)


def harmonic_fill(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The smoothest fill the hole's border allows: Laplace's equation in the hole, the known pixels as boundary
    values (Jacobi sweeps from the mean fill); the classic non-learned inpainting baseline."""
    kernel = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=x.dtype, device=x.device) / 4
    kernel = kernel.expand(x.shape[1], 1, 3, 3)
    known = 1 - masks
    y = x * known + mean_fill(x, masks) * masks
    for _ in range(HARMONIC_ITERATIONS):
        neighbours = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        y = x * known + neighbours * masks
    return y


def masked_fill(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The hole left as the net sees it: mid grey. What the classifier makes of an image without its centre."""
    return torch.zeros_like(x)


FILLS = {"harmonic": harmonic_fill, "mean": mean_fill, "masked": masked_fill}


def hole_errors(completed_u8: torch.Tensor, original_u8: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """L1 and PSNR over the hole pixels (uint8 N×H×W×C images, masks N×1×H×W)."""
    weights = masks.permute(0, 2, 3, 1).expand_as(original_u8).float()
    diff = (completed_u8.float() - original_u8.float()) / 255
    per_image = weights.flatten(1).sum(1).clamp_min(1)
    mse = (diff.square() * weights).flatten(1).sum(1) / per_image
    return {"hole_l1": ((diff.abs() * weights).sum() / weights.sum().clamp_min(1)).item(),
            "hole_psnr": (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()}


class CompletionJudge:
    """Fixed for a run or an evaluation: the first `num` images of `source` with their holes (`masks`, default
    centred quarter squares), their labels, and the classifier of `reference` (the run's own dataset)."""

    def __init__(self, source: Dataset, reference: Dataset, num: int, features: str, device: torch.device,
                 masks: torch.Tensor | None = None):
        self.device = device
        same_classes = source.manifest.class_names == reference.manifest.class_names
        # The classifier before the images: trained now, it loads all of the run's rows, which then serve the
        # images too where they are the run's (one load).
        judged = judges_labels(features, reference.manifest) and same_classes
        self.classifier = domain_features(reference, device) if judged else None
        columns = source.columns(num)
        self.images_u8 = torch.from_numpy(columns["image"])
        self.masks = center_masks(len(self.images_u8), source.manifest.resolution) if masks is None else masks
        self.labels = torch.from_numpy(columns["label"].astype(np.int64)) if judged else None

    def __call__(self, net: nn.Module | None, fill: str | None = None) -> dict[str, float]:
        completed = complete_u8(net, self.images_u8, self.masks, self.device, FILLS.get(fill))
        out = hole_errors(completed, self.images_u8, self.masks)
        if self.classifier is not None:
            out["labels"] = self.agreement(completed)
            out["classifier"] = self.classifier.meta.accuracy
        return out

    def agreement(self, images_u8: torch.Tensor) -> float:
        probabilities = torch.cat([self.classifier.probabilities(images_u8[i:i + BATCH].to(self.device)).cpu()
                                   for i in range(0, len(images_u8), BATCH)])
        return (probabilities.argmax(1) == self.labels).float().mean().item()

    def with_baselines(self, net: nn.Module) -> dict[str, float]:
        """The net's numbers, each baseline's as <fill>_<metric> on the same holes, and the classifier on the
        original images (`original_labels`)."""
        out = self(net)
        for fill in BASELINES:
            numbers = self(None, fill)
            numbers.pop("classifier", None)
            out.update({f"{fill}_{name}": value for name, value in numbers.items()})
        if self.classifier is not None:
            out["original_labels"] = self.agreement(self.images_u8)
        return out
