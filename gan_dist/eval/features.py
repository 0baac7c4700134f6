"""Feature networks for the metrics, behind one interface: uint8 images B×H×W×C in, float features B×D out, and an
`id` that keys cached real features. Two kinds: the standard Inception (FID as everyone reports it; slow on a CPU)
and a per-dataset domain classifier (cheap on a CPU, meaningful for small labeled datasets such as the digits)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gan_dist import storage
from gan_dist.data.placement import Dataset
from gan_dist.errors import UserError
from gan_dist.eval.classifier import (ClassifierMeta, DomainClassifier, load_classifier, save_classifier,
                                     train_classifier)
from gan_dist.imaging import to_model_range

EVAL_DIR = "_eval"  # beside a dataset's shards: its cached classifier and real features
DOMAIN_STEPS = 500
FEATURES = ("domain", "inception")


class DomainFeatures(nn.Module):
    """The dataset classifier's last convolution, averaged over positions, as features (a few hundred numbers:
    Fréchet distances stay cheap), and its class probabilities."""

    def __init__(self, classifier: DomainClassifier, meta: ClassifierMeta):
        super().__init__()
        self.classifier, self.meta = classifier.eval(), meta
        self.conv = classifier.features[:-1]  # without the Flatten
        self.num_features = self.conv[-2].out_channels
        self.id = f"domain{DOMAIN_STEPS}"

    @torch.no_grad()
    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.conv(to_model_range(images_u8)).mean(dim=(2, 3))

    @torch.no_grad()
    def probabilities(self, images_u8: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.classifier(to_model_range(images_u8)), dim=1)


def domain_features(data: Dataset, device: torch.device,
                    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> DomainFeatures:
    """The dataset's classifier: from the cache beside the dataset when it was trained on these shards (the
    manifest's content hash), else trained now on the dataset's labels (all its rows) and cached for next time."""
    manifest = data.manifest
    if not manifest.class_names:
        raise UserError(f"--features domain needs a labeled dataset and {data.uri} has no classes; use --features "
                        f"inception")
    directory = storage.join(data.uri, EVAL_DIR, f"classifier-{manifest.content_hash[:16]}")
    try:
        classifier, meta = load_classifier(directory)
        if meta.content_hash == manifest.content_hash:
            return DomainFeatures(classifier, meta).to(device)
    except UserError:  # not cached yet, or damaged: train it again
        pass
    log(f"evaluate: training the domain classifier on {manifest.count} labeled images ({DOMAIN_STEPS} steps)")
    columns = data.columns()
    classifier, accuracy = train_classifier(columns["image"], columns["label"], len(manifest.class_names),
                                            steps=DOMAIN_STEPS)
    meta = ClassifierMeta(list(manifest.class_names), manifest.content_hash, accuracy)
    try:
        save_classifier(classifier, meta, directory)
    except (UserError, OSError) as exc:  # a read-only dataset: it works, it is just trained again next time
        log(f"warning: the domain classifier could not be cached ({exc})")
    return DomainFeatures(classifier, meta).to(device)
