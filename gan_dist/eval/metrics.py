"""The numbers `gan-dist evaluate` reports: FID, KID and precision/recall from features (N×D float tensors, real and
fake may differ in N), and from uint8 images (N×H×W×C) ProGAN's sliced Wasserstein distance and the share of
near-copies of training images."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PR_BLOCK_SIZE = 1024  # distance-matrix rows at a time: 1024 × 10k float32 is 40 MB, never the whole N×N

# ProGAN's hyper-parameters (Karras et al. 2018, appendix D; their metrics/sliced_wasserstein.py)
SWD_NHOOD_SIZE = 7
SWD_NHOODS_PER_IMAGE = 128
SWD_DIRS_PER_REPEAT = 128  # × 4 repeats: the paper's 512 projections
SWD_DIR_REPEATS = 4
SWD_MIN_RESOLUTION = 16
SWD_SCALE = 1e3  # ProGAN reports SWD × 10^3
SWD_IMAGE_BATCH = 256  # images per pyramid pass
SWD_DIR_CHUNK = 32  # directions projected at a time: 1.28M descriptors × 32 float32 is 164 MB
SWD_MIN_STD = 1e-8  # a constant level (e.g. collapsed, flat fakes) normalises to zeros instead of NaN
# Carlini et al. 2023 ("Extracting training data from diffusion models"): copied when the nearest training image is
# closer than 1/3 of alpha = 0.5 times the mean distance to the 50 nearest.
COPY_NEIGHBOURS = 50
COPY_RATIO = 0.5 / 3
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


class _Precomputed(nn.Module):
    """The torchmetrics "feature extractor" for features computed upstream: hands them through unchanged.
    `num_features` spares FID its probe with a dummy uint8 image."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def fid(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the real and fake features (Heusel et al. 2017): squared mean
    distance plus a covariance term. 0 for identical statistics; lower is better. Computed in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # seconds to import: only where FID is computed

    _check_features(real, fake, min_samples=2)
    # sync_on_compute=False: a process group that happens to be up must not merge another rank's features into ours
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), sync_on_compute=False).to(real.device)
    metric.update(real.double(), real=True)  # float64 features: compute() returns in the features' dtype
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float | None]:
    """Kernel distance (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
    (x·y / D + 1)³, averaged over `subsets` random subsets; returns (mean, std over subsets). Unbiased, so about 0
    (possibly slightly negative) for two samples of one distribution; lower is better. `subset_size` is clamped to
    the smaller of the two sample counts. The subset draws depend only on `seed`. Computed in the features' dtype.
    Where both sets are no larger than a subset, every subset is both whole sets: one is computed, std is None."""
    from torchmetrics.image.kid import KernelInceptionDistance  # seconds to import: only where KID is computed

    _check_features(real, fake, min_samples=2)
    size = min(subset_size, real.shape[0], fake.shape[0])
    whole = size == real.shape[0] == fake.shape[0]  # then a spread over subsets would only be rounding noise
    subsets = 1 if whole else subsets
    with warnings.catch_warnings():  # it warns that it keeps all features: they are already in memory here
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size,
                                         sync_on_compute=False).to(real.device)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    # compute() draws its subsets with torch.randperm on the global CPU generator: seed it and restore it after
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), None if whole else float(std)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, block_size: int = PR_BLOCK_SIZE) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019). Each sample's k-NN ball reaches its k-th nearest
    neighbour in its own set; precision is the share of fake samples inside at least one real ball (fidelity),
    recall the share of real samples inside at least one fake ball (coverage). Both in [0, 1]; higher is better.
    Distances are computed `block_size` rows at a time."""
    _check_features(real, fake, min_samples=k + 1)
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    real_radii, fake_radii = _knn_radii(real, k, block_size), _knn_radii(fake, k, block_size)
    fake_inside = []
    real_inside = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for block, radii in zip(fake.split(block_size), fake_radii.split(block_size)):
        dist = torch.cdist(block, real)  # one pass over fake×real serves both directions
        fake_inside.append((dist <= real_radii).any(dim=1))
        real_inside |= (dist <= radii[:, None]).any(dim=0)
    return torch.cat(fake_inside).double().mean().item(), real_inside.double().mean().item()


def swd(real_u8: Tensor, fake_u8: Tensor, seed: int = 0, nhoods_per_image: int = SWD_NHOODS_PER_IMAGE,
        dirs_per_repeat: int = SWD_DIRS_PER_REPEAT, dir_repeats: int = SWD_DIR_REPEATS) -> dict[str, float]:
    """ProGAN's sliced Wasserstein distance (Karras et al. 2018) × 10³, per level of a Laplacian pyramid: random
    7×7 neighbourhoods of each level, normalised per channel by their own set's mean and std, compared along random
    directions. Keys `swd_<resolution>` from the image size down to 16, and `swd_mean` over them. Fine levels
    measure detail, coarse ones large structure; 0 for identical image sets, lower is better. Deterministic given
    `seed`; images N×H×W×C uint8, C 1 or 3, H = W a power of two ≥ 16, N may differ between the two sets."""
    _check_images(real_u8, fake_u8)
    resolutions = []
    res = real_u8.shape[1]
    while res >= SWD_MIN_RESOLUTION:
        resolutions.append(res)
        res //= 2
    # Both sets draw their patch positions from the same seed: equal sets give exactly 0, and two sets of the same
    # size are compared at the same places (common random numbers), which only lowers the estimate's variance.
    real_gen, fake_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    dir_gen = torch.Generator().manual_seed(seed)
    result = {}
    for level, res in enumerate(resolutions):  # one level at a time: only its descriptors are held in memory
        last = level == len(resolutions) - 1
        desc_real = _descriptors(real_u8, level, last, nhoods_per_image, real_gen)
        desc_fake = _descriptors(fake_u8, level, last, nhoods_per_image, fake_gen)
        result[f"swd_{res}"] = SWD_SCALE * _sliced_wasserstein(desc_real, desc_fake, dirs_per_repeat, dir_repeats,
                                                               dir_gen)
    result["swd_mean"] = sum(result.values()) / len(resolutions)
    return result


def near_copies(train_u8: Tensor, fake_u8: Tensor, neighbours: int = COPY_NEIGHBOURS,
                block_size: int = PR_BLOCK_SIZE) -> float:
    """The share of generated images that are near-copies of a training image, by Carlini et al. 2023's relative
    distance: the nearest training image is closer than COPY_RATIO of the mean distance to the `neighbours`
    nearest (pixel L2). An image near one training image and far from the rest was memorised; one in a dense region
    of the data was not, however close. Images N×H×W×C uint8; lower is better, 0 for a generator that copies none."""
    if train_u8.shape[1:] != fake_u8.shape[1:] or not len(train_u8) or not len(fake_u8):
        raise ValueError(f"training and generated images differ in shape or are empty: {tuple(train_u8.shape)} vs "
                         f"{tuple(fake_u8.shape)}")
    k = min(neighbours, len(train_u8))
    fake = fake_u8.flatten(1).float() / 255
    nearest = torch.full((len(fake), k), float("inf"))
    for block in train_u8.split(block_size):  # a block of the training set against every fake image at a time
        dist = torch.cdist(fake, block.flatten(1).float() / 255)
        nearest = torch.cat([nearest, dist], dim=1).topk(k, dim=1, largest=False).values
    copied = nearest[:, 0] < COPY_RATIO * nearest.mean(dim=1)
    return copied.double().mean().item()


def _check_features(real: Tensor, fake: Tensor, min_samples: int) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"{name} features must be a float N×D tensor, got {x.dtype} of shape {tuple(x.shape)}")
        if x.shape[0] < min_samples:
            raise ValueError(f"{name} features have {x.shape[0]} samples; this metric needs at least {min_samples}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")


def _knn_radii(x: Tensor, k: int, block_size: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row: the (k+1)-th smallest counts the row itself."""
    return torch.cat([torch.cdist(block, x).kthvalue(k + 1, dim=1).values for block in x.split(block_size)])


def _check_images(real: Tensor, fake: Tensor) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if x.ndim != 4 or x.dtype != torch.uint8 or x.shape[3] not in (1, 3):
            raise ValueError(f"{name} images must be uint8 N×H×W×C with C 1 or 3, got {x.dtype} {tuple(x.shape)}")
        h, w = x.shape[1:3]
        if h != w or h < SWD_MIN_RESOLUTION or h & (h - 1):
            raise ValueError(f"{name} images must be square with a power-of-two side ≥ {SWD_MIN_RESOLUTION}, "
                             f"got {h}×{w}")
        if x.shape[0] < 1:
            raise ValueError(f"{name} images are empty")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake images differ in shape: {tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}")


def _blur(x: Tensor, taps: Tensor) -> Tensor:
    """The separable 5×5 filter taps⊗taps per channel, mirrored at the borders (scipy.ndimage's 'mirror', which
    ProGAN uses, is torch's 'reflect')."""
    n, c, h, w = x.shape
    kernel = taps.to(x)
    y = F.pad(x.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    y = F.conv2d(F.conv2d(y, kernel.view(1, 1, 1, 5)), kernel.view(1, 1, 5, 1))
    return y.reshape(n, c, h, w)


def _pyr_down(x: Tensor) -> Tensor:
    return _blur(x, _BINOMIAL)[:, :, ::2, ::2]


def _pyr_up(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, 2 * _BINOMIAL)  # 4× the 2-D filter: three in four of the samples it averages are zeros


def _laplacian_level(x: Tensor, level: int, last: bool) -> Tensor:
    """Level `level` of x's Laplacian pyramid: the band-pass residual, or the blurred image itself at the last."""
    for _ in range(level):
        x = _pyr_down(x)
    return x if last else x - _pyr_up(_pyr_down(x))


def _descriptors(images: Tensor, level: int, last: bool, per_image: int, gen: torch.Generator) -> Tensor:
    """`per_image` random 7×7×C neighbourhoods of each image's pyramid level, normalised per channel by the mean
    and std over all of them, flattened: (N·per_image)×(C·49)."""
    n, size, _, channels = images.shape
    size >>= level
    corners = torch.randint(0, size - SWD_NHOOD_SIZE + 1, (n, per_image, 2), generator=gen).to(images.device)
    offsets = torch.arange(SWD_NHOOD_SIZE, device=images.device)
    batches = []
    for start in range(0, n, SWD_IMAGE_BATCH):
        x = images[start:start + SWD_IMAGE_BATCH].permute(0, 3, 1, 2).float()
        band = _laplacian_level(x, level, last).permute(0, 2, 3, 1)  # B×S×S×C
        c = corners[start:start + SWD_IMAGE_BATCH]
        rows = c[:, :, 0, None, None] + offsets[:, None]  # B×P×7×1
        cols = c[:, :, 1, None, None] + offsets  # B×P×1×7
        batch = torch.arange(band.shape[0], device=band.device)[:, None, None, None]
        batches.append(band[batch, rows, cols].reshape(-1, SWD_NHOOD_SIZE, SWD_NHOOD_SIZE, channels))
    desc = torch.cat(batches)
    desc = (desc - desc.mean(dim=(0, 1, 2))) / desc.std(dim=(0, 1, 2), unbiased=False).clamp_min(SWD_MIN_STD)
    return desc.permute(0, 3, 1, 2).reshape(desc.shape[0], -1)  # channel-major, as ProGAN's descriptors


def _sliced_wasserstein(a: Tensor, b: Tensor, dirs_per_repeat: int, repeats: int, gen: torch.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the projections of a and b."""
    idx_a, idx_b, weights = _quantile_pairs(a.shape[0], b.shape[0], a.device)
    weights = weights.to(a.dtype)
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(dirs_per_repeat, a.shape[1], generator=gen).to(a)
        dirs /= dirs.norm(dim=1, keepdim=True)
        for chunk in dirs.split(SWD_DIR_CHUNK):
            # directions × samples: sorting along the contiguous dimension is the faster one on CPU
            proj_a, proj_b = (chunk @ a.T).sort(dim=1).values, (chunk @ b.T).sort(dim=1).values
            total += (weights * (proj_a[:, idx_a] - proj_b[:, idx_b]).abs()).sum().item()
    return total / (repeats * dirs_per_repeat)


def _quantile_pairs(n: int, m: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """W1 between sorted samples of sizes n and m is Σ weight·|a[idx_a] − b[idx_b]| over the intervals on which
    both empirical quantile functions are constant. For n = m that is the mean of |a_i − b_i|, ProGAN's formula.
    The interval ends t are kept as integers t·n·m so that shared ends merge exactly."""
    ends = torch.unique(torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]))
    weights = torch.diff(ends, prepend=ends.new_zeros(1)).double() / (n * m)
    idx_a = (ends + m - 1) // m - 1  # ceil(t·n) − 1: the sample a's quantile function takes on (previous end, t]
    idx_b = (ends + n - 1) // n - 1
    return idx_a.to(device), idx_b.to(device), weights.to(device)
