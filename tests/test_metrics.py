"""The metric math of `gan-dist evaluate`: FID and KID through torchmetrics on precomputed features, improved
precision/recall, ProGAN's sliced Wasserstein distance and the near-copy share, each against an independent reference
or a known case."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.spatial.distance
import scipy.stats
import torch
import torch.nn.functional as F

from gan_dist.eval import metrics
from gan_dist.eval.metrics import fid, kid, precision_recall, swd


def gaussian(n: int, d: int = 16, seed: int = 0, shift: float = 0.0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype) + shift


# FID


def scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_on_gaussians_of_different_sizes():
    real = gaussian(2000, seed=0)
    mixing = torch.eye(16) + 0.3 * torch.randn(16, 16, generator=torch.Generator().manual_seed(9))
    fake = gaussian(1500, seed=1) @ mixing + 0.2  # another covariance and mean: every term of FID contributes
    expected = scipy_fid(real.double().numpy(), fake.double().numpy())
    assert expected > 1
    assert fid(real, fake) == pytest.approx(expected, rel=1e-4)


def test_fid_is_zero_for_equal_sets_and_grows_with_the_mean_shift():
    real = gaussian(2000)
    assert abs(fid(real, real)) < 1e-6
    values = [fid(real, real + shift) for shift in (0.25, 0.5, 1.0)]
    assert values == sorted(values) and values[0] > 0
    # same covariance: FID is exactly the squared mean distance, 16 · shift²
    assert values[-1] == pytest.approx(16.0, rel=1e-6)


def test_fid_refuses_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimension"):
        fid(gaussian(10, d=4), gaussian(10, d=5))


# KID


def numpy_kid(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with the kernel (x·y / d + 1)³ on the whole sets (Bińkowski et al. 2018)."""
    m, d = len(real), real.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((real, real), (fake, fake), (real, fake)))
    return float((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean())


def test_kid_on_the_whole_sets_matches_numpy():
    real, fake = gaussian(300, dtype=torch.float64), gaussian(300, seed=1, shift=0.3, dtype=torch.float64)
    mean, std = kid(real, fake, subsets=1, subset_size=300)  # one subset of everything: no randomness left
    assert mean == pytest.approx(numpy_kid(real.numpy(), fake.numpy()), rel=1e-9)
    assert std is None  # no spread to report
    assert kid(real, fake, subsets=100, subset_size=1000) == (mean, None)  # 100 subsets of everything: the same


def test_kid_has_a_spread_only_where_subsets_differ():
    real, fake = gaussian(400, seed=0), gaussian(300, seed=1, shift=0.3)
    _, spread = kid(real, fake, subsets=10, subset_size=300)  # the real subsets differ
    assert spread is not None and spread > 0
    assert kid(real[:300], fake, subsets=10, subset_size=300)[1] is None


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    real = gaussian(1000, seed=0)
    same, _ = kid(real, gaussian(1000, seed=1), subsets=20, subset_size=500)
    shifted, _ = kid(real, gaussian(1000, seed=2, shift=0.3), subsets=20, subset_size=500)
    assert shifted > 0.1
    assert abs(same) < 0.05 * shifted


def test_kid_is_reproducible_per_seed_and_leaves_the_global_rng_alone():
    real, fake = gaussian(400, seed=0), gaussian(300, seed=1, shift=0.2)
    state = torch.get_rng_state()
    first = kid(real, fake, subsets=10, subset_size=100, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert kid(real, fake, subsets=10, subset_size=100, seed=3) == first
    assert kid(real, fake, subsets=10, subset_size=100, seed=4) != first


def test_kid_clamps_the_subset_size_to_the_smaller_set():
    real, fake = gaussian(400, seed=0), gaussian(250, seed=1, shift=0.2)
    assert kid(real, fake, subsets=5) == kid(real, fake, subsets=5, subset_size=250)


# precision / recall


def scipy_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The whole distance matrices at once, float64."""
    real_radii = np.sort(scipy.spatial.distance.cdist(real, real), axis=1)[:, k]
    fake_radii = np.sort(scipy.spatial.distance.cdist(fake, fake), axis=1)[:, k]
    cross = scipy.spatial.distance.cdist(fake, real)
    return float((cross <= real_radii[None, :]).any(1).mean()), float((cross <= fake_radii[:, None]).any(0).mean())


def test_precision_recall_of_identical_sets_is_one():
    real = gaussian(500)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)


def test_precision_recall_of_a_far_shifted_set_is_zero():
    real = gaussian(500)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_fake_on_half_of_the_modes_has_high_precision_and_half_the_recall():
    centres = 20.0 * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    real = gaussian(1000, d=2, seed=0) + centres.repeat(250, 1)
    fake = gaussian(500, d=2, seed=1) + centres[:2].repeat(250, 1)  # fresh samples of two of the four clusters
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9
    assert recall == pytest.approx(0.5, abs=0.15)


@pytest.mark.parametrize("block_size", [7, 64, 10_000])
def test_blocked_precision_recall_equals_the_whole_matrix(block_size):
    real, fake = gaussian(200, d=5, dtype=torch.float64), gaussian(150, d=5, seed=1, shift=0.5, dtype=torch.float64)
    expected = scipy_precision_recall(real.numpy(), fake.numpy(), k=3)
    assert 0.2 < expected[0] < 0.95 and 0.2 < expected[1] < 0.95  # not a trivial all-in or all-out case
    assert precision_recall(real, fake, k=3, block_size=block_size) == pytest.approx(expected, abs=1e-12)


# SWD


def smooth_fields(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """uint8 N×H×W×C images: bicubically upsampled noise plus a little fine grain."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(n, channels, size // 4, size // 4, generator=gen)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.3 * torch.randn(n, channels, size, size, generator=gen)
    return (x * 50 + 128).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def blurred(images: torch.Tensor) -> torch.Tensor:
    x = F.pad(images.permute(0, 3, 1, 2).float(), (1, 1, 1, 1), mode="reflect")
    return F.avg_pool2d(x, 3, stride=1).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


SWD_IMAGES = 64  # 8192 descriptors per level: enough for the same-distribution value to sit well below the others


pytestmark = pytest.mark.usefixtures("one_thread")  # torch's CPU sort, most of SWD's time


@pytest.fixture(scope="module", params=[1, 3], ids=["gray", "rgb"])
def swd_cases(request):
    real = smooth_fields(SWD_IMAGES, channels=request.param, seed=0)
    noise = torch.randint(0, 256, real.shape, generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    fakes = {
        "copy": real.clone(),
        "same distribution": smooth_fields(SWD_IMAGES, channels=request.param, seed=1),
        "blurred": blurred(real),
        "noise": noise,
        "half contrast": (real.float() / 2 + 64).round().to(torch.uint8),
    }
    # 128 directions instead of ProGAN's 512 to save time: their noise is far below that of the patch draws
    return {name: swd(real, fake, dir_repeats=1) for name, fake in fakes.items()}


def test_swd_keys_run_from_the_image_size_down_to_16(swd_cases):
    for result in swd_cases.values():
        assert list(result) == ["swd_32", "swd_16", "swd_mean"]
        assert result["swd_mean"] == pytest.approx((result["swd_32"] + result["swd_16"]) / 2)


def test_swd_of_a_copy_is_zero_and_far_below_blur_and_noise(swd_cases):
    assert all(value == pytest.approx(0.0, abs=1e-9) for value in swd_cases["copy"].values())
    same, blur, noise = swd_cases["same distribution"], swd_cases["blurred"], swd_cases["noise"]
    # blurring removes the finest band; noise changes every level. Another sample of the real distribution differs
    # by sampling noise only (about 2.5-4x less at 32×32 for these sets).
    assert blur["swd_32"] > 2 * same["swd_32"]
    assert noise["swd_32"] > 2 * same["swd_32"]
    assert noise["swd_mean"] > 1.4 * same["swd_mean"]


def test_swd_normalises_each_set_by_its_own_statistics(swd_cases):
    # halving the contrast changes nothing after per-channel normalisation but the rounding to uint8
    same, dimmed = swd_cases["same distribution"], swd_cases["half contrast"]
    assert all(dimmed[key] < 0.25 * same[key] for key in same)


def test_swd_is_deterministic_given_the_seed():
    real, other = smooth_fields(16, seed=0), smooth_fields(16, seed=1)
    first = swd(real, other)
    assert swd(real, other) == first
    assert swd(real, other, seed=1) != first


def test_swd_of_64px_grayscale_sets_of_different_sizes():
    real, fake = smooth_fields(8, size=64, channels=1, seed=0), smooth_fields(6, size=64, channels=1, seed=1)
    result = swd(real, fake, nhoods_per_image=32)
    assert list(result) == ["swd_64", "swd_32", "swd_16", "swd_mean"]
    assert all(np.isfinite(v) and v > 0 for v in result.values())


def test_swd_refuses_images_it_cannot_read():
    images = smooth_fields(2)
    with pytest.raises(ValueError, match="uint8"):
        swd(images.float(), images)
    with pytest.raises(ValueError, match="power-of-two"):
        swd(images[:, :24, :24], images[:, :24, :24])
    with pytest.raises(ValueError, match="differ in shape"):
        swd(images, smooth_fields(2, size=64))


def progan_laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """ProGAN's metrics/sliced_wasserstein.py pyramid (scipy.ndimage, 'mirror' borders), N×C×H×W float32."""
    taps = np.float32([1, 4, 6, 4, 1])
    kernel = (np.outer(taps, taps) / 256)[None, None]

    def down(x):
        return scipy.ndimage.convolve(x, kernel, mode="mirror")[:, :, ::2, ::2]

    def up(x):
        res = np.zeros(x.shape[:2] + (2 * x.shape[2], 2 * x.shape[3]), x.dtype)
        res[:, :, ::2, ::2] = x
        return scipy.ndimage.convolve(res, kernel * 4, mode="mirror")

    pyramid = [images.astype(np.float32)]
    for _ in range(1, levels):
        pyramid.append(down(pyramid[-1]))
        pyramid[-2] -= up(pyramid[-1])
    return pyramid


def test_laplacian_pyramid_matches_progans():
    images = smooth_fields(2, size=64, channels=3)
    x = images.permute(0, 3, 1, 2).float()
    expected = progan_laplacian_pyramid(x.numpy(), levels=3)
    for level, reference in enumerate(expected):
        ours = metrics._laplacian_level(x, level, last=level == 2).numpy()
        np.testing.assert_allclose(ours, reference, atol=1e-3)


@pytest.mark.parametrize("n, m", [(50, 50), (40, 70)])
def test_one_direction_swd_is_the_1d_wasserstein_distance(n, m):
    # in one dimension every unit direction is ±1, which leaves W1 unchanged
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, 1, generator=gen, dtype=torch.float64), 2 * torch.rand(m, 1, generator=gen).double()
    ours = metrics._sliced_wasserstein(a, b, dirs_per_repeat=1, repeats=1, gen=gen)
    assert ours == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy()), rel=1e-12)


# near-copies of training images


def blobs(n: int, seed: int) -> torch.Tensor:
    """n smooth random 16x16 images: a coarse random field upsampled, as uint8 N×H×W×1."""
    coarse = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(coarse, size=16, mode="bilinear") * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def test_near_copies_finds_copies_and_slightly_noisy_copies_but_not_new_images_of_the_distribution():
    train = blobs(600, seed=0)
    assert metrics.near_copies(train, train[:50]) == 1.0
    noise = torch.randn(50, 16, 16, 1, generator=torch.Generator().manual_seed(1)) * 2
    assert metrics.near_copies(train, (train[:50].float() + noise).clamp(0, 255).to(torch.uint8)) == 1.0
    assert metrics.near_copies(train, blobs(200, seed=2)) == 0.0  # held out: near some, close to none alone
    mixed = torch.cat([train[:10], blobs(30, seed=3)])
    assert metrics.near_copies(train, mixed) == pytest.approx(10 / 40)


def test_near_copies_searches_the_training_set_in_blocks_with_the_same_answer():
    train, fake = blobs(300, seed=4), torch.cat([blobs(20, seed=5), blobs(300, seed=4)[:7]])
    assert metrics.near_copies(train, fake, block_size=7) == metrics.near_copies(train, fake) == pytest.approx(7 / 27)
