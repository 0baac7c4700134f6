"""Real-image features, computed once per (dataset content, feature network, number of images) and cached beside
the dataset: a re-prepared dataset has another content hash, so stale features are never reused."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from gan_dist import storage
from gan_dist.data.placement import Dataset
from gan_dist.eval.features import EVAL_DIR
from gan_dist.progress import Progress

EMBED_BATCH = 100


def embed(net: nn.Module, images_u8: np.ndarray | torch.Tensor, device: torch.device,
          progress: Progress | None = None) -> torch.Tensor:
    """Features (float32 N×D, on the CPU) of uint8 N×H×W×C images, a batch at a time on `device`."""
    images = torch.as_tensor(images_u8)
    out = []
    for start in range(0, len(images), EMBED_BATCH):
        out.append(net(images[start:start + EMBED_BATCH].to(device)).float().cpu())
        if progress:
            progress.update(start + len(out[-1]), final=start + EMBED_BATCH >= len(images))
    return torch.cat(out) if out else torch.empty(0, net.num_features)


def real_features(net: nn.Module, data: Dataset, num: int, device: torch.device,
                  log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> torch.Tensor:
    """The first `num` images' features, from the cache or computed now."""
    count = min(num, data.manifest.count)
    uri = storage.join(data.uri, EVAL_DIR, f"features-{net.id}-{data.manifest.content_hash[:16]}-{count}.safetensors")
    try:
        cached = load_safetensors(storage.read_bytes(uri))["features"]
        if cached.shape == (count, net.num_features):
            return cached
    except (FileNotFoundError, SafetensorError, KeyError):  # not cached yet, or a damaged file: computed again
        pass
    images = data.images(count)
    features = embed(net, images, device, Progress(count, label="real features"))
    try:
        storage.write_bytes(uri, save_safetensors({"features": features.contiguous()}))
    except OSError as exc:  # a read-only dataset: it works, it is just computed again next time
        log(f"warning: the real features could not be cached ({' '.join(str(exc).split())[:200]})")
    return features
