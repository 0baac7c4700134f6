"""What a paired translator is worth on pairs: how far its outputs are from the targets (L1, PSNR) and, where the
pairs have classes, whether the outputs keep them (the target domain's classifier on the outputs against the
pairs' labels), beside the trivial answers a translator has to beat: the input passed through, the mean target."""

from __future__ import annotations

import torch
from torch import nn

from gan_dist.data.placement import Dataset
from gan_dist.data.shards import INPUT, NO_LABEL, Manifest
from gan_dist.eval.features import domain_features
from gan_dist.eval.measure import class_metrics, feature_kind
from gan_dist.eval.translation import translate_u8

MEANINGS = {
    "l1": ("lower", "mean |output - target| in pixels / 255"),
    "psnr": ("higher", "peak signal-to-noise ratio of each output against its target, dB, mean over the pairs"),
    "labels": ("higher", "share of outputs the target domain's classifier puts in the pair's class"),
    "classifier": ("", "held-out accuracy of that classifier on the target domain's real images: labels' ceiling"),
    "target_labels": ("", "the same share for the targets themselves: these pairs' ceiling"),
}
PAIRED_LOGGED = ("l1", "psnr", "labels", "classifier")  # in this order; labels and classifier where classes are
# The trivial translators, judged on the same pairs beside the net (`gan-dist evaluate` of a paired translator):
# each input passed through (in the targets' channels), and the mean target image for every input.
BASELINES = ("input", "mean")
PSNR_MAX_DB = 100.0  # an output equal to its target: a finite number, not inf


def distances(outputs_u8: torch.Tensor, targets_u8: torch.Tensor) -> dict[str, float]:
    """L1 in pixels / 255 and the mean per-image PSNR (dB, peak 255) of uint8 N×H×W×C outputs against targets."""
    difference = outputs_u8.float() - targets_u8.float()
    mse = difference.square().flatten(1).mean(dim=1)
    floor = 255.0**2 / 10 ** (PSNR_MAX_DB / 10)
    psnr = 10 * torch.log10(255.0**2 / mse.clamp(min=floor))
    return {"l1": difference.abs().mean().item() / 255, "psnr": psnr.mean().item()}


def as_channels(images_u8: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 N×H×W×C as `channels` channels: gray repeated into RGB, or RGB averaged into gray."""
    if images_u8.shape[-1] == channels:
        return images_u8
    if channels == 3:
        return images_u8.expand(*images_u8.shape[:-1], 3)
    return images_u8.float().mean(dim=-1, keepdim=True).round().to(torch.uint8)


class PairedJudge:
    """The first `num` pairs of `pairs` and what judging a translator on them needs, computed once: the inputs, the
    targets, their labels, and (with domain features, on labeled pairs) the classifier of `reference`'s targets:
    the run's training data, so that judging held-out pairs uses no classifier trained on them."""

    def __init__(self, pairs: Dataset, num: int, features: str, device: torch.device,
                 reference: Dataset | None = None):
        self.device = device
        reference = reference or pairs
        self.net = None
        # The classifier before the pairs: trained now, it loads all of the run's rows, which then serve the pairs
        # too where they are the run's (one load). It judges labels only where every pair judged has one.
        if (feature_kind(features, reference.manifest) == "domain" and bool(pairs.manifest.class_names)
                and pairs.manifest.class_names == reference.manifest.class_names):
            self.net = domain_features(reference, device)
        columns = pairs.columns(num)
        self.inputs_u8, self.targets_u8 = torch.from_numpy(columns[INPUT]), torch.from_numpy(columns["image"])
        self.labels = torch.from_numpy(columns["label"])
        if not bool((self.labels != NO_LABEL).all()):
            self.net = None

    def _judge(self, outputs_u8: torch.Tensor) -> dict[str, float]:
        out = distances(outputs_u8, self.targets_u8)
        if self.net is not None:
            out["labels"] = class_metrics(self.net, outputs_u8.to(self.device), self.labels)["agreement"]
            out["classifier"] = self.net.meta.accuracy
        return out

    def __call__(self, translator: nn.Module) -> dict[str, float]:
        """The translator's numbers on the pairs, in eval mode (no dropout); its mode is restored after."""
        training = translator.training
        try:
            return self._judge(translate_u8(translator.eval(), self.inputs_u8, self.device))
        finally:
            translator.train(training)

    def baseline(self, name: str) -> dict[str, float]:
        """The numbers of a trivial translator (BASELINES) on the same pairs."""
        if name == "input":
            return self._judge(as_channels(self.inputs_u8, self.targets_u8.shape[-1]))
        mean = self.targets_u8.float().mean(dim=0).round().to(torch.uint8)
        return self._judge(mean.expand_as(self.targets_u8).contiguous())

    def with_baselines(self, translator: nn.Module) -> dict[str, float]:
        """The translator's numbers, each baseline's as <baseline>_<metric>, and the classifier on the targets
        themselves (`target_labels`)."""
        out = self(translator)
        for name in BASELINES:
            numbers = self.baseline(name)
            numbers.pop("classifier", None)
            out.update({f"{name}_{metric}": value for metric, value in numbers.items()})
        if self.net is not None:
            out["target_labels"] = self._judge(self.targets_u8)["labels"]
        return out


def paired_logged(features: str, manifest: Manifest) -> tuple[str, ...]:
    """What judging a paired translator logs (keep_best may name any of them): labels where the domain classifier
    judges them."""
    return PAIRED_LOGGED if feature_kind(features, manifest) == "domain" else ("l1", "psnr")


