"""A small CNN trained on a prepared labeled dataset: the judge of which class a generated image shows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from gan_dist import storage
from gan_dist.data.shards import NO_LABEL
from gan_dist.errors import UserError
from gan_dist.imaging import to_model_range

WEIGHTS_FILE = "classifier.safetensors"
META_FILE = "classifier.json"  # written last: its presence vouches for the weights beside it
WIDTH = 16  # first layer's channels; enough for ≥95% on the digits, and a step stays milliseconds on a CPU
MAX_CHANNELS = 128
SHIFT = 2  # pixels of random translation: generated digits are rarely centred exactly like the real ones
BATCH_SIZE = 64
LR = 2e-3


class DomainClassifier(nn.Module):
    """Stride-2 convolutions down to 4×4, then one linear layer: float B×C×H×W in [-1, 1] -> B×K logits."""

    def __init__(self, resolution: int, channels: int, num_classes: int):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, got {resolution}")
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        layers: list[nn.Module] = [nn.Conv2d(channels, WIDTH, 3, padding=1), nn.ReLU()]
        size, width = resolution, WIDTH
        while size > 4:
            wider = min(2 * width, MAX_CHANNELS)
            layers += [nn.Conv2d(width, wider, 3, stride=2, padding=1), nn.ReLU()]
            size, width = size // 2, wider
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(width * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class ClassifierMeta:
    """What a saved classifier was trained on, so a cache can tell whether it still fits a dataset."""

    class_names: list[str]
    content_hash: str  # the dataset manifest's: a re-prepared dataset gets a new classifier
    accuracy: float  # held-out accuracy on the real images, reported beside every agreement


def _shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by its own random offset of up to ±SHIFT pixels, edges repeated into the gap."""
    b, _, h, w = x.shape
    padded = F.pad(x, (SHIFT,) * 4, mode="replicate").permute(0, 2, 3, 1)  # B×H'×W'×C: one gather below
    dy, dx = torch.randint(0, 2 * SHIFT + 1, (2, b, 1), generator=generator)
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, *, steps: int, seed: int = 0,
                     holdout: float = 0.1) -> tuple[DomainClassifier, float]:
    """Train on uint8 N×H×W×C images (unlabeled rows skipped) and return the model in eval mode with its accuracy
    on a seeded held-out share. Same inputs and seed, same weights: agreement numbers stay comparable."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    labeled = labels != NO_LABEL
    images, labels = images[labeled], labels[labeled]
    order = np.random.default_rng(seed).permutation(len(images))
    held = max(1, round(len(images) * holdout))
    if len(images) - held < 1:
        raise UserError(f"{len(images)} labeled images are too few to train a classifier; label more images")
    test, train = order[:held], order[held:]
    model = fit_classifier(images[train], labels[train], num_classes, steps=steps, seed=seed)
    accuracy = float((predict(model, images[test]) == labels[test]).mean())
    return model, accuracy


def fit_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, *, steps: int,
                   seed: int = 0) -> DomainClassifier:
    """Train on all of uint8 N×H×W×C `images` (`labels`: int64 class indices) and return the model in eval mode.
    The seed fixes the init and the batch order: same inputs and seed, same weights."""
    x_train, y_train = torch.from_numpy(images), torch.from_numpy(labels)
    with torch.random.fork_rng(devices=[]):  # seeds the weights' init without touching the caller's RNG
        torch.manual_seed(seed)
        model = DomainClassifier(images.shape[1], images.shape[3], num_classes)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    # Decayed to zero: the last steps settle instead of jittering, so a short run ends at its best accuracy.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(x_train), (min(BATCH_SIZE, len(x_train)),), generator=generator)
        x = _shifted(to_model_range(x_train[batch]), generator)
        loss = F.cross_entropy(model(x), y_train[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def predict(model: DomainClassifier, images_u8: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Class indices (int64 N) for uint8 N×H×W×C images, on the model's device."""
    images = torch.as_tensor(images_u8)
    expected = (model.resolution, model.resolution, model.channels)
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"expected uint8 N×{'×'.join(map(str, expected))} images, got {images.dtype} "
                         f"{tuple(images.shape)}")
    device = next(model.parameters()).device
    out = [model(to_model_range(images[start:start + batch_size].to(device))).argmax(1).cpu()
           for start in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.empty(0, np.int64)


def save_classifier(model: DomainClassifier, meta: ClassifierMeta, directory: str) -> None:
    """Weights as safetensors (no pickle), then the JSON that describes them; local path or object storage."""
    if len(meta.class_names) != model.num_classes:
        raise ValueError(f"{len(meta.class_names)} class names for a {model.num_classes}-class model")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    description = {"resolution": model.resolution, "channels": model.channels, "num_classes": model.num_classes,
                   **asdict(meta)}
    with storage.user_errors(directory, "write the classifier to"):
        storage.write_bytes(storage.join(directory, WEIGHTS_FILE), save_safetensors(state))
        storage.write_bytes(storage.join(directory, META_FILE), json.dumps(description, indent=2).encode())


def load_classifier(directory: str) -> tuple[DomainClassifier, ClassifierMeta]:
    """The classifier save_classifier wrote, in eval mode on the CPU; a missing or damaged one is a UserError."""
    with storage.user_errors(directory, "read the classifier at"):
        description = storage.read_bytes(storage.join(directory, META_FILE))
        weights = storage.read_bytes(storage.join(directory, WEIGHTS_FILE))
    try:
        raw = json.loads(description)
        model = DomainClassifier(raw["resolution"], raw["channels"], raw["num_classes"])
        model.load_state_dict(load_safetensors(weights))
        meta = ClassifierMeta(list(raw["class_names"]), raw["content_hash"], float(raw["accuracy"]))
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError):  # bad JSON or fields, mismatched weights
        raise UserError(f"the classifier at {directory} is damaged; delete it so it is trained again") from None
    return model.eval(), meta
