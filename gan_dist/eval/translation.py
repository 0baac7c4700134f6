"""What a translator is worth, per direction: its translations of source images against the target domain's real
images (FID, KID, ... in the target's feature space), whether they keep the source's class (the target domain's
classifier on the translations against the source labels), and how close translating back comes to the source."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gan_dist.config import Config
from gan_dist.data.placement import Dataset
from gan_dist.eval.features import DomainFeatures
from gan_dist.eval.measure import EVAL_LOGGED, check_sizes, compare, feature_kind, feature_network, plan_rows
from gan_dist.eval.stats import embed, real_features
from gan_dist.imaging import to_model_range, to_uint8

DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}  # direction -> (source, target)
TRANSLATE_BATCH = 100
# Per direction: the generation metrics of the translations against the target domain (agreement becomes
# `labels`: the source's class kept), and `cycle`.
PER_DIRECTION = tuple(name for name in EVAL_LOGGED if name not in ("agreement", "eval_seconds")) + (
    "labels", "classifier", "cycle")
MEANINGS = {
    "labels": ("higher", "share of translations the target domain's classifier puts in the source image's class"),
    "classifier": ("", "held-out accuracy of that classifier on the target domain's real images: labels' ceiling"),
    "cycle": ("lower", "mean |translated back - source| in pixels / 255"),
}


def directions(cfg: Config) -> tuple[str, ...]:
    return cfg.task.DIRECTIONS


def translation_logged(cfg: Config) -> tuple[str, ...]:
    """What evaluation during a translation run logs (keep_best may name any of them)."""
    if cfg.eval.features == "off":
        return ()
    return tuple(f"{d}_{name}" for d in directions(cfg) for name in PER_DIRECTION) + ("eval_seconds",)


@torch.no_grad()
def translate_u8(net: nn.Module, images_u8: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N×H×W×C in, uint8 N×H×W×C out (on the CPU), a batch at a time on `device`."""
    images = torch.as_tensor(images_u8)
    out = []
    for start in range(0, len(images), TRANSLATE_BATCH):
        x = to_model_range(images[start:start + TRANSLATE_BATCH].to(device))
        out.append(to_uint8(net(x)).permute(0, 2, 3, 1).cpu())
    return torch.cat(out)


class DirectionJudge:
    """Everything about one direction that does not change during training, computed once: the target's feature
    network and real features; the source images (the first `num` of the source dataset) and their labels are the
    source dataset's rows, read at the first judging: after every direction's target network is built, so that a
    domain's rows, loaded once for its classifier, serve it as the other direction's source too."""

    def __init__(self, source: Dataset, target: Dataset, names: tuple[str, ...], num: int, features: str,
                 device: torch.device, seed: int, inception_weights: str | None = None, unlabeled: str = "off"):
        self.source, self.target, self.names, self.device, self.seed = source, target, names, device, seed
        self.num = min(num, source.manifest.count)
        # Labels count as kept only where both domains name the same classes (the digits 0-9 on both sides).
        self.same_classes = (bool(source.manifest.class_names)
                             and source.manifest.class_names == target.manifest.class_names)
        self.kind = feature_kind(features, target.manifest, unlabeled)
        self.net = None
        if self.kind != "off":
            check_sizes(names, self.num, target.manifest, "the evaluation")
            self.net = feature_network(self.kind, target, device, inception_weights)
            self.real = real_features(self.net, target, self.num, device)

    def __call__(self, forward: nn.Module, back: nn.Module | None) -> dict[str, float]:
        columns = self.source.columns(self.num)
        source_u8 = torch.from_numpy(columns["image"])
        translated = translate_u8(forward, source_u8, self.device)
        out: dict[str, float] = {}
        if self.net is not None:
            fake = embed(self.net, translated, self.device)
            labels = torch.from_numpy(columns["label"]) if self.same_classes else None
            out = compare(self.names, self.net, self.real, fake, self.target.images, translated, labels, self.seed)
            if "agreement" in out:
                out["labels"] = out.pop("agreement")
            if isinstance(self.net, DomainFeatures):
                out["classifier"] = self.net.meta.accuracy
        if back is not None:
            returned = translate_u8(back, translated, self.device)
            out["cycle"] = (returned.float() - source_u8.float()).abs().mean().item() / 255
        return out


def judges(cfg: Config, sources: dict[str, Dataset], targets: dict[str, Dataset], names: tuple[str, ...], num: int,
           features: str, device: torch.device, inception_weights: str | None = None,
           unlabeled: str = "off") -> dict[str, DirectionJudge]:
    """A judge per direction of the task: translating the first `num` images of the source domain's `sources`
    entry, judged by the target domain's `targets` entry (its classifier and real features: the run's own data).
    Each dataset's first load covers all its uses in either direction: a domain's rows load once for both."""
    for source, target in (DIRECTIONS[d] for d in directions(cfg)):
        sources[source].plan(num)
        plan_rows(targets[target], num, names)
    return {d: DirectionJudge(sources[DIRECTIONS[d][0]], targets[DIRECTIONS[d][1]], names, num, features, device,
                              cfg.train.seed, inception_weights, unlabeled) for d in directions(cfg)}


def judge_all(found: dict[str, DirectionJudge], translators: dict[str, nn.Module]) -> dict[str, float]:
    """Every direction's numbers, as <direction>_<metric>."""
    results = {}
    for direction, judge in found.items():
        back = translators.get(direction[::-1])
        results.update({f"{direction}_{k}": v for k, v in judge(translators[direction], back).items()})
    return results
